"""`make demo`: tiny model → ONNX export → real Triton server → score the examples over gRPC → stop.

python examples/demo.py --tiny build/tiny --workdir build/demo
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

from hpsv3_client import HPSv3Client
from hpsv3_repository.launcher import free_port
from hpsv3_repository.serve import ServeOptions, prepare_server
from hpsv3_serve.results import format_table

EXAMPLES = Path(__file__).resolve().parent


def batch_sizes(metrics_url: str) -> dict[str, float]:
    """Average batch size per model from Prometheus: inferences / executions."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()

    def per_model(metric: str) -> dict[str, float]:
        return {m: float(v) for m, v in re.findall(rf'^{metric}{{model="(\w+)",version="1"}} (\S+)$', text, re.M)}

    inferences, executions = per_model("nv_inference_count"), per_model("nv_inference_exec_count")
    return {model: inferences[model] / executions[model] for model in inferences if executions.get(model)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, default=Path("build/tiny"), help="`hpsv3 make-tiny` output")
    parser.add_argument("--workdir", type=Path, default=Path("build/demo"), help="artifacts, repository, log")
    args = parser.parse_args()
    records = [json.loads(line) for line in (EXAMPLES / "prompts.jsonl").read_text().splitlines() if line]
    images = [str(EXAMPLES / r["image"]) for r in records]
    options = ServeOptions(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())
    server = prepare_server(args.tiny / "HPSv3-tiny.safetensors", args.tiny / "base", args.workdir, options)
    with server:
        print(f"tritonserver ready on {server.grpc_url} (gRPC); scoring {len(images)} example images ...")
        results = HPSv3Client(server.grpc_url).score(images, [r["prompt"] for r in records])
        print(format_table([r.to_dict() for r in results]))
        sizes = ", ".join(f"{model} {size:.2f}" for model, size in sorted(batch_sizes(server.metrics_url).items()))
        print(f"average batch size per model (Prometheus): {sizes}")
    print("server stopped")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
