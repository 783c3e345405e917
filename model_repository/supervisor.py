"""The stub watchdog of `hpsv3 serve`: a Python-backend model whose stub process died is reloaded.

Triton's Python backend does not restart a dead stub: every later request to that model fails with
"Stub process '<model>' is not healthy" while the health endpoints still answer 200 (triton-inference-server
issue 8604). So the server runs with explicit model control, and this thread counts each model's live stubs
(from /proc) every `interval_s`; when a model has fewer than it started with, it asks the server to load the
model again (new stubs) and records how long the service was degraded. The client retries the requests that
failed meanwhile, so none is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .processes import python_stubs

RELOAD_MARKER = "hpsv3_reloaded_at"  # a model config parameter only the watchdog sets


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
        self, server_pid: int, grpc_url: str, interval_s: float = 1.0, say: Callable[[str], None] = print
    ) -> None:
        super().__init__(name="hpsv3-stub-watchdog", daemon=True)
        self.server_pid, self.grpc_url, self.interval_s, self.say = server_pid, grpc_url, interval_s, say
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
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self.say(f"hpsv3 serve: model {model!r}: {reason}; reloading it")
        started = time.monotonic()
        try:
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                # loading an unchanged model is a no-op: its own config with a fresh marker forces a new instance
                config = client.get_model_config(model, as_json=True)["config"]
                config.setdefault("parameters", {})[RELOAD_MARKER] = {"string_value": f"{time.time():.6f}"}
                client.load_model(model, config=json.dumps(config), client_timeout=300)
            ok = True
        except InferenceServerException as exc:
            ok = False
            self.say(f"hpsv3 serve: reloading {model!r} failed: {exc.message()}; retrying in {self.interval_s:g} s")
        recovery = Recovery(model, reason, time.monotonic() - started, ok)
        self.recoveries.append(recovery)
        if ok:
            self.say(f"hpsv3 serve: model {model!r} is back after {recovery.seconds:.1f} s")
