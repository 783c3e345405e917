"""Container entrypoint: make HPSv3 servable from a cache volume, then run tritonserver.

    python -m hpsv3_repository.entrypoint                  # in the image (docker/entrypoint.sh runs this)
    python -m hpsv3_repository.entrypoint --print-command  # every step, then print the server command
    python -m hpsv3_repository.entrypoint --target cpu --checkpoint C --base B --cache DIR   # CPU, no image

Each start, under --cache (a volume; replicas sharing it take turns through a lock file):

  1. resolve --checkpoint and --base: hub ids (HF_TOKEN for gated or private repos; --revision and
     --base-revision pin them) or mounted paths
  2. CACHE/serve/onnx          ONNX export, redone only when the source content hash changes (as `hpsv3 serve`)
  3. CACHE/serve/vllm          gpu: the vLLM folder, same rule (linked as serve/onnx/vllm)
  4. CACHE/serve/onnx/tensorrt gpu: TensorRT engines (`python export/tensorrt.py`), built on first start and
                               again whenever its engines.json differs: source graphs, precision, batch size,
                               TensorRT version, GPU model
  5. CACHE/serve/judges/NAME   cpu: each judge of --models exported to ONNX (as `hpsv3 serve`, redone when
                               its sources change); on gpu the judges run their torch models on the GPU, no export
  6. --repository              the Triton repository rendered for the target (pod-local, never shared; by
                               default a new private directory, mkdtemp, for each start)

With --engine torch ($HPSV3_ENGINE) the gpu target serves the fast torch engine on the checkpoint itself: steps
2-5 are skipped (no export, no engine build), only step 1 and 6 run.

then run tritonserver (the image's for gpu, nvidia-pytriton's for cpu) with every model loaded under explicit
model control, and a watchdog that reloads a Python-backend model whose stub process died (as `hpsv3 serve`
does; Triton itself would only fail its requests); SIGTERM stops it cleanly. The control APIs (load, unload,
index, shared memory, trace, logging) need the header hpsv3-admin-key: a random key per start that only
this process holds, or the operator's (--admin-key-file). The server binds --host, 0.0.0.0
by default: inside a container the published ports (docker -p, a Kubernetes Service) decide who reaches it.
Health: GET :8000/v2/health/ready (all models loaded) and /v2/health/live; metrics on :8002/metrics.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hpsv3_export.tensorrt_build import PRECISIONS
from hpsv3_export.tensorrt_host import (
    RECORD,
    Gpu,
    TensorRTUnavailable,
    engines_are_current,
    require_gpu,
    require_tensorrt,
)
from hpsv3_serve.checkpoint import resolve_base, resolve_checkpoint
from hpsv3_serve.defaults import DEFAULT_BASE, DEFAULT_CHECKPOINT, DEFAULT_MAX_BATCH_SIZE, cache_dir
from hpsv3_serve.errors import HPSv3Error

from .admin import read_admin_key
from .allocator import CHOICES
from .build import (
    ENGINES_DIR,
    TARGET_ENGINES,
    TARGETS,
    VLLM_DIR,
    parse_judges,
    render,
    settings_for,
    settings_for_checkpoint,
)
from .launcher import TritonServer
from .serve import serve_forever

ENGINES = ("vision_encoder", "reward_head")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib")
Say = Callable[[str], None]


class DeployError(HPSv3Error):
    """The container cannot serve as configured; the message says what to change."""

    code = "deploy"


def say(message: str) -> None:
    print(f"[hpsv3-entrypoint] {message}", flush=True)


@contextmanager
def locked(path: Path, report: Say = say) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waits while another replica prepares the shared cache)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for {path}: another replica is preparing this cache")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gpu_environment() -> tuple[str, Gpu]:
    """(TensorRT version, GPU) for the gpu target; DeployError lists everything that is missing here."""
    problems, version, gpu = [], "", None
    try:
        version = require_tensorrt()
    except TensorRTUnavailable as exc:
        problems.append(str(exc))
    if importlib.util.find_spec("vllm") is None:
        problems.append("vLLM is not installed (the language tower runs in it)")
    try:
        gpu = require_gpu()
    except TensorRTUnavailable as exc:
        problems.append(f"{exc} (docker run --gpus ..., or request nvidia.com/gpu)")
    if problems:
        raise DeployError(
            "the gpu target cannot start here: " + "; ".join(problems) + ". Use the image built from "
            "the repository's Dockerfile (docker build .; README, GPU deployment), or --target cpu to serve with "
            "ONNX Runtime on CPU."
        )
    return version, gpu


def tensorrt_requirement(library_dirs: tuple[str, ...] = LIBRARY_DIRS, cuda: str | None = None) -> str:
    """The pip requirement for TensorRT's Python package matching the image's libnvinfer (the runtime Triton's
    TensorRT backend loads): a plan only loads in the TensorRT version that built it."""
    versions = sorted(
        {
            match.group(1)
            for folder in library_dirs
            for path in Path(folder).glob("libnvinfer.so.*")
            if (match := re.fullmatch(r"libnvinfer\.so\.(\d+\.\d+\.\d+)", path.name))
        }
    )
    if len(versions) != 1:
        raise DeployError(f"expected one libnvinfer.so.X.Y.Z in {', '.join(library_dirs)}, found {versions or 'none'}")
    cuda = cuda or os.environ.get("CUDA_VERSION", "")
    if not re.match(r"\d+\.", cuda):
        raise DeployError("CUDA_VERSION is not set (NVIDIA's images set it): cannot pick tensorrt-cu12 or -cu13")
    return f"tensorrt-cu{cuda.split('.')[0]}=={versions[0]}.*"


def build_engines(artifacts: Path, precision: str, max_batch_size: int, calibration_images: Path | None) -> None:
    """Run the TensorRT builder (`python export/tensorrt.py`) in its own process, so that its GPU memory is
    freed before Triton starts."""
    builder = "import sys; from hpsv3_export.tensorrt_build import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", builder, "--onnx", str(artifacts), "--precision", precision,
               "--max-batch-size", str(max_batch_size)]  # fmt: skip
    if calibration_images is not None:
        command += ["--calibration-images", str(calibration_images)]
    if subprocess.run(command, check=False).returncode != 0:
        raise DeployError(
            "building the TensorRT engines failed (see above); fix the cause and restart, or build them by hand "
            f"with `python export/tensorrt.py --onnx {artifacts} --precision {precision}`"
        )


def _head_batch(folder: Path) -> int | None:
    """The largest reward_head batch the recorded engines were built for."""
    try:
        return json.loads((folder / RECORD).read_text())["engines"]["reward_head"]["profile"]["_HIDDEN"][-1][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def ensure_engines(artifacts: Path, tensorrt: str, gpu: Gpu, args: argparse.Namespace, report: Say = say) -> Path:
    """ARTIFACTS/tensorrt holding engines for these graphs, this TensorRT, GPU model, precision and batch size;
    built when it does not (its engines.json, written by the builder, says what they were built for)."""
    folder = artifacts / ENGINES_DIR
    sources = {name: artifacts / f"{name}.onnx" for name in ENGINES}
    what = f"{args.precision}, TensorRT {tensorrt}, {gpu.name}, batch {args.max_batch_size}"

    def current() -> bool:
        return engines_are_current(folder, tensorrt, gpu, args.precision, sources) and (
            _head_batch(folder) == args.max_batch_size
        )

    if current():
        report(f"reusing TensorRT engines in {folder} ({what})")
        return folder
    report(f"building TensorRT engines in {folder} ({what}) ...")
    (folder / RECORD).unlink(missing_ok=True)  # the builder skips a build its record calls current
    build_engines(artifacts, args.precision, args.max_batch_size, args.calibration_images)
    if not current():
        raise DeployError(f"the TensorRT builder finished, but {folder} does not hold engines for ({what})")
    return folder


def _link(link: Path, target: Path) -> None:
    """Make `link` a relative symlink to `target` (the volume may be mounted elsewhere); kept when it already is."""
    relative = os.path.relpath(target.resolve(), link.parent.resolve())
    if link.is_symlink() and os.readlink(link) == relative:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(relative)


def prepare(args: argparse.Namespace, report: Say = say) -> Path:
    """Steps 1-6 (see the module doc); returns the rendered repository."""
    from hpsv3_export.vllm_export import ensure_vllm_folder

    from .serve import ensure_artifacts, export_judges

    judges = parse_judges(args.models, args.judge_weights, args.judge_base)  # before any download

    torch_engine = args.target == "gpu" and args.engine == "torch"
    if torch_engine:
        _require_gpu()  # fail before a 17 GB download
    environment = gpu_environment() if args.target == "gpu" and not torch_engine else None
    args.cache.mkdir(parents=True, exist_ok=True)
    with locked(args.cache / ".lock", report):
        checkpoint = resolve_checkpoint(args.checkpoint, revision=args.revision)
        base = resolve_base(args.base, args.base_revision)
        args.repository = args.repository or private_repository()  # make_server puts its workdir beside it
        overrides: dict = {
            "max_batch_size": args.max_batch_size, "preprocess_instances": args.instances, "rewards": args.rewards
        }  # fmt: skip
        if torch_engine:
            settings = settings_for_checkpoint(checkpoint, base, **overrides)
            repository = render("gpu", settings, args.repository, "torch", judges=judges)
            report(f"rendered the gpu repository (fast torch engine{_with(judges, args.rewards)}) in {repository}")
            return repository
        workdir = args.cache / "serve"
        artifacts = ensure_artifacts(checkpoint, base, workdir, report)
        if environment is not None:
            _link(artifacts / VLLM_DIR, ensure_vllm_folder(checkpoint, base, workdir, report))
            ensure_engines(artifacts, *environment, args, report)
            overrides["gpu_memory_utilization"] = args.gpu_memory_utilization
        if args.target == "cpu":
            judges = export_judges(judges, workdir, report)
        repository = render(args.target, settings_for(artifacts, **overrides), args.repository, judges=judges)
    report(f"rendered the {args.target} repository{_with(judges, args.rewards)} in {repository}")
    return repository


def _with(judges: tuple, rewards: bool) -> str:
    together = " and rewards" if rewards else ""
    return f" with {', '.join(judge.name for judge in judges)}{together}" if judges else ""


def _pairs(value: str | None) -> list[str]:
    """NAME=PATH pairs of an environment variable, separated by commas or whitespace."""
    return (value or "").replace(",", " ").split()


def _require_gpu() -> None:
    """The torch engine's only need beyond the image: a visible GPU."""
    try:
        require_gpu()
    except TensorRTUnavailable as exc:
        raise DeployError(f"--engine torch cannot start here: {exc} (docker run --gpus ..., or request "
                          "nvidia.com/gpu); or --target cpu to serve with ONNX Runtime on CPU") from None  # fmt: skip


