"""The stub watchdog of `hpsv3 serve`: a Python-backend model whose stub process died is reloaded.

Triton's Python backend does not restart a dead stub: every later request to that model fails with
"Stub process '<model>' is not healthy" while the health endpoints still answer 200 (triton-inference-server
issue 8604). So the server runs with explicit model control, and this thread counts each model's live stubs
(from /proc) every `interval_s`; when a model has fewer than it started with, it asks the server to load the
model again (new stubs) and records how long the service was degraded. The client retries the requests that
failed meanwhile, so none is lost. Loading is a restricted API: the watchdog sends the server's admin key.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from .admin import admin_headers
from .processes import python_stubs

RELOAD_MARKER = "hpsv3_reloaded_at"  # a model config parameter only the watchdog sets
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own server: never via a proxy


@dataclass
class Recovery:
    """One reload: which model, why, and seconds from detection until the model was loaded again."""

    model: str
    reason: str
    seconds: float
    ok: bool


class StubWatchdog(threading.Thread):
    """Reload any Python-backend model whose stubs died, while the server runs."""

    def __init__(
        self,
        server_pid: int,
        grpc_url: str,
        interval_s: float = 1.0,
        say: Callable[[str], None] = print,
        http_url: str | None = None,
        admin_key: str = "",
    ) -> None:
        """`http_url`: reload through the server's HTTP port (plain, loopback) when it has one, so a gRPC port
        that takes TLS only does not stop the watchdog; else through `grpc_url` in plain gRPC. `admin_key`: the
        key of the server's restricted APIs (loading is one)."""
        super().__init__(name="hpsv3-stub-watchdog", daemon=True)
        self.server_pid, self.grpc_url, self.interval_s, self.say = server_pid, grpc_url, interval_s, say
        self.http_url = http_url
        self.admin_key = admin_key
        self.expected = {model: len(pids) for model, pids in python_stubs(server_pid).items()}
        self.recoveries: list[Recovery] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            live = python_stubs(self.server_pid)
            for model, count in self.expected.items():
                if len(live.get(model, [])) < count:
                    self._reload(model, f"{count - len(live.get(model, []))} of {count} stub(s) died")

    def _reload(self, model: str, reason: str) -> None:
        from tritonclient.utils import InferenceServerException

        self.say(f"hpsv3 serve: model {model!r}: {reason}; reloading it")
        started = time.monotonic()
        try:
            (self._load_over_http if self.http_url else self._load_over_grpc)(model)
            ok = True
        except (InferenceServerException, OSError) as exc:
            ok = False
            detail = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
            self.say(f"hpsv3 serve: reloading {model!r} failed: {detail}; retrying in {self.interval_s:g} s")
        recovery = Recovery(model, reason, time.monotonic() - started, ok)
        self.recoveries.append(recovery)
        if ok:
            self.say(f"hpsv3 serve: model {model!r} is back after {recovery.seconds:.1f} s")

    def _load_over_grpc(self, model: str) -> None:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            headers = admin_headers(self.admin_key, grpc=True)
            config = _marked(client.get_model_config(model, headers=headers, as_json=True)["config"])
            client.load_model(model, headers=headers, config=json.dumps(config), client_timeout=300)

    def _load_over_http(self, model: str) -> None:
        """Triton's HTTP model repository API: GET the model's config, POST a load with it."""
        headers = admin_headers(self.admin_key, grpc=False)
        config_request = urllib.request.Request(f"{self.http_url}/v2/models/{model}/config", headers=headers)
        with _DIRECT.open(config_request, timeout=30) as response:
            config = _marked(json.load(response))
        body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
        request = urllib.request.Request(f"{self.http_url}/v2/repository/models/{model}/load", data=body,
                                         headers={"Content-Type": "application/json", **headers},
                                         method="POST")  # fmt: skip
        with _DIRECT.open(request, timeout=300) as response:
            response.read()


def _marked(config: dict) -> dict:
    """The model's config with a fresh reload marker: loading an unchanged model is a no-op, a changed config
    makes Triton start a new instance (new stubs)."""
    config.setdefault("parameters", {})[RELOAD_MARKER] = {"string_value": f"{time.time():.6f}"}
    return config
