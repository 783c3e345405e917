"""The locked control plane of `hpsv3 serve`, against the real tritonserver: without the admin key nobody who
reaches the HTTP or gRPC port can load code (a model with an uploaded `model.py`), unload the service, list the
repository, register shared memory or change trace and log settings; with the operator's key (`--admin-key-file`)
they work; inference, health, metadata, configs, statistics and metrics stay open; the stub watchdog still
reloads a killed stub, and scoring is unaffected."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hpsv3_client import HPSv3Client
from hpsv3_repository.admin import ADMIN_HEADER, admin_headers
from hpsv3_repository.launcher import free_port
from hpsv3_repository.processes import python_stubs

from .conftest import IMAGES

HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
KEY = "operator-key-" + "k" * 32
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Served:
    grpc: str
    http: str
    metrics: str
    process: subprocess.Popen
    output: list[str]
    marker: Path  # what the uploaded model.py would create if it ever ran

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.output):
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.output)
            line = self.process.stdout.readline()
            assert line, "hpsv3 serve exited:\n" + "".join(self.output)
            self.output.append(line)


@pytest.fixture(scope="module")
def served(tiny: Path, tiny_checkpoint: Path, tiny_artifacts: Path, tmp_path_factory) -> Iterator[Served]:
    """`hpsv3 serve --admin-key-file` on the tiny model (reusing its verified export)."""
    workdir = tmp_path_factory.mktemp("control") / "serve"
    workdir.mkdir()
    os.symlink(tiny_artifacts, workdir / "onnx")
    key_file = workdir.parent / "admin.key"
    key_file.write_text(KEY + "\n")
    ports = [str(free_port()) for _ in range(3)]
    process = subprocess.Popen(
        [HPSV3, "serve", "--checkpoint", str(tiny_checkpoint), "--base", str(tiny / "base"), "--workdir", str(workdir),
         "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2],
         "--admin-key-file", str(key_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    served = Served(f"127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[2]}/metrics",
                    process, [], workdir.parent / "pwned")  # fmt: skip
    try:
        served.wait_for("endpoint ready", 240)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=180)
        assert process.returncode == 0, "".join(served.output) + rest


def _payload(marker: Path) -> tuple[str, bytes]:
    """A model whose code would run inside the server as soon as it is loaded: (config, model.py)."""
    config = json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0,
                         "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
                         "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]})  # fmt: skip
    code = f"open({str(marker)!r}, 'w').write('ran')\nclass TritonPythonModel:\n    pass\n"
    return config, code.encode()


def _http(served: Served, method: str, path: str, body: dict | None = None, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({ADMIN_HEADER: key} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(served.http + path, data=data, headers=headers, method=method)
    try:
        with _DIRECT.open(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _http_requests(served: Served) -> dict[str, tuple[str, str, dict | None]]:
    config, code = _payload(served.marker)
    upload = {"parameters": {"config": config, "file:1/model.py": base64.b64encode(code).decode()}}
    region = {"key": "/hpsv3_any_region", "offset": 0, "byte_size": 64}
    return {
        "index": ("POST", "/v2/repository/index", {}),
        "load a model with uploaded code": ("POST", "/v2/repository/models/evil/load", upload),
        "unload the service": ("POST", "/v2/repository/models/hpsv3/unload", {}),
        "register shared memory": ("POST", "/v2/systemsharedmemory/region/r/register", region),
        "trace settings": ("GET", "/v2/trace/setting", None),
        "change log settings": ("POST", "/v2/logging", {"log_verbose_level": 1}),
    }


def _grpc_requests(served: Served) -> dict[str, Callable[[grpcclient.InferenceServerClient, dict], object]]:
    config, code = _payload(served.marker)
    return {
        "index": lambda c, h: c.get_model_repository_index(headers=h),
        "load a model with uploaded code": lambda c, h: c.load_model(
            "evil", headers=h, config=config, files={"file:1/model.py": code}
        ),
        "unload the service": lambda c, h: c.unload_model("hpsv3", headers=h),
        "register shared memory": lambda c, h: c.register_system_shared_memory("r", "/hpsv3_any_region", 64, headers=h),
        "trace settings": lambda c, h: c.get_trace_settings(headers=h),
        "change log settings": lambda c, h: c.update_log_settings({"log_verbose_level": 1}, headers=h),
    }


def _scores(served: Served) -> list[float]:
    results = HPSv3Client(served.grpc).score([IMAGES / "small_200.png", IMAGES / "photo_800x600.jpg"], "a cat")
    assert all(result.ok for result in results), [result.error for result in results]
    return [result.mu for result in results]


@pytest.mark.parametrize("key", [None, "wrong-key-" + "w" * 30], ids=["no key", "wrong key"])
def test_without_the_key_nothing_reachable_changes_the_server(served: Served, key: str | None) -> None:
    before = _scores(served)
    for name, (method, path, body) in _http_requests(served).items():
        assert _http(served, method, path, body, key) == 403, f"HTTP {name}"
    headers = admin_headers(key, grpc=True) if key else None
    with grpcclient.InferenceServerClient(served.grpc) as client:
        for name, request in _grpc_requests(served).items():
            with pytest.raises(InferenceServerException, match="restricted"):
                request(client, headers)
            assert name
        assert client.is_model_ready("hpsv3") and not client.is_model_ready("evil")
    assert not served.marker.exists(), "the uploaded model.py never ran"
    assert _scores(served) == before, "scoring is unaffected"


def test_inference_health_metadata_configs_statistics_and_metrics_stay_open(served: Served) -> None:
    with grpcclient.InferenceServerClient(served.grpc) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("hpsv3")
        assert client.get_model_metadata("hpsv3", as_json=True)["inputs"][0]["name"] == "IMAGE"
        assert client.get_model_config("hpsv3", as_json=True)["config"]["max_batch_size"] == 1  # perf_analyzer
        assert client.get_inference_statistics("hpsv3", as_json=True)["model_stats"]
    assert _http(served, "GET", "/v2/health/ready") == 200 and _http(served, "GET", "/v2/models/hpsv3") == 200
    with _DIRECT.open(served.metrics, timeout=10) as response:
        assert b"nv_inference_request_success" in response.read()
    assert _scores(served)


def test_the_operators_key_opens_the_control_api_and_the_watchdog_still_reloads(served: Served) -> None:
    before = _scores(served)
    assert _http(served, "POST", "/v2/repository/index", {}, KEY) == 200
    with grpcclient.InferenceServerClient(served.grpc) as client:
        headers = admin_headers(KEY, grpc=True)
        names = {model["name"] for model in client.get_model_repository_index(headers=headers, as_json=True)["models"]}
        steps = {"preprocess", "preprocess_patches", "vision_encoder", "language_model", "reward_head"}
        assert names == {"hpsv3", "hpsv3_patches", *steps}
        client.unload_model("hpsv3", headers=headers)
        assert not client.is_model_ready("hpsv3")
        client.load_model("hpsv3", headers=headers)
        assert client.is_model_ready("hpsv3")
    assert _scores(served) == pytest.approx(before, abs=1e-6)

    server_pid = int(subprocess.run(["pgrep", "-f", f"grpc-port={served.grpc.rsplit(':', 1)[1]}"],
                                    capture_output=True, text=True).stdout.split()[0])  # fmt: skip
    deadline = time.monotonic() + 60
    while len(python_stubs(server_pid).get("language_model", [])) != 1:  # the reload's old stubs are exiting
        assert time.monotonic() < deadline, python_stubs(server_pid)
        time.sleep(0.2)
    (victim,) = python_stubs(server_pid)["language_model"]
    os.kill(victim, signal.SIGKILL)
    served.wait_for("model 'language_model' is back", 120)
    assert HPSv3Client(served.grpc).score([IMAGES / "small_200.png"], "a cat")[0].mu == pytest.approx(before[0])
    output = "".join(served.output)
    assert "control APIs locked" in output and KEY not in output, "the key is never printed"
