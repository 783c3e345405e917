#!/usr/bin/env bash
# Download the wheels that run.sh installs on the lent GPU machine (it has no network) into .whl/
# (git-ignored; name it in the device tool's `carry`). The machine's python3 is 3.12 with transformers 5.17;
# the project is tested with transformers 5.24, which needs a newer `regex` than images may hold.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$repo/.whl" transformers==5.24.0 regex==2026.11.19
ls -la "$repo/.whl"
