"""The real tritonserver (from the nvidia-pytriton wheel) on the toy repository: start, serve, stop, fail clearly."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from hpsv3_client import HPSv3Client
from hpsv3_repository import allocator
from hpsv3_repository.allocator import AllocatorError
from hpsv3_repository.launcher import ServerStartError, TritonServer, free_port
from hpsv3_repository.processes import python_stubs

from .conftest import IMAGES, TOY_REPOSITORY

REPO_ROOT = Path(__file__).resolve().parent.parent
RAW_EXAMPLE = REPO_ROOT / "client" / "raw_tritonclient_example.py"
STUB = "triton_python_backend_stub"
MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"  # glibc's; inert unless MALLOC_CHECK_ is set


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid → (parent pid, process group, command line) of every live (non-zombie) process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid, pgid = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z":
            table[int(entry.name)] = (int(ppid), int(pgid), cmdline)
    return table


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def test_server_is_ready_on_loopback(toy_server: TritonServer) -> None:
    assert toy_server.grpc_url == f"127.0.0.1:{toy_server.grpc_port}"
    with urllib.request.urlopen(f"{toy_server.http_url}/v2/health/ready", timeout=5) as response:
        assert response.status == 200
    with grpcclient.InferenceServerClient(toy_server.grpc_url) as client:
        assert client.is_model_ready("hpsv3")
        config = client.get_model_config("hpsv3", as_json=True)["config"]
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config


def test_raw_tritonclient_example(toy_server: TritonServer) -> None:
    image, prompt = IMAGES / "small_200.png", "a cat, 猫"
    result = subprocess.run(
        [sys.executable, str(RAW_EXAMPLE), toy_server.grpc_url, str(image), prompt],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected_sigma = len(prompt.encode("utf-8")) + 1
    assert result.stdout.strip() == f"mu={image.stat().st_size:.4f} sigma={expected_sigma:.4f}"


def test_metrics_endpoint(toy_server: TritonServer) -> None:
    with grpcclient.InferenceServerClient(toy_server.grpc_url) as client:
        inputs = [grpcclient.InferInput(name, [1, 1], "BYTES") for name in ("IMAGE", "PROMPT")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.array([[b"abc"]], dtype=object))
        client.infer("hpsv3", inputs)
    with urllib.request.urlopen(toy_server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    assert 'nv_inference_request_success{model="hpsv3"' in text


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = TritonServer(TOY_REPOSITORY, grpc_port=port, http_port=None, metrics_port=None, workdir=tmp_path)
        with pytest.raises(ServerStartError, match=rf"grpc port {port} on 127\.0\.0\.1 is already in use.*--grpc-port"):
            server.start()
    assert not server.is_running()


def test_failing_model_reports_the_log(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(TOY_REPOSITORY, repository)
    (repository / "hpsv3" / "1" / "model.py").write_text('raise ImportError("toy model cannot load")\n')
    server = TritonServer(repository, grpc_port=free_port(), http_port=None, metrics_port=None, workdir=tmp_path)
    with pytest.raises(ServerStartError, match="exited with code") as caught:
        server.start(timeout_s=60)
    assert "toy model cannot load" in str(caught.value)
    assert str(server.log_path) in str(caught.value)


def test_stop_leaves_no_processes_behind() -> None:
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None)  # gRPC readiness
    server.start(timeout_s=120)
    pid, workdir = server.pid, server.workdir
    try:
        children = _descendants(pid)
        assert any(STUB in _processes().get(child, (0, 0, ""))[2] for child in children), "no backend stub seen"
    finally:
        server.stop()
    left = {p: row for p, row in _processes().items() if p in children | {pid} or row[1] == pid}
    assert not left, f"left behind: {left}"
    assert not workdir.exists(), "a clean stop removes its temporary work directory"
    assert not server.is_running()


def _mapped(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


def test_tritonserver_runs_with_tcmalloc_and_its_stubs_keep_glibc(toy_server: TritonServer) -> None:
    """--allocator auto: tcmalloc (`make debian-packages` installs it) is preloaded into tritonserver, which keeps
    its memory flat under load (docs/RELIABILITY.md); the Python stubs start without it, under their own name
    (the watchdog finds them by it)."""
    assert toy_server.allocator == "tcmalloc", "tcmalloc is not installed: run `make debian-packages` (as root)"
    assert _mapped(toy_server.pid, "libtcmalloc")
    stubs = python_stubs(toy_server.pid)["hpsv3"]
    assert stubs and not any(_mapped(pid, "libtcmalloc") for pid in stubs)


def test_stubs_keep_the_users_own_ld_preload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", MALLOC_DEBUG)
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None, workdir=tmp_path)
    server.start(timeout_s=120)
    try:
        (stub,) = python_stubs(server.pid)["hpsv3"]
        assert _mapped(server.pid, "libtcmalloc") and _mapped(server.pid, MALLOC_DEBUG)
        assert _mapped(stub, MALLOC_DEBUG) and not _mapped(stub, "libtcmalloc")
    finally:
        server.stop()


def test_allocator_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", MALLOC_DEBUG)
    glibc = TritonServer(TOY_REPOSITORY, allocator="glibc")
    assert glibc._environment()["LD_PRELOAD"] == MALLOC_DEBUG and "glibc" in glibc.allocator_note()
    monkeypatch.setattr(allocator, "_library_dirs", lambda: [tmp_path])  # a system without tcmalloc or jemalloc
    assert TritonServer(TOY_REPOSITORY).allocator == "glibc", "auto falls back to glibc"
    with pytest.raises(AllocatorError, match=r"--allocator jemalloc: libjemalloc\.so\.2 is not installed.*apt-get"):
        TritonServer(TOY_REPOSITORY, allocator="jemalloc")
    with pytest.raises(AllocatorError, match="choose one of auto, tcmalloc, jemalloc, glibc"):
        TritonServer(TOY_REPOSITORY, allocator="mimalloc")


def test_an_unexpected_exception_reaches_the_client_as_an_incident_id_only(toy_server: TritonServer) -> None:
    """What a model did not expect is logged with its traceback under an incident id; the client gets that id,
    no trace, path or exception repr, and the next request is served."""
    results = HPSv3Client(toy_server.grpc_url).score([b"CRASH now", b"fine"], "p")
    error = results[0].error
    match = re.fullmatch(r"<9 bytes>: hpsv3: internal error \(incident ([0-9a-f]{12}) in the server log\)", error)
    assert match, error
    assert results[1].mu == 4.0
    log = toy_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert f"hpsv3: incident {match.group(1)}:" in log and "ZeroDivisionError" in log and "model.py" in log


def test_a_source_checkout_serves_without_being_installed(tmp_path: Path) -> None:
    """The stub's Python ignores PYTHONPATH: from a checkout that is not installed, the models import
    `hpsv3_serve` and `hpsv3_repository` through the links the launcher puts in the backend folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True
    ).stdout.strip()
    (Path(venv_site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")  # a plain path: no editables
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name, folder in (("hpsv3_serve", "hpsv3_serve"), ("hpsv3_repository", "model_repository"),
                         ("hpsv3_client", "client")):  # fmt: skip
        (checkout / name).symlink_to(REPO_ROOT / folder)
    script = f"""
import importlib.util, sys
from hpsv3_client import HPSv3Client
from hpsv3_repository.launcher import TritonServer, free_port
server = TritonServer({str(TOY_REPOSITORY)!r}, grpc_port=free_port(), http_port=free_port(), metrics_port=None,
                      workdir={str(tmp_path / "triton")!r})
server.start(timeout_s=120)
try:
    print(HPSv3Client(server.grpc_url).score([{str(IMAGES / "small_200.png")!r}], "a prompt")[0].mu)
finally:
    server.stop()
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(checkout)}
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split()[-1]) == (IMAGES / "small_200.png").stat().st_size
    check = subprocess.run([python, "-c", "import hpsv3_serve"], env=env | {"PYTHONPATH": ""}, cwd=tmp_path)
    assert check.returncode != 0  # the venv itself does not have the package
