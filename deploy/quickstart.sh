#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root: install the Debian packages the connector
# and its demo need, install the connector from this checkout, then run `connector demo`
# (a sample directory, a KDC, the reference hub and the connector, all on loopback; Ctrl-C
# stops everything). The first run builds python-ldap and gssapi: a few minutes.
#
#   usage: deploy/quickstart.sh [--dir DIR] [--port PORT] [--hub-port PORT] [--no-kerberos]
#   Python: $PYTHON, else python3. Debian's own python3 refuses system-wide pip installs
#   (PEP 668), so for it the connector goes into a virtual environment in ./.venv
#   (deploy/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/python-env.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart.sh: run as root (it installs Debian packages), or install them yourself" >&2
  echo "  (deploy/debian-packages.txt), pip install -e ., then run: connector demo" >&2
  exit 1
fi

python=${PYTHON:-python3}
python_check "$python"
extra=()
if python_managed "$python"; then
  extra=(python3-venv python3-pip)
fi

echo "quickstart: installing Debian packages (deploy/debian-packages.txt) ..."
deploy/install-packages.sh "${extra[@]}"

if [ ${#extra[@]} -gt 0 ]; then
  python=$(python_venv "$python")
  echo "quickstart: using the virtual environment .venv (activate it: . .venv/bin/activate)"
fi
echo "quickstart: installing the connector (pip install -e .) ..."
"$python" -m pip install -q --disable-pip-version-check -e .

exec "$python" -m connector.cli demo "$@"
