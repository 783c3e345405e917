#!/usr/bin/env bash
# Triton's perf_analyzer on a CPU-only Linux x86-64 machine, without root or the NGC SDK image.
#
# The binary ships in the tritonclient 2.50.0 wheel (data/bin/perf_analyzer; later wheels dropped it). It links
# libb64.so.0d (Debian package libb64-0d) and libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12; loaded, never
# used for gRPC to a CPU server). This script unpacks the three into DIR (default build/perf_analyzer) and
# writes DIR/bin/perf_analyzer, a wrapper that sets LD_LIBRARY_PATH. Then:
#   export PATH="$PWD/build/perf_analyzer/bin:$PATH"
#   python benchmarks/run.py --endpoint localhost:8001 latency --load-generator perf_analyzer
set -euo pipefail

DIR=$(realpath -m "${1:-build/perf_analyzer}")
PY=${PYTHON:-python3}
TRITONCLIENT_WHEEL=tritonclient==2.50.0
CUDART_WHEEL="nvidia-cuda-runtime-cu12>=12.1,<13"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DIR/bin" "$DIR/libexec" "$DIR/lib"

echo "perf_analyzer: fetching $TRITONCLIENT_WHEEL, $CUDART_WHEEL and libb64-0d into $DIR"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
  --python-version 3.11 "$TRITONCLIENT_WHEEL" -d "$work/tc"
"$PY" -m zipfile -e "$work"/tc/tritonclient-*.whl "$work/tc/x"
install -m 755 "$work"/tc/x/tritonclient-*.data/data/bin/perf_analyzer "$DIR/libexec/perf_analyzer"

"$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  --python-version 3.11 "$CUDART_WHEEL" -d "$work/cudart"
"$PY" -m zipfile -e "$work"/cudart/nvidia_cuda_runtime_cu12-*.whl "$work/cudart/x"
cp "$work"/cudart/x/nvidia/cuda_runtime/lib/libcudart.so.12 "$DIR/lib/"

if [ -e /usr/lib/x86_64-linux-gnu/libb64.so.0d ]; then
  cp /usr/lib/x86_64-linux-gnu/libb64.so.0d "$DIR/lib/"
else
  (cd "$work" && apt-get download libb64-0d >/dev/null 2>&1) || {
    echo "perf_analyzer: could not download the Debian package libb64-0d (apt-get download libb64-0d);" \
      "install it (apt-get install libb64-0d) and rerun" >&2
    exit 1
  }
  dpkg-deb -x "$work"/libb64-0d_*.deb "$work/b64"
  cp "$work"/b64/usr/lib/x86_64-linux-gnu/libb64.so.0d "$DIR/lib/"
fi

cat > "$DIR/bin/perf_analyzer" <<WRAPPER
#!/usr/bin/env bash
LD_LIBRARY_PATH="$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DIR/libexec/perf_analyzer" "\$@"
WRAPPER
chmod 755 "$DIR/bin/perf_analyzer"
"$DIR/bin/perf_analyzer" --version >/dev/null 2>&1 || "$DIR/bin/perf_analyzer" --help >/dev/null
echo "perf_analyzer: ready at $DIR/bin/perf_analyzer"
