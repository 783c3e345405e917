"""One RL step: COUNT uint8 arrays of mixed sizes and their prompts → rewards, four ways, in one run on one machine.

An RL trainer holds its samples as pixels. Each route below scores the same arrays:

  patches        HPSv3Reward(endpoint)(arrays, prompts): each array is resized and patched in the trainer's process
                 (hpsv3_serve.inputs) and sent as uint8 patches over gRPC to the `hpsv3_patches` ensemble
  file-bytes     the same client given each array as binary PPM bytes (lossless): the server decodes, resizes and
                 patches. This is the route from before patches, kept to show why patches were chosen
  reward-server  flow_grpo's remote reward against yifan123/reward-server, re-created in benchmarks/reward_server/:
                 JPEG at PIL's default quality, pickle, an HTTP POST to Flask under gunicorn, and the OFFICIAL
                 HPSv3RewardInferencer (run in --official-venv) at its best batch size (--batch-sizes are swept first)
  in-process     hpsv3_serve.Scorer on the arrays in this process (ONNX Runtime, the server's graphs)

Each route is measured on images/s: the median of --repeats steps, after one warm-up step each. The routes take
turns, so that noise on a shared machine hits them alike. Also measured, per image:
  * client CPU ms: this process's CPU time, which is what the trainer pays. For in-process it is all of the work;
  * server CPU ms: for servers started here;
  * bytes on the wire: for gRPC, the serialized ModelInferRequest; for HTTP, the POST bodies.
For each route it also gives |Δmu| against in-process, and the same for JPEG alone (in-process, on the decoded
JPEGs). The spread of mu over the step is given beside them for scale.

With --tiny (or --artifacts, --checkpoint and --base), it starts tritonserver and the reward server on loopback
ports and stops them afterwards. --endpoint and --reward-server use servers that are already running instead.

examples:
  hpsv3 bench rl-step --tiny build/tiny            # both servers started here; the official venv's reward server
  hpsv3 bench --endpoint 127.0.0.1:8001 rl-step --reward-server http://127.0.0.1:18086 --skip in-process
  hpsv3 bench rl-step --tiny build/tiny --reward-scorer project --count 8    # no .venv-official: a stand-in
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from tqdm import tqdm

from hpsv3_serve.errors import HPSv3Error

from .report import Report, table
from .reward_server.client import reward_server_fn
from .reward_server.launch import RewardServer

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [
    "a cute corgi wearing sunglasses on a beach at sunset",
    "a bowl of ramen with a soft-boiled egg, studio lighting",
    "an astronaut riding a horse on the moon, digital art",
    "a cozy cabin in a snowy forest at night, warm windows",
    "a red fox in autumn leaves, shallow depth of field",
    "a futuristic city skyline with flying cars, neon lights",
    "a watercolor painting of a lighthouse on a cliff",
    "a close-up portrait of an old fisherman, dramatic light",
]
GOAL = 2.0  # issue #18: patches ≥ 2× the reward-server route on the tiny model
RETRIES = 2  # the reward-server client's retries on status 500 (flow_grpo's 1000 would hide a broken server)
PATCHES, FILES, REWARD_SERVER, IN_PROCESS = "patches", "file-bytes", "reward-server", "in-process"
ROUTES = (PATCHES, FILES, REWARD_SERVER, IN_PROCESS)


class RlStepError(HPSv3Error):
    """A route could not be set up or failed a step; the message says what to do."""

    code = "rl_step"


def log(message: str) -> None:
    tqdm.write(f"[rl-step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def make_arrays(count: int, seed: int, min_side: int, max_side: int) -> list[np.ndarray]:
    """`count` deterministic uint8 [H, W, 3] images with sides in [min_side, max_side], in steps of 16: smooth colour
    waves and grain. JPEG then sees content that looks like an image, not noise."""
    rng = np.random.default_rng(seed)
    arrays = []
    for _ in range(count):
        height, width = (16 * int(v) for v in rng.integers(-(-min_side // 16), max_side // 16 + 1, size=2))
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        frequency = rng.uniform(0.5, 6, size=(2, 3)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
        waves = np.sin(2 * np.pi * (frequency[0] * x + frequency[1] * y) + phase)
        grain = rng.standard_normal((height, width, 3), dtype=np.float32) * 10
        arrays.append(np.clip(127.5 + 100 * waves + grain, 0, 255).astype(np.uint8))
    return arrays


def ppm_bytes(array: np.ndarray) -> bytes:
    """The array as a binary PPM file: lossless, no compression, the cheapest file to write."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PPM")
    return buffer.getvalue()


