#!/usr/bin/env bash
# Install the Debian packages of deploy/debian-packages.txt (plus any named as arguments) on
# Debian 12, as root, non-interactively and without starting any system service: for the
# install, /usr/sbin/policy-rc.d answers 101 ("action forbidden") if there was none, and it is
# removed afterwards only if this script created it.
#
#   usage: deploy/install-packages.sh [--tests] [EXTRA-PACKAGE ...]
#   --tests also installs deploy/debian-packages-tests.txt (what the test suite needs).
#   used by: deploy/quickstart.sh, .ci/run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-packages.sh: run as root (it uses apt-get install)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

lists=("$here/debian-packages.txt")
if [ "${1:-}" = "--tests" ]; then
  lists+=("$here/debian-packages-tests.txt")
  shift
fi
mapfile -t packages < <(cat "${lists[@]}" | grep -vE '^\s*(#|$)' | tr -s ' \t' '\n')
packages+=("$@")
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
