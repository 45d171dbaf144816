#!/usr/bin/env bash
# Install what the tests need, lint, then run the test suite (default: unit + integration).
# Works on a fresh Debian machine as root (PEP 668: nothing is pip-installed into the system
# Python; the tests run from a virtual environment, .venv, created here if missing) and with
# any other Python >= 3.11. Extra arguments go to pytest: ./test.sh tests/unit -q
set -euo pipefail
cd "$(dirname "$0")"
venv="${ECOSCALE_VENV:-.venv}"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
apt_install() {
  echo "test.sh: installing Debian packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
if ((${#need[@]})); then
  apt_install "${need[@]}"
fi

if [[ ! -x "$venv/bin/python" ]]; then
  # --system-site-packages: what the system Python already has (apt's python3-numpy, ...)
  # is reused; pip installs the rest into the venv only.
  if ! python3 -m venv --system-site-packages "$venv" 2>/dev/null; then
    rm -rf "$venv"   # Debian without python3-venv leaves a venv without pip behind
    command -v apt-get >/dev/null 2>&1 || {
      echo "test.sh: 'python3 -m venv' failed; install your Python's venv module" >&2; exit 1; }
    apt_install python3-venv
    python3 -m venv --system-site-packages "$venv"
  fi
  echo "test.sh: created the virtual environment $venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
# integration tests start `ecoscale` and `python3 -m ecoscale`: the venv's come first
export PATH="$PWD/$venv/bin:$PATH"
python3 -m ruff check .
# the layer graph of pyproject.toml [tool.importlinter] (README: "Layout")
lint-imports --no-cache
# pyproject's testpaths hold the unit tests alone (plain `pytest`); without paths in the
# arguments this runs every test: unit and integration. --durations: the 20 slowest tests
# are listed at the end, to see where the suite's time goes (its target: under 60 minutes)
exec python3 -m pytest --durations=20 -o testpaths="tests/unit tests/integration" "$@"