def jpeg_roundtrip(array: np.ndarray) -> np.ndarray:
    """The pixels the reward server decodes: PIL JPEG at its default quality, decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return np.asarray(Image.open(buffer))


def grpc_request_bytes(model: str, image: object, prompt: str) -> int:
    """Size of the serialized ModelInferRequest `HPSv3Client` sends for one item (HTTP/2 framing not counted)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc._utils import _get_inference_request

    from hpsv3_client.hpsv3_client import PATCHES_SUFFIX, image_inputs

    pixels, inputs = image_inputs(image)
    text = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode("utf-8")]], dtype=np.object_))
    request = _get_inference_request(
        model_name=model + PATCHES_SUFFIX if pixels else model, inputs=[*inputs, text], model_version="",
        request_id="", outputs=None, sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
        timeout=None, parameters=None,
    )  # fmt: skip
    return request.ByteSize()


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `roots` and all their descendants (from /proc)."""
    tick, children, used = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, ...; utime and stime are the 12th and 13th
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


@dataclass
class Route:
    """One way to get the step's rewards, and what its steps cost."""

    name: str
    setting: str
    step: Callable[[], tuple[Sequence[float], int | None]]  # → mu per image, request bytes when it counts them
    server_pids: list[int] = field(default_factory=list)
    wire_bytes: int | None = None  # request bytes of one step
    rounds: list[dict] = field(default_factory=list)  # per step: wall_s, client_cpu_s, server_cpu_s
    mu: np.ndarray | None = None

    def run(self, count: int) -> dict:
        """One timed step; its mu are kept (the same for every step: the scores are deterministic)."""
        server = tree_cpu_seconds(self.server_pids) if self.server_pids else None
        cpu, wall = time.process_time(), time.perf_counter()
        mu, sent = self.step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if server is not None:
            server = tree_cpu_seconds(self.server_pids) - server
        if len(mu) != count or not np.isfinite(mu).all():
            raise RlStepError(f"{self.name}: {len(mu)} scores for {count} images, or some are not finite")
        self.mu = np.asarray(mu, dtype=np.float64)
        if sent is not None:
            self.wire_bytes = sent
        return {"wall_s": wall, "client_cpu_s": cpu, "server_cpu_s": server}

    def summary(self, count: int) -> dict:
        rates = [count / r["wall_s"] for r in self.rounds]
        server = [r["server_cpu_s"] for r in self.rounds if r["server_cpu_s"] is not None]
        return {
            "route": self.name,
            "setting": self.setting,
            "images_per_s": statistics.median(rates),
            "rounds_images_per_s": rates,
            "client_cpu_ms_per_image": 1000 * statistics.median(r["client_cpu_s"] for r in self.rounds) / count,
            "server_cpu_ms_per_image": 1000 * statistics.median(server) / count if server else None,
            "wire_bytes_per_image": None if self.wire_bytes is None else self.wire_bytes / count,
        }


# -- the routes ----------------------------------------------------------------------------------------------


def model_files(args: argparse.Namespace) -> tuple[Path | None, Path | None, Path | None]:
    """(checkpoint, base, artifacts) from the explicit options, else from --tiny."""
    tiny = args.tiny
    checkpoint = args.checkpoint or (tiny / "HPSv3-tiny.safetensors" if tiny else None)
    base = args.base or (tiny / "base" if tiny else None)
    artifacts = args.artifacts or (tiny / "onnx" if tiny else None)
    return checkpoint, base, artifacts


