"""Timing worker for the in-process scorer on vLLM; runs inside .venv-vllm (scripts/setup_vllm_venv.sh).

    .venv-vllm/bin/python benchmarks/vllm_scorer.py --checkpoint C --base B

Exports the vLLM folder (`hpsv3 export --vllm`) into a temporary folder, loads the vllm engine (vLLM's
pooling runner, fp32, the whole model in vLLM), prints one JSON line `{"ready": true, ...}`, then
answers the same JSON requests as benchmarks/official_inferencer.py (one per stdin line):
`{"images", "prompts", "batch_size", "count"}` → `{"seconds", "images_per_s", ...}`, scoring with
`Scorer.score` at that batch size. Driven by `hpsv3 bench throughput` (benchmarks/throughput.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="HPSv3 .safetensors")
    parser.add_argument("--base", type=Path, required=True, help="Qwen2-VL base folder (config + tokenizer)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny model needs little
    protocol = os.fdopen(os.dup(1), "w", buffering=1)  # answers only; vLLM's own output goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch
    import vllm

    from hpsv3_export.vllm_export import export_vllm
    from hpsv3_serve.scorer import Scorer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vllm"
        export_vllm(args.checkpoint, args.base, folder)
        # On CPU vLLM checks that this share of the machine's memory is free at start; the other systems
        # of the benchmark are loaded by then.
        with Scorer.from_pretrained(
            base=args.base, backend="vllm", folder=folder, gpu_memory_utilization=0.3
        ) as scorer:
            versions = {"vllm": vllm.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
            protocol.write(json.dumps({"ready": True, "load_s": round(time.perf_counter() - started, 1),
                                       "versions": versions}) + "\n")  # fmt: skip
            for line in sys.stdin:
                if not line.strip():
                    continue
                request = json.loads(line)
                count, scorer.batch_size = int(request["count"]), int(request["batch_size"])
                order = [i % len(request["images"]) for i in range(count)]
                begin = time.perf_counter()
                results = scorer.score([request["images"][i] for i in order], [request["prompts"][i] for i in order])
                seconds = time.perf_counter() - begin
                errors = [r.error for r in results if r.error]
                protocol.write(json.dumps({"batch_size": scorer.batch_size, "images": count, "seconds": seconds,
                                           "images_per_s": count / seconds, "errors": errors[:3]}) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
