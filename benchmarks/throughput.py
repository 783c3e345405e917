"""`throughput`: the HPSv3 Triton endpoint vs the in-process scorer vs the official inferencer, in ONE run.

Self-contained, on the tiny model (starts tritonserver on free loopback ports, stops it after):

    hpsv3 bench throughput --serve --artifacts build/tiny/onnx

Against a server that is already running (no variants, no per-process server CPU then):

    hpsv3 bench --endpoint 127.0.0.1:8001 throughput --artifacts build/tiny/onnx

Measured, on the same images and prompt mix, interleaved over --rounds rounds (the median round is reported,
so that a burst of noise on a shared machine hits every system alike):
  * endpoint: HPSv3Client at each --sweep concurrency level; images/s and p50/p90/p99 per-request latency, plus
    the server's own per-model queue/compute times (Triton statistics) and transport/other = client latency −
    server time;
  * in-process: `Scorer` (torch engine, and ONNX Runtime engine when --artifacts is given) at each --batch-sizes;
  * official: `HPSv3RewardInferencer` (benchmarks/official_inferencer.py in --official-venv) at each batch size;
  * stages: decode+convert, resize, patchify, tokenise, vision encoder, language tower, reward head, timed
    one by one in-process with the ONNX stages the server runs.
Server variants (--serve only) render the repository with other settings, e.g.
    --variant 1thread:threads=1 --variant 2vision:threads=1,vision_instances=2
Writes OUTPUT/throughput.md (also printed) and OUTPUT/throughput.json, next to the rendered repositories and
the server logs; progress goes to stderr. Exit status 1 when some request failed.
The project targets (tiny model, same run): endpoint ≥ 2× the official best, ≥ 0.85× the in-process best.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpsv3_serve.errors import HPSv3Error

from .formats import image_files
from .loadgen import drive
from .report import Report
from .triton_stats import (
    SERVER_MODELS,
    add_delta,
    server_breakdown,
    server_snapshot,
    snapshot_after,
    step_cells,
)

if TYPE_CHECKING:
    from hpsv3_serve.scorer import Scorer

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "tests" / "fixtures" / "images"
DEFAULT_NAMES = "square_512.png rgba_640x480.png gray_300.png photo_800x600.jpg small_200.png wide_1920x1080.jpg"
DEFAULT_IMAGES = [IMAGES / name for name in (*DEFAULT_NAMES.split(), "tall_300x900.png", "cmyk_500x375.jpg")]
PROMPTS = [
    "a cute chibi anime cartoon fox, smiling, wagging tail",
    "a red balloon over a quiet lake",
    "sunset over mountains with a cat and a rainbow, highly detailed digital painting",
    "a lighthouse at night",
]
TARGETS = {"endpoint / official": 2.0, "endpoint / in-process": 0.85}
WORKERS = {  # kind: (venv argument, worker script, system name in the tables)
    "official": ("official_venv", "official_inferencer.py", "official HPSv3RewardInferencer"),
    "vllm": ("vllm_venv", "vllm_scorer.py", "vLLM Scorer (in-process)"),
}


class ThroughputError(HPSv3Error):
    """A system to measure could not be set up or fails its requests; the message says which."""

    code = "throughput"


def log(message: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pairs(images: list[Path], count: int) -> tuple[list[str], list[str]]:
    """`count` (image, prompt) pairs cycling through the images; the prompt mix is fixed."""
    return [str(images[i % len(images)]) for i in range(count)], [PROMPTS[i % len(PROMPTS)] for i in range(count)]


@dataclass
class Measurement:
    """One system at one setting, measured once per round."""

    system: str
    setting: str
    url: str | None = None  # the endpoint's gRPC address
    rounds: list[float] = field(default_factory=list)  # images/s per round
    latencies_s: list[float] = field(default_factory=list)  # per request, all rounds (endpoint only)
    server: dict[str, dict[str, float]] = field(default_factory=dict)  # Triton statistics deltas, summed
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group, summed
    images: int = 0  # images scored over all rounds
    machine: list[float] = field(default_factory=lambda: [0.0, 0.0])  # machine-wide (total, idle) jiffies
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return statistics.median(self.rounds) if self.rounds else 0.0

    def summary(self) -> dict:
        data = {
            "system": self.system,
            "setting": self.setting,
            "images_per_s": self.images_per_s,
            "rounds_images_per_s": self.rounds,
            "errors": self.errors[:5],
        }
        if self.latencies_s:
            p50, p90, p99 = np.percentile(np.array(self.latencies_s) * 1000, [50, 90, 99]).tolist()
            data.update(
                latency_ms={"p50": p50, "p90": p90, "p99": p99, "mean": 1000 * statistics.mean(self.latencies_s)}
            )
        if self.server:
            data["server"] = server_breakdown(self.server, self.wall_s, data.get("latency_ms", {}).get("mean", 0.0))
        if self.cpu_s and self.images:
            data["cpu_ms_per_image"] = {name: 1000 * s / self.images for name, s in self.cpu_s.items()}
            data["wall_ms_per_image"] = 1000 * self.wall_s / self.images
        if self.machine[0]:
            data["machine_busy_percent"] = 100 * (1 - self.machine[1] / self.machine[0])
        return data

    def record(self, images: int, wall_s: float, errors: list[str]) -> None:
        self.rounds.append(images / wall_s)
        self.images += images
        self.wall_s += wall_s
        self.errors += errors

    def timed(self, run: Callable[[], None], pids: dict[str, int]) -> None:
        """Run one round, adding the CPU it took (per process group and machine-wide) to the totals."""
        before, (total, idle, _) = cpu_seconds(pids), cpu_counters()
        run()
        after, (total_after, idle_after, _) = cpu_seconds(pids), cpu_counters()
        for name, seconds in after.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds - before.get(name, 0.0)
        self.machine[0] += total_after - total
        self.machine[1] += idle_after - idle


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process and by `pids` (label → pid); a `tritonserver`
    pid brings its model stubs, each counted under its model's name."""
    usage = os.times()
    found = {"this process": usage.user + usage.system}
    server_pid = pids.get("tritonserver")
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        labels = [label for label, pid in pids.items() if pid == int(entry.name)]
        if labels:
            name = labels[0]
        elif server_pid is not None and int(fields[1]) == server_pid and len(args) > 1:
            name = Path(args[1].decode()).parent.parent.name  # a model stub: <stub> <repo>/<model>/1/model.py ...
        else:
            continue
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return found