def start_triton(args: argparse.Namespace, stack: ExitStack) -> tuple[str, int]:
    """tritonserver on loopback ports, serving the CPU repository of the export (made first when missing)."""
    from hpsv3_repository.build import render, settings_for
    from hpsv3_repository.launcher import TritonServer, free_port

    checkpoint, base, artifacts = model_files(args)
    if not (artifacts / "manifest.json").is_file():
        from hpsv3_export.onnx_export import export_onnx

        log(f"exporting {checkpoint} to {artifacts}")
        export_onnx(checkpoint, base, artifacts)
    repository = render("cpu", settings_for(artifacts), args.output / "repository")
    server = TritonServer(repository, grpc_port=free_port(), http_port=free_port(), metrics_port=None,
                          workdir=args.output / "triton")  # fmt: skip
    log("starting tritonserver")
    server.start(timeout_s=300)
    stack.callback(server.stop)
    return server.grpc_url, server.pid


def start_reward_server(args: argparse.Namespace, stack: ExitStack) -> tuple[str, int]:
    """The re-created reward server under gunicorn: the official inferencer from --official-venv, or the stand-in."""
    checkpoint, base, _ = model_files(args)
    python = args.official_venv / "bin" / "python" if args.reward_scorer == "official" else Path(sys.executable)
    if not python.is_file():
        raise RlStepError(
            f"no {python}: build the official venv with `make .venv-official/.installed`, or pass "
            "--reward-scorer project (a stand-in, not the baseline)"
        )
    if subprocess.run([str(python), "-c", "import flask, gunicorn"], capture_output=True).returncode:
        raise RlStepError(
            f"{python} lacks flask or gunicorn: `{python.parent / 'pip'} install flask==3.1.0 gunicorn==23.0.0` "
            "(the Makefile's official venv has them)"
        )
    server = RewardServer(python, args.reward_scorer, checkpoint, base, args.output / "reward-server.log")
    log(f"starting the reward server ({args.reward_scorer} scorer, {python})")
    server.start()
    stack.callback(server.stop)
    return server.url, server.pid


def client_routes(
    args: argparse.Namespace, stack: ExitStack, url: str, pid: int | None, arrays: list, prompts: list
) -> list[Route]:
    """The patches and file-bytes routes: one `HPSv3Reward` (its channels kept between steps, as in training)."""
    from hpsv3_client.reward import HPSv3Reward

    reward = HPSv3Reward(url, model=args.model, concurrency=args.concurrency, timeout_s=args.timeout)
    stack.callback(reward.close)
    pids = [pid] if pid else []
    setting = f"concurrency {args.concurrency}"

    def patches() -> tuple[np.ndarray, None]:
        return reward(arrays, prompts)[1]["mu"], None

    def files() -> tuple[np.ndarray, None]:
        return reward([ppm_bytes(array) for array in arrays], prompts)[1]["mu"], None

    sent = sum(grpc_request_bytes(args.model, a, p) for a, p in zip(arrays, prompts, strict=True))
    sent_files = sum(grpc_request_bytes(args.model, ppm_bytes(a), p) for a, p in zip(arrays, prompts, strict=True))
    return [Route(PATCHES, setting, patches, pids, sent), Route(FILES, setting, files, pids, sent_files)]


def sweep_reward_server(url: str, arrays: list, prompts: list, sizes: list[int]) -> list[dict]:
    """One step at each client batch size (= the server's batch: the app scores a request as one batch)."""
    reward_server_fn(url, sizes[0], RETRIES)(arrays[: sizes[0]], prompts[: sizes[0]])  # warm-up
    found = []
    for size in tqdm(sizes, desc="reward-server batch sizes", unit="size", disable=None):
        started = time.perf_counter()
        reward_server_fn(url, size, RETRIES)(arrays, prompts)
        found.append({"batch_size": size, "images_per_s": len(arrays) / (time.perf_counter() - started)})
    return found


def in_process_scorer(args: argparse.Namespace) -> tuple[object, str]:
    """`Scorer` on the export (ONNX Runtime, the server's graphs) when there is one, else on the checkpoint (torch)."""
    from hpsv3_serve.scorer import Scorer

    checkpoint, base, artifacts = model_files(args)
    if artifacts is not None and (artifacts / "manifest.json").is_file():
        from hpsv3_serve.engines.onnx_engine import BASE_DIR

        onnx = Scorer.from_pretrained(
            base=artifacts / BASE_DIR, batch_size=args.scorer_batch_size, backend="onnx", folder=artifacts
        )
        return onnx, "onnxruntime"
    return Scorer.from_pretrained(checkpoint, base, batch_size=args.scorer_batch_size), "torch"


