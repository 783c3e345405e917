#!/usr/bin/env bash
# Create .venv-client: what an RL trainer's environment has for the client, on numpy 2 (the main venv keeps numpy 1
# for the Triton stub): numpy>=2, Pillow, tokenizers, tritonclient[grpc], and this package with --no-deps (no torch,
# no transformers). tests/test_client_numpy2.py scores a served model from it (make test).
#   bash scripts/setup_client_venv.sh            # idempotent; skips when .venv-client/.installed exists
#   FORCE=1 bash scripts/setup_client_venv.sh    # redo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIENT_VENV:-$ROOT/.venv-client}"
if [[ -f "$VENV/.installed" && -z "${FORCE:-}" ]]; then
    echo "[setup_client_venv] $VENV is already set up; FORCE=1 to redo"
    exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "numpy>=2,<3" "pillow==13.0.0" "tokenizers>=0.22" "tritonclient[grpc]>=2.50" pytest
"${PIP[@]}" install --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import numpy, hpsv3_client; print('[setup_client_venv] hpsv3_client on numpy', numpy.__version__)"
date -u +%FT%TZ >"$VENV/.installed"
