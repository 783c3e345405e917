"""Timing worker for the OFFICIAL HPSv3 inferencer; runs inside the official venv (see `make golden`).

    .venv-official/bin/python benchmarks/official_inferencer.py --tiny build/tiny

Loads `HPSv3RewardInferencer` exactly as tests/golden/make_golden.py does (a throwaway copy of the tiny
base with random weights, then a strict load of the checkpoint), prints one JSON line
`{"ready": true, "versions": {...}}`, then answers JSON requests read line by line from stdin:

    {"images": [paths], "prompts": [texts], "batch_size": 8, "count": 64}

by calling `inferencer.reward(paths, prompts)` (under torch.no_grad) on consecutive chunks of
`batch_size` pairs, cycling through the images until `count` pairs are scored, and answering
`{"batch_size": 8, "images": 64, "seconds": ..., "images_per_s": ...}`. Anything else the official
code prints goes to stderr. End of stdin ends the worker. Driven by `hpsv3 bench throughput`
(benchmarks/throughput.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GOLDEN_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "make_golden.py"


def load_golden_module():
    """tests/golden/make_golden.py as a module: its `official_base` and `official_config`."""
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_inferencer(checkpoint: Path, base: Path) -> tuple[object, dict]:
    """The official `HPSv3RewardInferencer` on the CPU, loaded as make_golden.py loads it, and the versions it runs
    on (also used by benchmarks/reward_server/app.py)."""
    golden = load_golden_module()
    import torch
    import transformers
    from hpsv3.inference import HPSv3RewardInferencer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        official = golden.official_base(base, tmp)
        inferencer = HPSv3RewardInferencer(
            config_path=str(golden.official_config(official, tmp)), checkpoint_path=str(checkpoint), device="cpu"
        )
    versions = {
        "hpsv3": "1.0.0",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }
    return inferencer, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, help="folder written by `hpsv3 make-tiny` (checkpoint + base/)")
    parser.add_argument("--checkpoint", type=Path, help="official .safetensors (default: TINY/HPSv3-tiny.safetensors)")
    parser.add_argument("--base", type=Path, help="Qwen2-VL base folder (default: TINY/base)")
    args = parser.parse_args()
    if args.tiny is None and (args.checkpoint is None or args.base is None):
        parser.error("pass --tiny, or both --checkpoint and --base")
    checkpoint = args.checkpoint or args.tiny / "HPSv3-tiny.safetensors"
    base = args.base or args.tiny / "base"

    protocol = os.fdopen(os.dup(1), "w", buffering=1)  # answers only; whatever else prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch

    started = time.perf_counter()
    inferencer, versions = load_inferencer(checkpoint, base)
    ready = {"ready": True, "load_s": round(time.perf_counter() - started, 2), "versions": versions}
    protocol.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        images, prompts = request["images"], request["prompts"]
        batch_size, count = int(request["batch_size"]), int(request["count"])
        order = [i % len(images) for i in range(count)]
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, count, batch_size):
                chunk = order[start : start + batch_size]
                inferencer.reward([images[i] for i in chunk], [prompts[i] for i in chunk])
        seconds = time.perf_counter() - started
        answer = {"batch_size": batch_size, "images": count, "seconds": seconds, "images_per_s": count / seconds}
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