# -- the run -------------------------------------------------------------------------------------------------


def build_routes(
    args: argparse.Namespace, stack: ExitStack, arrays: list, prompts: list, result: dict
) -> tuple[list[Route], Callable | None]:
    """Start what is not running yet and set up each route not in --skip (the reward server's batch size swept
    first); also the in-process scorer, when there is one, for the JPEG-alone scores."""
    routes: list[Route] = []
    if {PATCHES, FILES} - set(args.skip):
        url, pid = (args.endpoint, None) if args.endpoint else start_triton(args, stack)
        result["endpoint"] = url
        routes += [r for r in client_routes(args, stack, url, pid, arrays, prompts) if r.name not in args.skip]
    if REWARD_SERVER not in args.skip:
        url, pid = (args.reward_server, None) if args.reward_server else start_reward_server(args, stack)
        sweep = sweep_reward_server(url, arrays, prompts, args.batch_sizes)
        best = max(sweep, key=lambda found: found["images_per_s"])["batch_size"]
        result["reward_server"] = {"url": url, "scorer": args.reward_scorer if pid else "running server",
                                   "sweep": sweep, "best_batch_size": best}  # fmt: skip
        call = reward_server_fn(url, best, RETRIES)

        def reward_server_step() -> tuple[list[float], int]:
            scores, info = call(arrays, prompts)
            return scores, info["request_bytes"]

        routes.append(Route(REWARD_SERVER, f"batch {best}", reward_server_step, [pid] if pid else []))
    if IN_PROCESS not in args.skip:
        scorer, engine = in_process_scorer(args)
        stack.callback(scorer._pool.shutdown, wait=False)
        routes.append(Route(IN_PROCESS, f"{engine}, batch {args.scorer_batch_size}",
                            lambda: (scorer(arrays, prompts), 0)))  # fmt: skip
        return routes, scorer
    return routes, None


def run_rl_step(args: argparse.Namespace) -> Report:
    """Set up the routes, time their steps, compare their scores; the report of `hpsv3 bench rl-step`."""
    from .throughput import machine_facts

    arrays = make_arrays(args.count, args.seed, args.min_side, args.max_side)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.count)]
    loadavg = os.getloadavg()
    result: dict = {"task": "rl-step", "count": args.count, "seed": args.seed, "sides": [args.min_side, args.max_side],
                    "prompts": len(set(prompts)), "repeats": args.repeats, "skipped": args.skip}  # fmt: skip
    with ExitStack() as stack:
        try:
            routes, scorer = build_routes(args, stack, arrays, prompts, result)
            log(f"{len(routes)} routes: one warm-up step each, then {args.repeats} rounds, the routes taking turns")
            steps = [(False, route) for route in routes] + [(True, r) for _ in range(args.repeats) for r in routes]
            for timed, route in tqdm(steps, desc="RL steps", unit="step", disable=None):
                measured = route.run(args.count)
                if timed:
                    route.rounds.append(measured)
        except requests.RequestException as exc:
            raise RlStepError(
                f"the reward server failed: {exc}; its log (when started here): {args.output / 'reward-server.log'}"
            ) from exc
        decoded = [jpeg_roundtrip(array) for array in arrays] if scorer else None
        jpeg_mu = np.asarray(scorer(decoded, prompts), dtype=np.float64) if scorer else None
    result.update(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=machine_facts() | {"loadavg_before": loadavg, "loadavg_after": os.getloadavg()},
        routes=[route.summary(args.count) for route in routes],
        scores=score_differences(routes, jpeg_mu),
    )
    result["goal"] = goal(result)
    result["run"] = {"endpoint": result.get("endpoint")}
    return Report("rl-step", result, markdown(result))


def _differences(mu: np.ndarray, reference: np.ndarray) -> dict:
    delta = np.abs(mu - reference)
    return {"max_abs_dmu": float(delta.max()), "mean_abs_dmu": float(delta.mean())}


