#!/usr/bin/env bash
# The GPU benchmark in one command, for a lent GPU machine (see docs/PERFORMANCE.md, "GPU benchmark").
#
#   bash benchmarks/gpu/run.sh [gpu_bench.py options]      e.g. --no-compile, --budget 300, --self-check
#
# Needs python3 with torch (CUDA), numpy, Pillow, tokenizers and safetensors; no network, nothing installed
# from an index. Wheels in $WHEELS (default .whl/, filled by fetch_wheels.sh and carried: transformers 5.24,
# the version the project is tested with, and regex) are installed into a temporary folder first.
# Results go to $OUT (the device tool's folder) or build/gpu_bench: gpu_bench.json (rewritten after every
# phase), gpu_bench.txt, log.txt, nvidia-smi.txt.
# The Python side stops its phases at --budget seconds (default 400); HARD_LIMIT_S (default 450) kills it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$repo/build/gpu_bench}"
python="${PYTHON:-python3}"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
mkdir -p "$out"
wheels="${WHEELS:-$repo/.whl}"
if compgen -G "$wheels/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl ||
        echo "warning: the wheels in $wheels did not install; using $python's own packages" >&2
fi
ln -s "$repo/benchmarks" "$site/hpsv3_benchmarks"  # the package name pyproject.toml maps benchmarks/ to
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HPSV3_COMMIT="${HPSV3_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
{ nvidia-smi || echo "no nvidia-smi"; } >"$out/nvidia-smi.txt" 2>&1
timeout -k 10 "${HARD_LIMIT_S:-450}" "$python" -m hpsv3_benchmarks.gpu --out "$out" "$@" 2>&1 | tee "$out/log.txt"
