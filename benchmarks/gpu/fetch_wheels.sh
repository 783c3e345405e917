#!/usr/bin/env bash
# Download what run.sh installs on the lent GPU machine (it has no network), for Python 3.12 on x86-64.
#
#   bash benchmarks/gpu/fetch_wheels.sh              .whl/: transformers 5.24 and regex (~14 MB)
#   bash benchmarks/gpu/fetch_wheels.sh --endpoint   also .whl-endpoint/ (~46 MB) for `run.sh --endpoint`
#
# Both folders are git-ignored: name them in the device tool's `carry`. The machine's python3 is 3.12 with
# transformers 5.17; the project is tested with 5.24, which needs a newer `regex` than images may hold.
# The endpoint adds what the served check needs beside the machine's packages: numpy 1.26 (the Python
# backend's stub is built against numpy 1.x; the machine has 2.x), tritonclient with python-rapidjson and
# protobuf 6, and tritonserver.tar.xz: the nvidia-pytriton wheel trimmed to the server, the Python backend,
# the stub for 3.12 and the shared libraries they load (55 MB as a wheel, 26 MB so), to fit the 64 MiB carry.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
download() {  # folder, requirements...
    local folder="$1"
    shift
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$folder" "$@"
}
download "$repo/.whl" transformers==5.24.0 regex==2026.11.19
ls -la "$repo/.whl"
[[ "${1:-}" == "--endpoint" ]] || exit 0

endpoint="$repo/.whl-endpoint"
mkdir -p "$endpoint"
download "$endpoint" numpy==1.26.4 tritonclient==2.73.0 python-rapidjson==1.25 protobuf==6.33.6
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
download "$scratch" nvidia-pytriton==0.7.0
# The server, the Python backend, the 3.12 stub and every bundled library but the Python 3.13 one.
"$python" -m zipfile -e "$scratch"/nvidia_pytriton-*.whl "$scratch/wheel"
(
    cd "$scratch/wheel"
    find nvidia_pytriton.libs -name 'libpython3*' -delete
    tar cf - pytriton/__init__.py pytriton/tritonserver/bin pytriton/tritonserver/backends/python \
        pytriton/tritonserver/caches pytriton/tritonserver/python_backend_stubs/3.12 nvidia_pytriton.libs |
        xz -9 -T0 >"$endpoint/tritonserver.tar.xz.partial"
)
mv "$endpoint/tritonserver.tar.xz.partial" "$endpoint/tritonserver.tar.xz"
ls -la "$endpoint"
du -cb "$repo/.whl" "$endpoint" | tail -1 | awk '{printf "carried: %.1f MiB of the 64 MiB limit (the checkout adds ~3 MiB)\n", $1 / 1048576}'
