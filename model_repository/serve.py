"""`hpsv3 serve`: export if needed, render the repository, run tritonserver until interrupted.

Artifacts are reused while the content hash of the checkpoint and every base file the export copies is unchanged
(`hpsv3_serve.checkpoint.source_files`); the hash itself is cached per (path, size, mtime) so a restart does not
reread 17 GB.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpsv3_export.onnx_export import export_onnx
from hpsv3_serve.checkpoint import cached_digest
from hpsv3_serve.defaults import DEFAULT_MAX_BATCH_SIZE, cache_dir
from hpsv3_serve.engines.onnx_engine import read_manifest
from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.limits import DEFAULT_LIMITS, InputLimits

from .build import JudgeSource, render, settings_for
from .launcher import GrpcTls, TritonServer
from .supervisor import StubWatchdog


@dataclass
class ServeOptions:
    """Where and how to serve; defaults bind to loopback only."""

    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    preprocess_instances: int = 2
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    limits: InputLimits = DEFAULT_LIMITS
    tls: GrpcTls | None = None
    max_queue_size: int = 512
    allocator: str = "auto"
    admin_key: str | None = None  # the operator's key for the control APIs; None: random, held by the watchdog only
    http_address: str | None = None  # None: `host`, or loopback when gRPC has TLS
    metrics_address: str | None = None
    judges: tuple[JudgeSource, ...] = ()  # served beside HPSv3, each its own model, and together in `rewards`
    rewards: bool = True  # False: no `rewards` model (saves its second copy of the judges' weights)


def current_export(artifacts: Path) -> dict:
    """The manifest of a complete, verified export in this version's format, else {} (export again). A process
    killed mid-export leaves no manifest, or one without the parity record that verification adds last."""
    try:
        manifest = read_manifest(artifacts)
    except ModelLoadError:
        return {}
    return manifest if "parity" in manifest else {}


def ensure_artifacts(checkpoint: Path, base: Path, workdir: Path, say: Callable[[str], None] = print) -> Path:
    """The ONNX artifacts for this checkpoint under `workdir/onnx`, exported when missing or stale."""
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "onnx"
    digest = cached_digest(checkpoint, base, workdir)
    if current_export(artifacts).get("source_sha256") == digest:
        say(f"reusing ONNX artifacts in {artifacts} (source unchanged)")
        return artifacts
    say(f"exporting ONNX artifacts to {artifacts} (verified against PyTorch) ...")
    parity = export_onnx(checkpoint, base, artifacts)["parity"]
    say(f"export parity: |Δmu| {parity['chain_mu']:.1e}, |Δlog_sigma| {parity['chain_log_sigma']:.1e}")
    return artifacts


def _source_key(judge: JudgeSource) -> dict:
    """What a judge's export depends on: its sources as given, and (path, size, mtime) of every local file."""
    files = []
    for spec in filter(None, (judge.weights, judge.base)):
        path = Path(spec).expanduser()
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        files += [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in found]
    return {"name": judge.name, "weights": judge.weights, "base": judge.base, "files": files}


def export_judges(
    judges: tuple[JudgeSource, ...], workdir: Path, say: Callable[[str], None] = print
) -> tuple[JudgeSource, ...]:
    """Each judge (the CLIP judges' towers, ImageReward's one graph) exported to ONNX under `workdir/judges/NAME`
    (verified against torch), reused while its sources are unchanged (hub ids: as given; pin a revision for a fixed
    download); a judge with no export as given (served on torch)."""
    import json
    from dataclasses import replace

    from hpsv3_export.judges_onnx import export_judge
    from hpsv3_serve.judges import load_judge
    from hpsv3_serve.judges.onnx_judge import CLASSES

    exported = []
    for judge in judges:
        if judge.name not in CLASSES:  # no ONNX export: its Triton model runs the torch judge
            say(f"{judge.name}: no ONNX export for it yet; served on torch (CPU, fp32)")
            exported.append(judge)
            continue
        folder, key = workdir / "judges" / judge.name, _source_key(judge)
        record = folder / "source.json"
        if record.is_file() and json.loads(record.read_text(encoding="utf-8")) == key:
            say(f"reusing {judge.name}'s ONNX graphs in {folder} (sources unchanged)")
        else:
            say(f"exporting {judge.name}'s graphs to ONNX in {folder} (verified against torch) ...")
            record.unlink(missing_ok=True)
            with load_judge(judge.name, judge.weights or None, judge.base or None) as scorer:
                export_judge(scorer.judge, folder)
            record.write_text(json.dumps(key), encoding="utf-8")  # last: a killed export is redone
        exported.append(replace(judge, onnx=str(folder)))
    return tuple(exported)


def prepare_server(checkpoint: Path, base: Path, workdir: Path, options: ServeOptions) -> TritonServer:
    """Artifacts + rendered CPU repository + a configured (not yet started) server."""
    artifacts = ensure_artifacts(checkpoint, base, workdir)
    settings = settings_for(
        artifacts,
        preprocess_instances=options.preprocess_instances,
        max_batch_size=options.max_batch_size,
        rewards=options.rewards,
        max_image_bytes=options.limits.max_image_bytes,
        max_image_pixels=options.limits.max_image_pixels,
        max_prompt_tokens=options.limits.max_prompt_tokens,
        max_prompt_bytes=options.limits.max_prompt_bytes,
        max_queue_size=options.max_queue_size,
    )
    judges = export_judges(options.judges, workdir)
    repository = render("cpu", settings, workdir / "repository", judges=judges)
    return TritonServer(
        repository,
        host=options.host,
        grpc_port=options.grpc_port,
        http_port=options.http_port,
        metrics_port=options.metrics_port,
        workdir=workdir / "server",
        explicit_models=True,
        tls=options.tls,
        allocator=options.allocator,
        admin_key=options.admin_key,
        http_address=options.http_address,
        metrics_address=options.metrics_address,
    )


def serve_forever(server: TritonServer, say: Callable[[str], None] = print, start_timeout_s: float = 180) -> int:
    """Start (every model loaded within `start_timeout_s`), print the endpoint, watch the Python-backend stubs
    (a model whose stub died is reloaded), and stop cleanly on SIGINT/SIGTERM (no orphaned stubs)."""

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    watchdog: StubWatchdog | None = None
    for warning in server.exposure_warnings():
        say(warning)
    try:
        server.start(start_timeout_s)
        watchdog = StubWatchdog(  # reloads a model whose stub died; it alone holds the per-start admin key
            server.pid, server.grpc_url, say=say, http_url=server.http_url, admin_key=server.admin_key
        )
        watchdog.start()
        say(f"HPSv3 endpoint ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}")
        say(f"tritonserver's malloc: {server.allocator_note()}")
        say(f"control APIs locked: {server.control_note()}")
        say(f"score with: hpsv3 score IMAGE --prompt TEXT --endpoint {server.grpc_url}   (Ctrl-C stops)")
        return server.wait()
    except KeyboardInterrupt:
        say("stopping tritonserver ...")
        return 0
    finally:
        if watchdog is not None:
            watchdog.stop()  # first: stubs end with the server, that is no crash
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def default_workdir() -> Path:
    """`serve/` in the cache folder (`$HPSV3_CACHE_DIR`, else ~/.cache/hpsv3_serve)."""
    return cache_dir() / "serve"
