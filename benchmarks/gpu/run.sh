#!/usr/bin/env bash
# The GPU benchmark in one command, for a lent GPU machine (see docs/PERFORMANCE.md, "GPU benchmark").
#
#   bash benchmarks/gpu/run.sh [gpu_bench.py options]      e.g. --no-compile, --budget 300, --self-check
#   bash benchmarks/gpu/run.sh --endpoint [endpoint.py options]   the served endpoint (second call)
#
# Needs python3 with torch (CUDA), numpy, Pillow, tokenizers and safetensors; no network, nothing installed
# from an index. Wheels in $WHEELS (default .whl/, filled by fetch_wheels.sh and carried: transformers 5.24,
# the version the project is tested with, and regex) are installed into a temporary folder first.
# Results go to $OUT (the device tool's folder) or build/gpu_bench: gpu_bench.json (rewritten after every
# phase), gpu_bench.txt, log.txt, nvidia-smi.txt.
# The Python side stops its phases at --budget seconds (default 400); HARD_LIMIT_S (default 450) kills it.
#
# --endpoint serves the GPU target (build.py --target gpu --engine torch) with the real tritonserver and
# measures it over gRPC (endpoint.json, endpoint.txt, tritonserver.log). The Python backend's stub embeds
# the Python it finds on PATH and ignores PYTHONPATH, and it needs numpy 1.x: so this makes a virtual
# environment whose own site-packages hold the carried $ENDPOINT_WHEELS (default .whl-endpoint/: numpy 1.26,
# tritonclient, tritonserver.tar.xz; `fetch_wheels.sh --endpoint`) and the checkout's packages, in front
# of the machine's packages.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$repo/build/gpu_bench}"
python="${PYTHON:-python3}"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
mkdir -p "$out"
module=hpsv3_benchmarks.gpu
if [[ "${1:-}" == "--endpoint" ]]; then
    shift
    module=hpsv3_benchmarks.gpu.endpoint
fi
install() {  # target folder, wheel folder
    if compgen -G "$2/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$1" "$2"/*.whl ||
            echo "warning: the wheels in $2 did not install; using $python's own packages" >&2
    fi
}
{ nvidia-smi || echo "no nvidia-smi"; } >"$out/nvidia-smi.txt" 2>&1
export HPSV3_COMMIT="${HPSV3_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export PYTHONUNBUFFERED=1
if [[ "$module" == *endpoint ]]; then
    "$python" -m venv --without-pip "$site/venv"
    runner="$site/venv/bin/python"
    venv_site="$("$runner" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    install "$venv_site" "${WHEELS:-$repo/.whl}"
    install "$venv_site" "${ENDPOINT_WHEELS:-$repo/.whl-endpoint}"
    bundle="${ENDPOINT_WHEELS:-$repo/.whl-endpoint}/tritonserver.tar.xz"
    [[ -f "$bundle" ]] && tar xJf "$bundle" -C "$venv_site"
    mkdir "$site/src"  # the checkout's packages under the names pyproject.toml gives them
    for pair in hpsv3_serve:hpsv3_serve hpsv3_benchmarks:benchmarks hpsv3_repository:model_repository \
        hpsv3_client:client hpsv3_export:export; do
        ln -s "$repo/${pair#*:}" "$site/src/${pair%%:*}"
    done
    echo "$site/src" >"$venv_site/hpsv3_source.pth"
    "$python" -c 'import site; print("\n".join(f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()))' \
        >"$venv_site/zz_machine.pth"  # after this venv's own packages, so the carried numpy 1.26 comes first
else
    runner="$python"
    install "$site" "${WHEELS:-$repo/.whl}"
    ln -s "$repo/benchmarks" "$site/hpsv3_benchmarks"  # the package name pyproject.toml maps benchmarks/ to
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
timeout -k 10 "${HARD_LIMIT_S:-450}" "$runner" -m "$module" --out "$out" "$@" 2>&1 | tee "$out/log.txt"
