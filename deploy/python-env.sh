# Sourced by deploy/quickstart.sh and .ci/run: which Python to install into.
#
# Debian's own python3 is "externally managed" (PEP 668): it refuses `pip install` outside a
# virtual environment. For such an interpreter, not itself running in a virtual environment,
# the checkout gets one in ./.venv; any other Python >= 3.11 (pyenv, a venv, a container's) is
# used as it is.
#
#   python_check PYTHON   fail with a message unless PYTHON runs and is 3.11 or newer
#   python_managed PYTHON true when PYTHON is externally managed and not in a virtual environment
#   python_venv PYTHON    create ./.venv with PYTHON unless there is one; print its python

python_check() {
  if ! "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "$(basename "$0"): $1 is missing or older than Python 3.11 (set PYTHON=...)" >&2
    return 1
  fi
}

python_managed() {
  "$1" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(marker)))'
}

python_venv() {
  [ -x .venv/bin/python ] || "$1" -m venv .venv >&2
  echo .venv/bin/python
}