# -- the endpoint --------------------------------------------------------------------------------------------


def endpoint_round(
    measurement: Measurement, url: str, images: list[Path], concurrency: int, count: int, args: argparse.Namespace
) -> None:
    """One round against the endpoint, with the server's statistics over it."""
    before = server_snapshot(url)
    wall, latencies, errors = asyncio.run(
        drive(url, *pairs(images, count), concurrency, timeout_s=args.timeout, model=args.model)
    )
    after = snapshot_after(url, before, count - len(errors))
    measurement.record(count, wall, errors)
    measurement.latencies_s += latencies
    add_delta(measurement.server, before, after)


def warm_endpoint(url: str, images: list[Path], concurrency: int, args: argparse.Namespace) -> None:
    load = pairs(images, max(len(images), concurrency) * 2)
    _, _, errors = asyncio.run(drive(url, *load, concurrency, timeout_s=args.timeout, model=args.model))
    if errors:
        raise ThroughputError(f"the endpoint at {url} fails requests: {errors[0]}")


# -- in-process and official ---------------------------------------------------------------------------------


def inprocess_round(measurement: Measurement, scorer: Scorer, images: list[Path], count: int) -> None:
    batch = pairs(images, count)
    started = time.perf_counter()
    results = scorer.score(*batch)
    measurement.record(count, time.perf_counter() - started, [r.error for r in results if r.error])