def score_differences(routes: list[Route], jpeg_mu: np.ndarray | None) -> dict:
    """|Δmu| of every route (and of JPEG alone) against the exact scores: in-process, else the patches route."""
    by_name = {route.name: route for route in routes}
    reference = by_name.get(IN_PROCESS) or by_name.get(PATCHES)
    if reference is None:
        return {}
    found = {"reference": reference.name, "mu_std": float(reference.mu.std()),
             "mu_range": [float(reference.mu.min()), float(reference.mu.max())],
             "routes": {route.name: _differences(route.mu, reference.mu) for route in routes}}  # fmt: skip
    if jpeg_mu is not None:
        found["jpeg_only"] = _differences(jpeg_mu, reference.mu)
    return found


def goal(result: dict) -> dict:
    """Each route's images/s against the reward-server route's; the issue's goal for patches."""
    rates = {route["route"]: route["images_per_s"] for route in result["routes"]}
    baseline = rates.get(REWARD_SERVER)
    for route in result["routes"]:
        route["ratio_to_reward_server"] = route["images_per_s"] / baseline if baseline else None
    if not baseline or PATCHES not in rates:
        return {}
    official = result["reward_server"]["scorer"] != "project"
    ratio = rates[PATCHES] / baseline
    return {"patches_over_reward_server": ratio, "target": GOAL, "met": ratio >= GOAL if official else None}


# -- the report ----------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _small(value: float | None) -> str:
    return "—" if value is None else "0" if value == 0 else f"{value:.1e}"


def markdown(result: dict) -> str:
    differences = result.get("scores", {}).get("routes", {})
    rows = []
    for route in result["routes"]:
        delta = differences.get(route["route"], {})
        rates = route["rounds_images_per_s"]
        rows.append([
            route["route"], route["setting"], _number(route["images_per_s"], 2),
            f"{min(rates):.1f}–{max(rates):.1f}", _number(route["client_cpu_ms_per_image"]),
            _number(route["server_cpu_ms_per_image"]),
            _number(route["wire_bytes_per_image"] and route["wire_bytes_per_image"] / 1000),
            _number(route["ratio_to_reward_server"], 2) + ("×" if route["ratio_to_reward_server"] else ""),
            _small(delta.get("max_abs_dmu")), _small(delta.get("mean_abs_dmu")),
        ])  # fmt: skip
    sides = "–".join(map(str, result["sides"]))
    lines = [
        f"# One RL step: {result['count']} uint8 arrays → rewards ({result['date']})", "",
        f"{result['count']} arrays of sides {sides} px (seed {result['seed']}), {result['prompts']} prompts. Each "
        f"route: one warm-up step, then {result['repeats']} timed, the routes taking turns; the median is shown.", "",
        *table(["route", "setting", "images/s", "range", "client CPU ms/img", "server CPU ms/img", "kB/img on the wire",
                "× reward-server", "max \\|Δmu\\|", "mean \\|Δmu\\|"], rows, numeric_from=2),
    ]  # fmt: skip
    lines += _notes(result)
    return "\n".join(lines) + "\n"


def _notes(result: dict) -> list[str]:
    lines = [""]
    served = result.get("reward_server")
    if served:
        swept = ", ".join(f"{s['batch_size']}: {s['images_per_s']:.2f}" for s in served["sweep"])
        stand_in = " (a STAND-IN: this project's Scorer, not the official inferencer)"
        lines.append(
            f"- Reward server: {served['scorer']} scorer{stand_in if served['scorer'] == 'project' else ''}; "
            f"images/s by batch size (one step each): {swept}; best {served['best_batch_size']}."
        )
    scores = result.get("scores")
    if scores:
        jpeg = scores.get("jpeg_only")
        lines.append(f"- |Δmu| against {scores['reference']}; mu over the step: std {scores['mu_std']:.3f}, range "
                     f"{scores['mu_range'][0]:.3f} to {scores['mu_range'][1]:.3f}."
                     + (f" JPEG alone (in-process on the decoded JPEGs): max {_small(jpeg['max_abs_dmu'])}, mean "
                        f"{_small(jpeg['mean_abs_dmu'])}." if jpeg else ""))  # fmt: skip
    reached = result.get("goal")
    if reached:
        verdict = {True: "met", False: "NOT met", None: "not judged (stand-in scorer)"}[reached["met"]]
        lines.append(f"- Goal: patches ≥ {reached['target']:g}× the reward-server route: "
                     f"{reached['patches_over_reward_server']:.2f}×, {verdict}.")  # fmt: skip
    machine = result["machine"]
    lines.append(f"- Machine: {machine['cpus_usable']} usable cores ({machine['cpu_model']}), Python "
                 f"{machine['python']}, checkout {machine['git']}; load average before "
                 f"{machine['loadavg_before'][0]:.2f}, after {machine['loadavg_after'][0]:.2f}.")  # fmt: skip
    return lines


