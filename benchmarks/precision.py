"""`python benchmarks/precision.py`: how far a cheaper precision moves the scores, on a fixed image set.

The reference is the in-process torch scorer at the first `--dtypes` entry (float32 by default). Each other
dtype, and each served `--endpoint` (e.g. a GPU deployment with bf16 or fp8 TensorRT engines), scores the same
(image, prompt) items; the report gives, against the reference, max and mean |Δmu|, max |Δlog_sigma| and the
pairwise order agreement: of all pairs of items that share a prompt (the comparisons a preference model is
used for), the share whose order is the same (a tie on either side counts as disagreement).

    python benchmarks/precision.py --checkpoint C --base B --images DIR --prompt "a cat" \\
        --dtypes float32,bfloat16 --endpoint gpu-a:8001 --output precision/

Writes OUTPUT/precision.json and OUTPUT/precision.md (also printed).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from hpsv3_benchmarks.report import Report, number, percent, table
from hpsv3_serve.defaults import DEFAULT_BATCH_SIZE
from hpsv3_serve.inputs import IMAGE_SUFFIXES


def order_agreement(reference: np.ndarray, other: np.ndarray, groups: list[str]) -> tuple[int, int]:
    """(agreeing, total) over pairs of items in the same group: sign(Δ) equal and non-zero on both sides."""
    agree = total = 0
    for i, j in itertools.combinations(range(len(groups)), 2):
        if groups[i] != groups[j]:
            continue
        total += 1
        a, b = np.sign(reference[i] - reference[j]), np.sign(other[i] - other[j])
        agree += int(a == b != 0)
    return agree, total


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], prompts: list[str]) -> dict:
    """The agreement numbers of one variant against the reference scores (mu, log_sigma arrays)."""
    delta_mu = np.abs(other["mu"] - reference["mu"])
    agree, total = order_agreement(reference["mu"], other["mu"], prompts)
    return {
        "max_abs_delta_mu": float(delta_mu.max()),
        "mean_abs_delta_mu": float(delta_mu.mean()),
        "max_abs_delta_log_sigma": float(np.abs(other["log_sigma"] - reference["log_sigma"]).max()),
        "pairs": total,
        "order_agreement": agree / total if total else None,
    }


def _scores(results: list) -> dict[str, np.ndarray]:
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} item(s) could not be scored, e.g. {failed[0].error}")
    return {"mu": np.array([r.mu for r in results]), "log_sigma": np.array([r.log_sigma for r in results])}


def items(images: Path, prompts: list[str]) -> tuple[list[Path], list[str]]:
    """Every image of the folder with every prompt."""
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise ValueError(f"--images {images}: needs at least 2 images (.png/.jpg/.webp/.bmp), found {len(paths)}")
    pairs = [(path, prompt) for prompt in prompts for path in paths]
    return [path for path, _ in pairs], [prompt for _, prompt in pairs]


def run(args: argparse.Namespace) -> Report:
    from hpsv3_client import HPSv3Client
    from hpsv3_serve.scorer import Scorer

    images, prompts = items(args.images, args.prompt)
    variants: dict[str, dict[str, np.ndarray]] = {}
    for dtype in args.dtypes:
        scorer = Scorer.from_pretrained(args.checkpoint, args.base, args.device, dtype, args.batch_size)
        variants[f"torch {dtype} ({args.device})"] = _scores(scorer.score(images, prompts))
    for endpoint in args.endpoint:
        variants[f"endpoint {endpoint}"] = _scores(HPSv3Client(endpoint).score(images, prompts))
    (reference_name, reference), *others = variants.items()
    rows = {name: compare(reference, scores, prompts) for name, scores in others}
    result = {"reference": reference_name, "items": len(images), "prompts": args.prompt, "variants": rows}
    lines = [
        f"# Precision agreement against {reference_name}",
        "",
        f"{len(images)} items ({len(set(map(str, images)))} images × {len(args.prompt)} prompts); Δ are absolute "
        "differences from the reference; order agreement over the pairs of items that share a prompt.",
        "",
        *table(["variant", "max Δmu", "mean Δmu", "max Δlog σ", "pairs", "order agreement"],
               [[name, number(r["max_abs_delta_mu"], 6), number(r["mean_abs_delta_mu"], 6),
                 number(r["max_abs_delta_log_sigma"], 6), r["pairs"], percent(r["order_agreement"])]
                for name, r in rows.items()]),
    ]  # fmt: skip
    return Report("precision", result, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/precision.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="MizzenAI/HPSv3", help="HPSv3 .safetensors, folder or hub id")
    parser.add_argument("--base", default="Qwen/Qwen2-VL-7B-Instruct", help="Qwen2-VL folder or hub id")
    parser.add_argument("--images", type=Path, required=True, help="folder of images (the fixed set)")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for more)")
    parser.add_argument(
        "--dtypes",
        type=lambda text: text.split(","),
        default=["float32", "bfloat16"],
        help="in-process torch dtypes; the first is the reference (default float32,bfloat16)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of the in-process scorers (cpu, cuda)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="in-process batch size")
    parser.add_argument("--endpoint", action="append", default=[], help="also a served model HOST:PORT (repeat)")
    parser.add_argument("--output", type=Path, default=Path("precision"), help="report folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    report.publish(args.output, parser.prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
