#!/usr/bin/env bash
# Install what the tests need, lint, then run the whole test suite (unit + integration).
# Works on a fresh Debian machine as root; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
  echo "test.sh: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
python3 -m ruff check .
exec python3 -m pytest "$@"
