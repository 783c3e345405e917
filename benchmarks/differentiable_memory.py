"""`python benchmarks/differentiable_memory.py`: memory per image of one reward-backprop step (ReFL, DRaFT), with and
without gradient checkpointing.

A step is `DifferentiableScorer` on a batch of random images (weights frozen) and backward of the summed mu. Measured:
the peak memory the step allocates above what was there before it (weights, input), divided by the batch size.
CUDA: `torch.cuda.max_memory_allocated`. CPU: torch's allocator as the profiler records it (each op's net
allocation in time order; workspace that one op frees before it returns is not seen).

Weights are random, since memory does not depend on their values: `--size tiny` (the test model) or `--size 7b`
(Qwen2-VL-7B shapes, from `benchmarks/gpu/shapes.py`). `--probe` runs 1-2 vision blocks and 1-2 decoder layers and
extrapolates linearly to the full depth, which is how a CPU estimates the 7B (the full model there means ~16 GB of
bf16 weights and minutes per step).

    python benchmarks/differentiable_memory.py --size tiny --dtype float32
    python benchmarks/differentiable_memory.py --size 7b --probe              # CPU estimate of the 7B, bf16
    python benchmarks/differentiable_memory.py --size 7b --device cuda        # measured on a GPU, bf16

Writes OUTPUT/differentiable_memory.json and OUTPUT/differentiable_memory.md (also printed).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import Qwen2VLConfig

from hpsv3_benchmarks.gpu.shapes import SIZES
from hpsv3_benchmarks.report import Report, number, table
from hpsv3_serve.checkpoint import DTYPES
from hpsv3_serve.differentiable import DifferentiableScorer
from hpsv3_serve.model import HPSv3RewardModel
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.qwen_tokenizer import load_or_build_tokenizer

PROMPT = "a photo of a red fox standing in deep snow at sunrise, highly detailed"
PROBES = ((1, 1), (2, 1), (1, 2))  # (vision blocks, decoder layers): base + one more of each
MIB = 1 << 20


def random_model(size: str, depths: tuple[int, int] | None, device: str, dtype: torch.dtype) -> HPSv3RewardModel:
    """HPSv3 at `size` with random weights; `depths` = (vision blocks, decoder layers) truncates the towers."""
    config = copy.deepcopy(SIZES[size])
    if depths is not None:
        config["vision_config"]["depth"], config["num_hidden_layers"] = depths
    with torch.device("meta"):
        model = HPSv3RewardModel(Qwen2VLConfig(**config))
    model = model.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, param[0].numel() ** -0.5 if param.dim() >= 2 else 0.1)
    model.rm_head.float()
    model.rebuild_rotary_buffers(device)
    return model.eval()


def full_depths(size: str) -> tuple[int, int]:
    config = SIZES[size]
    return config["vision_config"]["depth"], config["num_hidden_layers"]


def peak_bytes(step: Callable[[], None], device: str) -> int:
    """Peak bytes that `step` allocates above what is allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(prof.events(), key=lambda event: event.time_range.start)
    return max(0, *itertools.accumulate(event.self_cpu_memory_usage for event in events))


def measure(args: argparse.Namespace, depths: tuple[int, int] | None, checkpointing: bool) -> dict:
    """Peak bytes per image and seconds of one step (a warm-up step, a timed one, a measured one)."""
    model = random_model(args.size, depths, args.device, DTYPES[args.dtype])
    tokenizer = PromptTokenizer(load_or_build_tokenizer())
    scorer = DifferentiableScorer(model, tokenizer, gradient_checkpointing=checkpointing)
    pixels = torch.rand(args.batch, 3, args.height, args.width, device=args.device, requires_grad=True)

    def step() -> None:
        scorer(pixels, PROMPT)[:, 0].sum().backward()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    step()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return {"peak_bytes_per_image": peak_bytes(step, args.device) / args.batch, "step_s": seconds}


def extrapolate(probes: dict[tuple[int, int], float], depths: tuple[int, int]) -> dict:
    """Linear in depth from PROBES: base + blocks · per block + layers · per layer."""
    per_block = probes[2, 1] - probes[1, 1]
    per_layer = probes[1, 2] - probes[1, 1]
    base = probes[1, 1] - per_block - per_layer
    return {"base": base, "per_vision_block": per_block, "per_decoder_layer": per_layer,
            "full_depth": base + depths[0] * per_block + depths[1] * per_layer}  # fmt: skip


def run(args: argparse.Namespace) -> Report:
    depths = full_depths(args.size)
    rows, result = [], {"settings": {k: v for k, v in vars(args).items() if k != "output"}, "depths": depths}
    for checkpointing in (False, True):
        name = "with checkpointing" if checkpointing else "without checkpointing"
        if args.probe:
            probes = {probe: measure(args, probe, checkpointing) for probe in PROBES}
            fit = extrapolate({p: m["peak_bytes_per_image"] for p, m in probes.items()}, depths)
            result[name] = {"probes": {f"{v}x{layers}": m for (v, layers), m in probes.items()}, "extrapolated": fit}
            rows.append([name, number(fit["full_depth"] / MIB, 1), number(fit["per_vision_block"] / MIB, 2),
                         number(fit["per_decoder_layer"] / MIB, 2), number(fit["base"] / MIB, 1)])  # fmt: skip
        else:
            result[name] = measure(args, None, checkpointing)
            rows.append([name, number(result[name]["peak_bytes_per_image"] / MIB, 1),
                         number(result[name]["step_s"], 2)])  # fmt: skip
    how = "CUDA allocator peak" if args.device.startswith("cuda") else "torch CPU allocator peak (profiler)"
    header = ["", "MiB per image", "per vision block", "per decoder layer", "base"] if args.probe else [
        "", "MiB per image", "step s"]  # fmt: skip
    lines = [
        f"# Differentiable step memory: {args.size}, {args.dtype}, {args.device}",
        "",
        f"Batch {args.batch} of {args.width}x{args.height} images, frozen weights, backward of the summed mu; {how} "
        "above the weights and input, per image"
        + (f"; extrapolated from {', '.join(f'{v}+{n}' for v, n in PROBES)} blocks+layers to {depths[0]}+{depths[1]}."
           if args.probe else "."),
        "",
        *table(header, rows),
    ]  # fmt: skip
    return Report("differentiable_memory", result, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/differentiable_memory.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model shapes (random weights)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="weights' dtype (rm_head fp32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--height", type=int, default=512, help="decoded image height (resized to the model's size)")
    parser.add_argument("--width", type=int, default=512, help="decoded image width")
    parser.add_argument("--probe", action="store_true", help="1-2 blocks/layers, extrapolated to the full depth")
    parser.add_argument("--output", type=Path, default=Path("differentiable-memory"), help="report folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    report = run(args)
    report.publish(args.output, parser.prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
