"""Render the Triton model repository for a target from `templates/` (one folder per Triton model).

    python model_repository/build.py --target cpu --artifacts build/tiny/onnx --out build/repository

`config.pbtxt` files are templates with `${name}` fields filled here, so sizes are set in one
place; `1/model.py` files are copied as they are. The rendered tree is the serving graph:
preprocess → vision_encoder → language_model → reward_head, chained by the `hpsv3` ensemble.
"""

from __future__ import annotations

import argparse
import shutil
import string
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
MODELS = ("preprocess", "vision_encoder", "language_model", "reward_head", "hpsv3")
TARGETS = ("cpu",)  # "gpu" (TensorRT engines + the vLLM tower) arrives with issues #4 and #8


@dataclass
class RepositorySettings:
    """Every value the templates use."""

    artifacts: str
    base: str
    hidden_size: int
    max_batch_size: int = 16
    preprocess_instances: int = 2
    vision_instances: int = 1
    queue_delay_us: int = 2000
    threads: int = 0  # ONNX Runtime intra-op threads per session (0: all cores; idle threads do not spin)


def render(target: str, settings: RepositorySettings, out: Path) -> Path:
    """Write the repository for `target` into `out` (replaced as a whole); returns `out`."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not available yet; choose from {TARGETS}")
    values = {key: str(value) for key, value in asdict(settings).items()}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for model in MODELS:
        source, dest = TEMPLATES / model, staging / model
        dest.mkdir(parents=True)
        config = string.Template((source / "config.pbtxt").read_text(encoding="utf-8"))
        (dest / "config.pbtxt").write_text(config.substitute(values), encoding="utf-8")
        (dest / "1").mkdir()
        if (source / "1" / "model.py").is_file():
            shutil.copy(source / "1" / "model.py", dest / "1" / "model.py")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def settings_for(artifacts: Path, **overrides: int) -> RepositorySettings:
    """Settings for an export folder: paths and hidden size come from its manifest."""
    from hpsv3_serve.engines.onnx_engine import BASE_DIR, read_manifest

    artifacts = artifacts.resolve()
    manifest = read_manifest(artifacts)
    return RepositorySettings(
        artifacts=str(artifacts), base=str(artifacts / BASE_DIR), hidden_size=manifest["hidden_size"], **overrides
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="deployment target")
    parser.add_argument("--artifacts", type=Path, required=True, help="folder written by `hpsv3 export`")
    parser.add_argument("--out", type=Path, required=True, help="repository folder to (re)write")
    parser.add_argument("--max-batch-size", type=int, default=16, help="dynamic batching limit of every model")
    parser.add_argument("--preprocess-instances", type=int, default=2, help="CPU instances decoding images")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per session (0: all cores)")
    args = parser.parse_args(argv)
    settings = settings_for(
        args.artifacts,
        max_batch_size=args.max_batch_size,
        preprocess_instances=args.preprocess_instances,
        threads=args.threads,
    )
    print(f"rendered {args.target} repository in {render(args.target, settings, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
