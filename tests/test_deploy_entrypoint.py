"""The container entrypoint on CPU: cache reuse, the GPU steps' refusals, and a real CPU start via the shell script."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from hpsv3_client import HPSv3Client
from hpsv3_export import tensorrt_build
from hpsv3_export.tensorrt_host import Gpu
from hpsv3_repository import entrypoint
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_repository.processes import python_stubs
from hpsv3_serve.errors import HPSv3Error

from .conftest import HUB_BASE, HUB_CHECKPOINT, HUB_COMMIT, HUB_TAG, IMAGES, TOY_REPOSITORY

ROOT = Path(__file__).resolve().parent.parent
TENSORRT = "10.16.0.1"
H100, L40S = Gpu("NVIDIA H100 80GB HBM3", "9.0", "580.65"), Gpu("NVIDIA L40S", "8.9", "580.65")


@pytest.fixture
def cache(tmp_path: Path, tiny_artifacts: Path) -> Path:
    """A cache volume already holding the tiny model's ONNX export (as after a first start)."""
    shutil.copytree(tiny_artifacts, tmp_path / "cache" / "serve" / "onnx")
    return tmp_path / "cache"


def _args(cache: Path, tiny: Path, checkpoint: Path, target: str, *extra: str) -> list[str]:
    return ["--target", target, "--cache", str(cache), "--checkpoint", str(checkpoint), "--base", str(tiny / "base"),
            "--repository", str(cache.parent / "repository"), *extra]  # fmt: skip


def test_gpu_start_builds_engines_once_then_reuses_everything(
    cache: Path, tiny: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The real builder's bookkeeping (export/tensorrt_build.build_all, engines.json) with TensorRT itself faked."""
    gpu, builds = [H100], []

    def fake_build(artifacts: Path, precision: str, max_batch_size: int, calibration_images: Path | None) -> None:
        builds.append(precision)
        tensorrt_build.build_all(artifacts, artifacts / "tensorrt", precision, max_batch_size, calibration_images)

    monkeypatch.setattr(entrypoint, "gpu_environment", lambda: (TENSORRT, gpu[0]))
    monkeypatch.setattr(entrypoint, "build_engines", fake_build)
    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: TENSORRT)
    monkeypatch.setattr(tensorrt_build, "require_gpu", lambda: gpu[0])
    monkeypatch.setattr(tensorrt_build, "build_engine", lambda *_: b"plan")
    args = _args(cache, tiny, tiny_checkpoint, "gpu", "--print-command")

    assert entrypoint.main(args) == 0
    first = capsys.readouterr().out
    assert "reusing ONNX artifacts" in first and "exporting the vLLM model folder" in first
    assert "building TensorRT engines" in first and builds == ["bf16"]
    command = first.strip().splitlines()[-1].split()
    repository = cache.parent / "repository"
    assert command[:2] == ["tritonserver", f"--model-repository={repository}"]
    for flag in ("--http-address=0.0.0.0", "--grpc-port=8001", "--metrics-port=8002", "--exit-on-error=true",
                 "--model-control-mode=explicit", "--load-model=*"):  # fmt: skip
        assert flag in command
    plan = repository / "vision_encoder" / "1" / "model.plan"
    assert plan.resolve() == (cache / "serve" / "onnx" / "tensorrt" / "vision_encoder.plan").resolve()
    assert (cache / "serve" / "onnx" / "vllm" / "tower" / "config.json").is_file()
    assert os.readlink(cache / "serve" / "onnx" / "vllm") == "../vllm"

    assert entrypoint.main(args) == 0  # second start: nothing exported or built again
    second = capsys.readouterr().out
    assert "reusing TensorRT engines" in second and "exporting" not in second and builds == ["bf16"]

    gpu[0] = L40S  # another GPU model, precision or batch size: rebuilt
    assert entrypoint.main([*args, "--precision", "fp16", "--", "--log-verbose=1"]) == 0
    third = capsys.readouterr().out
    assert "building TensorRT engines" in third and builds == ["bf16", "fp16"]
    assert third.strip().endswith("--log-verbose=1")  # arguments after -- go to tritonserver
    assert entrypoint.main([*args, "--precision", "fp16", "--max-batch-size", "8"]) == 0
    assert builds == ["bf16", "fp16", "fp16"]