# -- the command line ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,2,4,8, got {text!r}")
    return sizes


def _route(text: str) -> str:
    if text not in ROUTES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a route; choose from {', '.join(ROUTES)}")
    return text


def add_arguments(task: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    model = task.add_argument_group("the model (servers not given are started from it)")
    model.add_argument(
        "--tiny",
        type=Path,
        metavar="DIR",
        help="`hpsv3 make-tiny DIR` output: the checkpoint, base/ and the export in DIR/onnx (exported on first use)",
    )
    model.add_argument("--checkpoint", type=Path, help="HPSv3 .safetensors (default: from --tiny)")
    model.add_argument("--base", type=Path, help="Qwen2-VL base folder (default: from --tiny)")
    model.add_argument("--artifacts", type=Path, metavar="DIR", help="`hpsv3 export` folder (default: TINY/onnx)")
    served = task.add_argument_group("the reward server")
    served.add_argument(
        "--reward-server", metavar="URL", help="a running re-created reward server (default: start one)"
    )
    served.add_argument(
        "--reward-scorer",
        choices=["official", "project"],
        default="official",
        help="official: HPSv3RewardInferencer in --official-venv, the baseline; project: this project's Scorer in "
        "this venv, a stand-in that tests the protocol where the official venv is absent (default official)",
    )
    served.add_argument(
        "--official-venv",
        type=Path,
        default=REPO / ".venv-official",
        metavar="DIR",
        help="venv with hpsv3==1.0.0, flask and gunicorn: `make .venv-official/.installed` (default .venv-official)",
    )
    served.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=[1, 2, 4, 8, 16],
        metavar="B1,B2,...",
        help="reward-server batch sizes to sweep, one step each; the best is measured (default 1,2,4,8,16)",
    )
    step = task.add_argument_group("the step")
    step.add_argument("--count", type=positive, default=64, help="images in the step (default 64)")
    step.add_argument("--min-side", type=positive, default=512, help="smallest image side, px (default 512)")
    step.add_argument("--max-side", type=positive, default=1024, help="largest image side, px (default 1024)")
    step.add_argument("--seed", type=int, default=0, help="seed of the images (default 0)")
    step.add_argument("--repeats", type=positive, default=3, help="timed steps per route; the median (default 3)")
    step.add_argument("--scorer-batch-size", type=positive, default=8, help="in-process Scorer batch (default 8)")
    step.add_argument(
        "--skip",
        type=_route,
        action="append",
        default=[],
        metavar="ROUTE",
        help=f"leave a route out ({', '.join(ROUTES)}); repeatable",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the routes need: a model to start servers from, or running servers; a model for in-process."""
    checkpoint, base, artifacts = model_files(args)
    if args.min_side > args.max_side:
        parser.error(f"--min-side {args.min_side} is above --max-side {args.max_side}")
    if {PATCHES, FILES} - set(args.skip) and not args.endpoint and artifacts is None:
        parser.error("rl-step: pass --endpoint HOST:PORT (a running server) or --tiny DIR / --artifacts DIR "
                     "(start one here)")  # fmt: skip
    if REWARD_SERVER not in args.skip and not args.reward_server and (checkpoint is None or base is None):
        parser.error("rl-step: pass --reward-server URL (a running one), or --tiny DIR / --checkpoint and --base "
                     "(start one here), or --skip reward-server")  # fmt: skip
    if IN_PROCESS not in args.skip and artifacts is None and (checkpoint is None or base is None):
        parser.error("rl-step: the in-process route needs --tiny, --artifacts or --checkpoint and --base "
                     "(or --skip in-process)")  # fmt: skip