class VenvWorker:
    """A timing worker script (official_inferencer.py, vllm_scorer.py) in another venv, answering one
    JSON line per request."""

    def __init__(self, venv: Path, script: str, checkpoint: Path, base: Path) -> None:
        self.script = script
        command = [str(venv / "bin" / "python"), str(Path(__file__).with_name(script))]
        command += ["--checkpoint", str(checkpoint), "--base", str(base)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise ThroughputError(f"{self.script} exited with code {self.process.wait()} (see stderr)")
        return json.loads(line)

    def time(self, images: list[Path], batch_size: int, count: int) -> float:
        """Seconds the worker takes for `count` pairs at `batch_size`."""
        paths, prompts = pairs(images, len(images))
        request = {"images": paths, "prompts": prompts, "batch_size": batch_size, "count": count}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()["seconds"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)


# -- stages --------------------------------------------------------------------------------------------------


def _timer(spent: dict[str, list[float]]) -> Callable:
    def timed(stage: str, fn: Callable, *args: object) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn(*args)
        totals = spent.setdefault(stage, [0.0, 0.0])
        totals[0] += time.perf_counter() - wall
        totals[1] += time.process_time() - cpu
        return value

    return timed


def stage_times(artifacts: Path, images: list[Path], rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Wall and CPU (all threads of this process) ms per image of each stage, run one after another; ONNX Runtime
    sessions with `threads` intra-op threads (0 = ORT's default, one per core). Median over rounds."""
    from hpsv3_serve import inputs
    from hpsv3_serve.engines.onnx_engine import BASE_DIR, OnnxLanguageTower, OnnxRewardHead, OnnxVisionEncoder
    from hpsv3_serve.prompt import PromptTokenizer

    tokenizer = PromptTokenizer.from_base(artifacts / BASE_DIR)
    vision, language = OnnxVisionEncoder(artifacts, threads), OnnxLanguageTower(artifacts, threads)
    head = OnnxRewardHead(artifacts, threads=1)  # as the server's reward_head model
    paths, prompts = pairs(images, len(images))
    per_round: list[dict[str, list[float]]] = []
    for _ in range(rounds + 1):  # the first round warms up
        spent: dict[str, list[float]] = {}
        timed = _timer(spent)
        sequences = []
        for path, prompt in zip(paths, prompts, strict=True):
            image = timed("decode + convert RGB", inputs.load_image, path)
            resized = timed("smart_resize + BICUBIC", inputs.resize, image)
            prepared = timed("patchify", inputs.patchify, resized)
            ids = timed("tokenise", tokenizer.encode_one, prompt, prepared.num_tokens)
            embeds = timed("vision encoder", vision, prepared.patches, prepared.grid_thw)
            sequences.append(timed("embed lookup + scatter", language.embed, ids, embeds))
        for sequence in sequences:
            timed("language tower (batch 1)", language, [sequence])
        hidden = timed(f"language tower (batch {len(sequences)})", language, sequences)
        timed(f"reward head (batch {len(sequences)})", head, hidden)
        per_round.append(spent)
    return {
        stage: {
            key: 1000 * statistics.median(r[stage][index] for r in per_round[1:]) / len(paths)
            for index, key in enumerate(("wall_ms", "cpu_ms"))
        }
        for stage in per_round[0]
    }


# -- the report ----------------------------------------------------------------------------------------------


def machine_facts() -> dict:
    packages = ("torch", "transformers", "onnxruntime", "tritonclient", "nvidia-pytriton", "numpy", "pillow")
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo") if "model name" in line), "?")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_revision(),
        "versions": versions,
    }


def git_revision() -> str | None:
    """`git describe` of the checkout the benchmark runs from (+ "-dirty" with local changes), if any."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _read(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def cpu_counters() -> tuple[float, float, float]:
    """Machine-wide (total, idle + iowait, steal) jiffies from /proc/stat; steal = time taken by the hypervisor."""
    fields = next((line.split()[1:] for line in _read("/proc/stat") if line.startswith("cpu ")), ["0"] * 8)
    values = [float(v) for v in fields] + [0.0] * 8
    return sum(values), values[3] + values[4], values[7]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        f"# HPSv3 throughput ({report['date']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']['cpus_usable']} usable cores ({report['machine']['cpu_model']}), "
        f"{report['machine']['platform']}, Python {report['machine']['python']}, checkout {report['machine']['git']}; "
        + ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items() if v)
        + (
            "; official venv: " + ", ".join(f"{k} {v}" for k, v in report["official_versions"].items())
            if report.get("official_versions")
            else ""
        )
        + f". Noise: load average {report['noise']['loadavg_before']} → {report['noise']['loadavg_after']}, "
        f"steal {report['noise']['steal_percent']:.1f} % of CPU time during the run.",
        "",
        f"{report['requests']} images per measurement, {report['rounds']} interleaved rounds, median round reported "
        f"(range = slowest–fastest round); images {', '.join(report['images'])}; {len(PROMPTS)} prompts cycled.",
        "",
        "| system | setting | images/s | range | p50 ms | p90 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in report["measurements"]:
        lat = m.get("latency_ms", {})
        spread = f"{min(m['rounds_images_per_s']):.1f}–{max(m['rounds_images_per_s']):.1f}"
        lines.append(
            f"| {m['system']} | {m['setting']} | {m['images_per_s']:.2f} | {spread} | {_fmt(lat.get('p50'))} "
            f"| {_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} |"
        )
    lines += ["", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for ratio in report["ratios"]:
        met = "—" if ratio["target"] is None else ("yes" if ratio["value"] >= ratio["target"] else "**no**")
        lines.append(f"| {ratio['name']} | {ratio['value']:.3f}× | {_fmt(ratio['target'], 2)} | {met} |")
    if report.get("stages_ms"):
        runs = report["stages_ms"]
        lines += [
            "",
            "In-process stages, one after another in one thread of Python (ms per image, median round; CPU = all "
            "threads of the process, so it shows ONNX Runtime's intra-op threads; batch-1 sums are the serial cost):",
            "",
            "| stage | " + " | ".join(f"{run} wall | {run} CPU" for run in runs) + " |",
            "|---|" + "---:|" * (2 * len(runs)),
        ]
        stages = list(dict.fromkeys(stage for run in runs.values() for stage in run))
        for stage in stages:
            cells = [f"{run[stage]['wall_ms']:.2f} | {run[stage]['cpu_ms']:.2f}" for run in runs.values()]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        serial = [s for s in stages if not s.startswith("language tower (batch") or s == "language tower (batch 1)"]
        totals = [
            f"{sum(run[s]['wall_ms'] for s in serial):.2f} | {sum(run[s]['cpu_ms'] for s in serial):.2f}"
            for run in runs.values()
        ]
        lines.append("| **sum (language tower at batch 1)** | " + " | ".join(totals) + " |")
    servers = [m for m in report["measurements"] if "server" in m]
    if servers:
        lines += [
            "",
            "Server side (Triton statistics over the measured requests): queue / compute ms per request, "
            "images per execution; transport/other = client latency − server time:",
            "",
            "| endpoint | client ms | server ms | transport/other ms | " + " | ".join(SERVER_MODELS[1:]) + " |",
            "|---|---:|---:|---:|" + "---|" * (len(SERVER_MODELS) - 1),
        ]
        for m in servers:
            s, cells = m["server"], step_cells(m["server"])
            lines.append(
                f"| {m['system']} {m['setting']} | {m['latency_ms']['mean']:.1f} | {s['server_ms']:.1f} "
                f"| {s['transport_other_ms']:.1f} | " + " | ".join(cells) + " |"
            )
    measured = [m for m in report["measurements"] if m.get("cpu_ms_per_image")]
    if measured:
        groups = list(dict.fromkeys(name for m in measured for name in m["cpu_ms_per_image"]))
        lines += [
            "",
            "CPU time per image (user + system, from /proc; `this process` is the benchmark: the gRPC client for "
            "the endpoint, the whole scorer in-process), against the wall time per image × usable cores, and how "
            "busy the whole machine was:",
            "",
            "| system | setting | " + " | ".join(groups) + " | total | wall × cores | machine busy |",
            "|---|---|" + "---:|" * (len(groups) + 3),
        ]
        cores = report["machine"]["cpus_usable"]
        for m in measured:
            cpu = m["cpu_ms_per_image"]
            cells = [_fmt(cpu.get(name)) for name in groups]
            budget = cores * m["wall_ms_per_image"]
            lines.append(
                f"| {m['system']} | {m['setting']} | " + " | ".join(cells) + f" | {sum(cpu.values()):.1f} "
                f"| {_fmt(budget)} | {_fmt(m.get('machine_busy_percent'), 0)} % |"
            )
    return "\n".join(lines) + "\n"


def ratios(measurements: list[Measurement]) -> list[dict]:
    """Each endpoint configuration at its best concurrency vs the official and the in-process best."""

    def best(found: list[Measurement]) -> Measurement | None:
        found = [m for m in found if m.rounds]
        return max(found, key=lambda m: m.images_per_s) if found else None

    endpoints = {m.system: best([e for e in measurements if e.system == m.system]) for m in measurements}
    out = []
    for label, prefix in (("official", "official"), ("in-process", "in-process")):
        other = best([m for m in measurements if m.system.startswith(prefix)])
        for system, endpoint in endpoints.items():
            if other and endpoint and system.startswith("endpoint"):
                out.append({
                    "name": f"{system} at {endpoint.setting} / {label} best ({other.system} {other.setting})",
                    "value": endpoint.images_per_s / other.images_per_s,
                    "target": TARGETS[f"endpoint / {label}"],
                })  # fmt: skip
    vllm = best([m for m in measurements if m.system == WORKERS["vllm"][2]])
    onnx = best([m for m in measurements if m.system == "in-process Scorer (onnxruntime)"])
    if vllm and onnx:
        out.append({"name": f"vLLM route at {vllm.setting} / ONNX Runtime route at {onnx.setting} (in-process)",
                    "value": vllm.images_per_s / onnx.images_per_s, "target": None})  # fmt: skip
    return out


# -- the task ------------------------------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict[str, int]]:
    name, _, spec = text.partition(":")
    try:
        overrides = {key.strip(): int(value) for key, value in (item.split("=") for item in spec.split(",") if item)}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:key=int,key=int ({exc})") from exc
    return name, overrides


def add_arguments(task: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    """The options of `hpsv3 bench throughput`; --endpoint, --model, --timeout and --output are the common ones."""

    def levels(text: str) -> list[int]:
        try:
            return [positive(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a list like 1,4,16, got {text!r}") from exc

    where = task.add_argument_group("the endpoint (--endpoint HOST:PORT for a running one, or --serve)")
    where.add_argument("--serve", action="store_true", help="start tritonserver from --artifacts, stop it after")
    where.add_argument(
        "--artifacts",
        type=Path,
        default=REPO / "build" / "tiny" / "onnx",
        metavar="DIR",
        help="ONNX export folder (exported from --checkpoint/--base when it has no manifest.json); also used for "
        "the in-process ONNX scorer and the stage timings (default: build/tiny/onnx)",
    )
    where.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME:key=v,...",
        help="with --serve: also serve a repository rendered with these RepositorySettings overrides "
        "(threads, vision_instances, preprocess_instances, queue_delay_us, max_batch_size); repeatable",
    )
    model = task.add_argument_group("the model")
    model.add_argument(
        "--checkpoint",
        type=Path,
        default=REPO / "build" / "tiny" / "HPSv3-tiny.safetensors",
        help="HPSv3 .safetensors for the torch Scorer and the official inferencer (default: the tiny model)",
    )
    model.add_argument(
        "--base", type=Path, default=REPO / "build" / "tiny" / "base", help="Qwen2-VL base folder (default: tiny)"
    )
    load = task.add_argument_group("the load")
    load.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=DEFAULT_IMAGES,
        metavar="PATH",
        help="image files and/or folders (default: 8 mixed fixture images, 200x200 to 1920x1080)",
    )
    load.add_argument("--sweep", type=levels, default=[1, 4, 16], metavar="C1,C2,...",
                      help="endpoint concurrency levels, as for latency (default 1,4,16; "
                      "the common --concurrency is not used here)")  # fmt: skip
    load.add_argument("--batch-sizes", type=levels, default=[1, 8], metavar="B1,B2,...",
                      help="in-process/official batch sizes (default 1,8)")  # fmt: skip
    load.add_argument("--requests", type=positive, default=64, help="images per measurement and round (default 64)")
    load.add_argument("--rounds", type=positive, default=3, help="interleaved rounds; the median (default 3)")
    others = task.add_argument_group("what else to measure")
    others.add_argument("--official-venv", type=Path, default=REPO / ".venv-official", help="venv with hpsv3==1.0.0")
    others.add_argument("--no-official", action="store_true", help="skip the official inferencer")
    others.add_argument("--vllm-venv", type=Path, default=REPO / ".venv-vllm", help="venv with vLLM (make test)")
    others.add_argument("--no-vllm", action="store_true", help="skip the in-process scorer on vLLM")
    others.add_argument("--no-inprocess", action="store_true", help="skip the in-process scorers and stages")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One endpoint: a running one (--endpoint) or one started here (--serve); variants only when started here."""
    if bool(args.endpoint) == args.serve:
        parser.error("throughput: pass --endpoint HOST:PORT (a running server) or --serve (start one from "
                     "--artifacts), not both")  # fmt: skip
    if args.variant and not args.serve:
        parser.error("throughput: --variant needs --serve (the variants are rendered and served here)")


def start_servers(args: argparse.Namespace, stack: list[Callable[[], None]]) -> dict[str, tuple[str, int | None]]:
    """name → (gRPC url, local server pid) of each server to measure (started here with --serve)."""
    if args.endpoint:
        return {"endpoint": (args.endpoint, None)}
    from hpsv3_repository.build import render, settings_for
    from hpsv3_repository.launcher import TritonServer, free_port

    if not (args.artifacts / "manifest.json").is_file():
        from hpsv3_export.onnx_export import export_onnx

        log(f"exporting {args.checkpoint} to {args.artifacts}")
        export_onnx(args.checkpoint, args.base, args.artifacts)
    urls = {}
    for name, overrides in [("default", {}), *args.variant]:
        settings = settings_for(args.artifacts, **overrides)
        repository = render("cpu", settings, args.output / f"repository-{name}")
        server = TritonServer(
            repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=None,
            workdir=args.output / f"triton-{name}",
        )
        log(f"starting tritonserver '{name}' ({overrides or 'defaults'})")
        server.start(timeout_s=180)
        stack.append(server.stop)
        urls[f"endpoint ({name})"] = (server.grpc_url, server.pid)
    return urls


Step = tuple[Measurement, Callable[[], None], dict[str, int]]  # what, one round of it, whose CPU to count


def endpoint_steps(args: argparse.Namespace, images: list[Path], cleanup: list) -> list[Step]:
    steps = []
    for name, (url, pid) in start_servers(args, cleanup).items():
        log(f"warming up {name} at {url}")
        warm_endpoint(url, images, max(args.sweep), args)
        for level in args.sweep:
            measurement = Measurement(name, f"concurrency {level}", url)
            pids = {"tritonserver": pid} if pid is not None else {}
            run = functools.partial(endpoint_round, measurement, url, images, level, args.requests, args)
            steps.append((measurement, run, pids))
    return steps


def inprocess_steps(args: argparse.Namespace, images: list[Path], cleanup: list) -> list[Step]:
    from hpsv3_serve.engines.onnx_engine import BASE_DIR
    from hpsv3_serve.scorer import Scorer

    steps = []
    log("loading the in-process scorers")
    for batch_size in args.batch_sizes:
        scorers = []
        if args.checkpoint.is_file():
            torch_scorer = Scorer.from_pretrained(args.checkpoint, args.base, batch_size=batch_size, backend="torch")
            scorers.append(("in-process Scorer (torch)", torch_scorer))
        if (args.artifacts / "manifest.json").is_file():
            onnx_scorer = Scorer.from_pretrained(
                base=args.artifacts / BASE_DIR, batch_size=batch_size, backend="onnx", folder=args.artifacts
            )
            scorers.append(("in-process Scorer (onnxruntime)", onnx_scorer))
        for name, scorer in scorers:
            log(f"warming up {name} at batch {batch_size}")
            scorer.score(*pairs(images, len(images)))
            cleanup.append(scorer.close)
            measurement = Measurement(name, f"batch {batch_size}")
            steps.append(
                (measurement, functools.partial(inprocess_round, measurement, scorer, images, args.requests), {})
            )
    return steps


def worker_steps(args: argparse.Namespace, images: list[Path], report: dict, cleanup: list, kind: str) -> list[Step]:
    """Measurements of the official inferencer (kind "official") or the vLLM scorer ("vllm") in their venvs."""
    venv, script, system = WORKERS[kind]
    venv = getattr(args, venv)
    log(f"starting {script} in {venv}")
    worker = VenvWorker(venv, script, args.checkpoint.resolve(), args.base.resolve())
    cleanup.append(worker.close)
    report[f"{kind}_versions"] = worker.ready["versions"]
    steps = []
    for batch_size in args.batch_sizes:
        log(f"warming up {system} at batch {batch_size}")
        worker.time(images, batch_size, len(images))
        measurement = Measurement(system, f"batch {batch_size}")

        def run(m: Measurement = measurement, size: int = batch_size) -> None:
            m.record(args.requests, worker.time(images, size, args.requests), [])

        steps.append((measurement, run, {f"{kind} worker": worker.process.pid}))
    return steps


def run_throughput(args: argparse.Namespace) -> Report:
    """Set up every system, measure them in interleaved rounds; the report of `hpsv3 bench throughput`."""
    images = [path.resolve() for path in image_files(args.images)]
    args.output.mkdir(parents=True, exist_ok=True)
    loadavg_before, (total0, _, steal0) = os.getloadavg(), cpu_counters()
    cleanup: list[Callable[[], None]] = []
    report: dict = {}
    try:
        steps = endpoint_steps(args, images, cleanup)
        if not args.no_inprocess:
            steps += inprocess_steps(args, images, cleanup)
        for kind in ("official", "vllm"):
            venv = getattr(args, WORKERS[kind][0])
            if getattr(args, f"no_{kind}"):
                continue
            if (venv / "bin" / "python").is_file():
                steps += worker_steps(args, images, report, cleanup, kind)
            else:
                log(f"no venv at {venv}: skipping {WORKERS[kind][2]}")
        for round_index in range(args.rounds):
            for measurement, one_round, pids in steps:
                log(f"round {round_index + 1}/{args.rounds}: {measurement.system} {measurement.setting}")
                measurement.timed(one_round, pids)
        if not args.no_inprocess and (args.artifacts / "manifest.json").is_file():
            log("timing the stages in-process")
            report["stages_ms"] = {
                label: stage_times(args.artifacts, images, args.rounds, threads)
                for threads, label in ((1, "ORT threads=1"), (0, "ORT threads=0 (default)"))
            }
    finally:
        for stop in reversed(cleanup):
            stop()
    total1, _, steal1 = cpu_counters()
    measurements = [measurement for measurement, _, _ in steps]
    report.update(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        command=args.command,
        machine=machine_facts(),
        noise={
            "loadavg_before": [round(v, 2) for v in loadavg_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "steal_percent": 100 * (steal1 - steal0) / max(total1 - total0, 1),
        },
        images=[p.name for p in images],
        requests=args.requests,
        rounds=args.rounds,
        measurements=[m.summary() for m in measurements],
        ratios=ratios(measurements),
    )
    report["run"] = {"endpoint": ", ".join(dict.fromkeys(m.url for m in measurements if m.url)) or None}
    return Report("throughput", report, markdown(report), failed=sum(len(m.errors) for m in measurements))