def private_repository() -> Path:
    """A repository path in a new directory only this user can enter (mkdtemp: unguessable name, mode 0700), so
    nobody else on the host can plant or swap the files tritonserver loads; its server workdir goes beside it."""
    return Path(tempfile.mkdtemp(prefix="hpsv3-repository-")) / "repository"


def make_server(repository: Path, args: argparse.Namespace, binary: str | None = None) -> TritonServer:
    """The server for the rendered repository: every model loaded at start (explicit model control, so the stub
    watchdog can reload one), not ready until all are, exiting if one fails to load. `binary`: the image's
    tritonserver (gpu); None: nvidia-pytriton's (cpu)."""
    return TritonServer(
        repository,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        workdir=args.repository.with_name(args.repository.name + ".server"),
        explicit_models=True,
        extra_args=["--strict-readiness=true", "--exit-on-error=true", *args.tritonserver_args],
        binary=binary,
        allocator=args.allocator,
        admin_key=read_admin_key(args.admin_key_file) if args.admin_key_file else None,
    )


def tritonserver_binary() -> str:
    """The image's tritonserver (gpu target)."""
    binary = shutil.which("tritonserver")
    if binary is None:
        raise DeployError("tritonserver is not on PATH: run this in the image of the repository's Dockerfile")
    return binary


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="hpsv3-entrypoint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default=env("HPSV3_TARGET", "gpu"),
        help="gpu: TensorRT + vLLM (default, $HPSV3_TARGET); cpu: ONNX Runtime, for tests",
    )
    parser.add_argument(
        "--engine",
        choices=TARGET_ENGINES["gpu"],
        default=env("HPSV3_ENGINE", "tensorrt-vllm"),
        help="gpu: tensorrt-vllm (default: TensorRT plans + vLLM, built on first start) or torch (the fast torch "
        "engine on the checkpoint, no export or build; $HPSV3_ENGINE)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=cache_dir(),
        help="volume for exports and engines (default: $HPSV3_CACHE_DIR, which the image sets to /models/cache, "
        "else ~/.cache/hpsv3_serve)",
    )
    parser.add_argument(
        "--checkpoint",
        default=env("HPSV3_CHECKPOINT", DEFAULT_CHECKPOINT),
        help="HPSv3 .safetensors file, folder or hub id ($HPSV3_CHECKPOINT)",
    )
    parser.add_argument(
        "--base",
        default=env("HPSV3_BASE", DEFAULT_BASE),
        help="Qwen2-VL-7B-Instruct folder or hub id, config + tokenizer only ($HPSV3_BASE)",
    )
    parser.add_argument(
        "--revision",
        default=env("HPSV3_REVISION") or None,
        help="commit hash, branch or tag of a --checkpoint hub id ($HPSV3_REVISION; default: its main branch). "
        "Pin a commit hash so that every replica serves the same bytes",
    )
    parser.add_argument(
        "--base-revision",
        default=env("HPSV3_BASE_REVISION") or None,
        help="commit hash, branch or tag of a --base hub id ($HPSV3_BASE_REVISION; default: its main branch)",
    )
    parser.add_argument(
        "--models",
        default=env("HPSV3_MODELS", "hpsv3"),
        metavar="NAME[,NAME...]",
        help="reward models to serve ($HPSV3_MODELS; as `hpsv3 serve --models`): hpsv3 and any of the other reward "
        "models (README: Other reward models), each its own Triton model named as it, all together in `rewards`",
    )
    parser.add_argument(
        "--rewards",
        action=argparse.BooleanOptionalAction,
        default=env("HPSV3_REWARDS", "1") != "0",
        help="with other models: serve `rewards` too ($HPSV3_REWARDS, 1 or 0); --no-rewards serves the judges "
        "alone, without its second copy of their weights",
    )
    parser.add_argument(
        "--judge-weights",
        action="append",
        default=_pairs(env("HPSV3_JUDGE_WEIGHTS")),
        metavar="NAME=PATH",
        help="a judge's weights: file, folder or hub id (default: its hub id); repeatable ($HPSV3_JUDGE_WEIGHTS: "
        "pairs separated by commas)",
    )
    parser.add_argument(
        "--judge-base",
        action="append",
        default=_pairs(env("HPSV3_JUDGE_BASE")),
        metavar="NAME=PATH",
        help="what a judge is built on: CLIP processor / backbone (default: its hub id); repeatable "
        "($HPSV3_JUDGE_BASE: pairs separated by commas)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        help="where to render the Triton repository, the server's work files in DIR.server beside it (pod-local; "
        "default: a new private directory under $TMPDIR, hpsv3-repository-XXXXXXXX/)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=env("HPSV3_PRECISION", "bf16"),
        help="vision encoder engine precision ($HPSV3_PRECISION); the head stays fp32",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="dynamic batching limit (engines and repo)"
    )
    parser.add_argument(
        "--calibration-images",
        type=Path,
        default=env("HPSV3_CALIBRATION_IMAGES"),
        help="fp8 only: folder of typical images to calibrate on ($HPSV3_CALIBRATION_IMAGES)",
    )
    parser.add_argument("--instances", type=int, default=2, help="preprocess instances (CPU image decoding)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="vLLM's share of GPU memory")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind; 0.0.0.0 in a container (default)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP: inference, /v2/health/{ready,live}")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC: inference (hpsv3_client)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics (/metrics)")
    parser.add_argument(
        "--tritonserver",
        default=env("HPSV3_TRITONSERVER"),
        help="the tritonserver binary ($HPSV3_TRITONSERVER; default: the image's on PATH for gpu, "
        "nvidia-pytriton's for cpu)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=float(env("HPSV3_START_TIMEOUT", "1800")),
        help="seconds for tritonserver to load every model, after the export and engine build "
        "($HPSV3_START_TIMEOUT, default %(default)g)",
    )
    parser.add_argument(
        "--allocator",
        choices=CHOICES,
        default=env("HPSV3_ALLOCATOR", "auto"),
        help="malloc preloaded into tritonserver ($HPSV3_ALLOCATOR): auto = tcmalloc, which the image ships and "
        "Triton recommends for memory that stays flat under load (with the image's tritonserver its Python "
        "stubs inherit it), else glibc",
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        default=env("HPSV3_ADMIN_KEY_FILE"),
        help="file holding the key of the control APIs (load, unload, index, shared memory, trace, logging), "
        "sent as header hpsv3-admin-key ($HPSV3_ADMIN_KEY_FILE, e.g. a mounted Kubernetes Secret); default: a random "
        "key per start that only this entrypoint holds",
    )
    parser.add_argument("--print-command", action="store_true", help="prepare everything, print the server command")
    parser.add_argument(
        "--tensorrt-requirement",
        action="store_true",
        help="print the pip requirement of TensorRT matching the image's libnvinfer",
    )
    parser.add_argument("tritonserver_args", nargs="*", metavar="-- TRITONSERVER_ARG", help="passed to tritonserver")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.tensorrt_requirement:  # used by the Dockerfile
            print(tensorrt_requirement())
            return 0
        repository = prepare(args)
        if args.print_command:
            print(" ".join(["tritonserver", *make_server(repository, args).arguments(redacted=True)]))
            return 0
        binary = args.tritonserver or (tritonserver_binary() if args.target == "gpu" else None)
        server = make_server(repository, args, binary)
        return serve_forever(server, say, start_timeout_s=args.start_timeout)
    except HPSv3Error as exc:
        print(f"hpsv3-entrypoint: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