def test_hub_revisions_come_from_the_environment(cache: Path, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSV3_REVISION", HUB_TAG)
    monkeypatch.setenv("HPSV3_BASE_REVISION", HUB_COMMIT)
    argv = ["--target", "cpu", "--cache", str(cache), "--checkpoint", HUB_CHECKPOINT, "--base", HUB_BASE,
            "--repository", str(cache.parent / "repository")]  # fmt: skip
    said: list[str] = []
    entrypoint.prepare(entrypoint.build_parser().parse_args(argv), said.append)
    assert "reusing ONNX artifacts" in said[0]  # the hub copy holds the same bytes as the local tiny model
    monkeypatch.setenv("HPSV3_REVISION", "v2")
    with pytest.raises(HPSv3Error, match=rf"at revision 'v2'.*hf download {HUB_CHECKPOINT} --revision v2"):
        entrypoint.prepare(entrypoint.build_parser().parse_args(argv))


def test_default_repository_is_a_new_private_directory(
    cache: Path, tiny: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --repository each start renders into a new directory only this user can enter (no fixed, guessable
    path in a shared /tmp), the server's work files beside the repository in it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp creates it
    argv = ["--target", "cpu", "--cache", str(cache), "--checkpoint", str(tiny_checkpoint), "--base",
            str(tiny / "base")]  # fmt: skip
    args = entrypoint.build_parser().parse_args(argv)
    repository = entrypoint.prepare(args, lambda _: None)
    private = repository.parent
    assert private.parent == tmp_path and private.name.startswith("hpsv3-repository-")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and (repository / "hpsv3" / "config.pbtxt").is_file()
    assert entrypoint.make_server(repository, args).workdir.parent == private
    again = entrypoint.prepare(entrypoint.build_parser().parse_args(argv), lambda _: None)
    assert again.parent != private  # another start, another directory


def test_gpu_target_refuses_here_and_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = entrypoint.main(["--target", "gpu", "--cache", str(tmp_path), "--checkpoint", "MizzenAI/HPSv3"])
    error = capsys.readouterr().err
    assert code == 2
    for needed in (
        "TensorRT is not installed",
        "vLLM is not installed",
        "NVIDIA GPU",
        "Dockerfile (docker build .",
        "--target cpu",
    ):
        assert needed in error
    assert not (tmp_path / "serve").exists()  # refused before any download or export


def test_torch_engine_renders_from_the_checkpoint_without_export_or_build(
    tmp_path: Path, tiny: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """$HPSV3_ENGINE=torch: a GPU is all it needs; no ONNX export, no vLLM folder, no TensorRT build."""
    args = ["--target", "gpu", "--cache", str(tmp_path / "cache"), "--checkpoint", str(tiny_checkpoint),
            "--base", str(tiny / "base"), "--repository", str(tmp_path / "repository")]  # fmt: skip
    monkeypatch.setenv("HPSV3_ENGINE", "torch")
    assert entrypoint.main(args) == 2 and "--engine torch cannot start here" in capsys.readouterr().err
    monkeypatch.setattr(entrypoint, "require_gpu", lambda: H100)
    repository = entrypoint.prepare(entrypoint.build_parser().parse_args(args), lambda _: None)
    assert (repository / "reward_model" / "config.pbtxt").is_file() and not (repository / "vision_encoder").exists()
    assert not (tmp_path / "cache" / "serve").exists()


def test_models_come_from_the_environment(
    cache: Path, tiny: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$HPSV3_MODELS (+ $HPSV3_JUDGE_WEIGHTS / $HPSV3_JUDGE_BASE) as `hpsv3 serve --models`: on cpu the CLIP judge is
    exported into the cache once (keyed as `hpsv3 serve`), on the gpu its torch model is rendered on KIND_GPU."""
    from hpsv3_serve.judges.tiny import make_tiny_judges

    judges = make_tiny_judges(tmp_path / "judges")
    monkeypatch.setenv("HPSV3_MODELS", "hpsv3,clip-h")
    monkeypatch.setenv("HPSV3_JUDGE_WEIGHTS", f"clip-h={judges / 'clip-h'}")
    said: list[str] = []
    for _ in range(2):
        args = entrypoint.build_parser().parse_args(_args(cache, tiny, tiny_checkpoint, "cpu"))
        repository = entrypoint.prepare(args, said.append)
    assert [line.split(" ", 1)[0] for line in said if "clip-h's" in line] == ["exporting", "reusing"]
    config = (repository / "clip-h" / "config.pbtxt").read_text()
    assert f'"{cache / "serve" / "judges" / "clip-h"}"' in config and (repository / "rewards").is_dir()
    assert "with clip-h and rewards" in said[-1]
    monkeypatch.setenv("HPSV3_ENGINE", "torch")
    monkeypatch.setattr(entrypoint, "require_gpu", lambda: H100)
    args = entrypoint.build_parser().parse_args(_args(tmp_path / "gpu", tiny, tiny_checkpoint, "gpu"))
    config = (entrypoint.prepare(args, lambda _: None) / "clip-h" / "config.pbtxt").read_text()
    assert "KIND_GPU" in config and str(judges / "clip-h") in config and not (tmp_path / "gpu" / "serve").exists()
    monkeypatch.setenv("HPSV3_REWARDS", "0")  # the judges alone: no second copy of their weights in `rewards`
    args = entrypoint.build_parser().parse_args(_args(tmp_path / "alone", tiny, tiny_checkpoint, "gpu"))
    said.clear()
    repository = entrypoint.prepare(args, said.append)
    assert (repository / "clip-h").is_dir() and not (repository / "rewards").exists()
    assert said[-1].startswith("rendered the gpu repository (fast torch engine with clip-h)")
    monkeypatch.delenv("HPSV3_REWARDS")
    monkeypatch.setenv("HPSV3_MODELS", "hpsv3,nope")
    with pytest.raises(HPSv3Error, match="unknown reward model 'nope'"):
        entrypoint.prepare(entrypoint.build_parser().parse_args(_args(cache, tiny, tiny_checkpoint, "cpu")))


def test_failed_engine_build_is_reported_and_not_recorded(
    tiny_artifacts: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    artifacts = tmp_path / "onnx"
    shutil.copytree(tiny_artifacts, artifacts)
    args = argparse.Namespace(precision="bf16", max_batch_size=4, calibration_images=None)
    with pytest.raises(entrypoint.DeployError, match="building the TensorRT engines failed"):
        entrypoint.ensure_engines(artifacts, TENSORRT, H100, args, lambda _: None)  # the real builder: no TensorRT
    assert "TensorRT is not installed" in capfd.readouterr().err  # the builder's own reason, shown to the operator
    assert not (artifacts / "tensorrt" / "engines.json").exists()


def test_tensorrt_requirement_matches_the_runtime_library(tmp_path: Path) -> None:
    (tmp_path / "libnvinfer.so.10.16.0").touch()
    (tmp_path / "libnvinfer.so.10").symlink_to("libnvinfer.so.10.16.0")
    assert entrypoint.tensorrt_requirement((str(tmp_path),), cuda="13.4.3") == "tensorrt-cu13==10.16.0.*"
    with pytest.raises(entrypoint.DeployError, match="CUDA_VERSION"):
        entrypoint.tensorrt_requirement((str(tmp_path),), cuda="")
    with pytest.raises(entrypoint.DeployError, match="found none"):
        entrypoint.tensorrt_requirement((str(tmp_path / "nowhere"),), cuda="13.0")


def test_replicas_sharing_a_cache_take_turns(tmp_path: Path) -> None:
    messages: list[str] = []
    entered = threading.Event()

    def second_replica() -> None:
        with entrypoint.locked(tmp_path / ".lock", messages.append):
            entered.set()

    with entrypoint.locked(tmp_path / ".lock"):
        thread = threading.Thread(target=second_replica)
        thread.start()
        time.sleep(0.3)
        assert not entered.is_set() and "another replica" in messages[0]
    thread.join(10)
    assert entered.is_set()


def test_help_teaches_the_container_settings(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        entrypoint.main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for topic in ("HF_TOKEN", "HPSV3_CACHE_DIR", "0.0.0.0", "/v2/health/ready", "--print-command"):
        assert topic in text


def _get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def _system_tritonserver(folder: Path) -> Path:
    """A stand-in for the image's /opt/tritonserver/bin/tritonserver: nvidia-pytriton's binary, started with its
    backends and libraries in place, as NVIDIA's image has them."""
    helper = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None, workdir=folder)
    binary, backends = helper._prepare()
    env = helper._environment()
    settings = " ".join(f"{name}={shlex.quote(env[name])}" for name in ("LD_LIBRARY_PATH", "PATH"))
    own = [arg for arg in helper.arguments(backends) if arg.startswith(("--backend-directory", "--cache-directory"))]
    script = folder / "tritonserver"
    script.write_text(f'#!/bin/sh\nexec env {settings} {binary} {" ".join(own)} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_cpu_target_serves_through_the_shell_entrypoint(cache: Path, tiny: Path, tiny_checkpoint: Path) -> None:
    """docker/entrypoint.sh → python -m hpsv3_repository.entrypoint → a system tritonserver (as in the image),
    its log on the container's stdout, health endpoints up; a killed Python stub is reloaded by the watchdog and
    the endpoint scores again; clean stop on SIGTERM (what `docker stop` and Kubernetes send)."""
    http, grpc = free_port(), free_port()
    ports = ["--host", "127.0.0.1", "--instances", "1", "--http-port", str(http), "--grpc-port", str(grpc),
             "--metrics-port", str(free_port()), "--tritonserver", str(_system_tritonserver(cache.parent))]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = cache.parent / "entrypoint.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(ROOT / "docker" / "entrypoint.sh"), *_args(cache, tiny, tiny_checkpoint, "cpu", *ports)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while "HPSv3 endpoint ready" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"server not ready in 150 s\n{log.read_text()}"
            time.sleep(0.5)
        for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/hpsv3/ready"):
            assert _get(f"http://127.0.0.1:{http}{path}") == 200, path
        assert "Started GRPCInferenceService" in log.read_text(), "the server's own log is on stdout"
        os.kill(python_stubs(process.pid)["preprocess"][0], signal.SIGKILL)
        while "'preprocess' is back after" not in log.read_text():
            assert time.monotonic() < deadline + 60, f"preprocess not reloaded\n{log.read_text()}"
            time.sleep(0.5)
        (result,) = HPSv3Client(f"127.0.0.1:{grpc}").score([IMAGES / "square_512.png"], "a fox")
        assert result.ok, result.error
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    output = log.read_text()
    assert process.returncode == 0, output
    assert "reusing ONNX artifacts" in output and "stopping tritonserver" in output
