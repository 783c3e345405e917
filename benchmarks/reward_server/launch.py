"""Start and stop the re-created reward server: gunicorn from a venv's interpreter, on 127.0.0.1 only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from hpsv3_repository.launcher import free_port
from hpsv3_serve.errors import HPSv3Error

REPO = Path(__file__).resolve().parent.parent.parent
APP = "benchmarks.reward_server.app:create_app"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own server: never via a proxy


class RewardServerError(HPSv3Error):
    """The reward server could not be started; the message says why, with the end of its log."""

    code = "reward_server_start"


class RewardServer:
    """gunicorn serving `app.py` with `scorer` ("official" or "project") from `python`, as the upstream README starts
    it (`gunicorn "app_deqa:create_app()"`) with its gunicorn.conf.py settings: sync workers, timeout 120."""

    def __init__(self, python: Path, scorer: str, checkpoint: Path, base: Path, log: Path, workers: int = 1) -> None:
        self.python, self.scorer, self.log, self.workers = python, scorer, log, workers
        self.checkpoint, self.base = checkpoint.resolve(), base.resolve()
        self.port = free_port()
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        factory = f"{APP}({self.scorer!r}, {str(self.checkpoint)!r}, {str(self.base)!r})"
        return [str(self.python), "-m", "gunicorn", "--chdir", str(REPO), "--bind", f"127.0.0.1:{self.port}",
                "--workers", str(self.workers), "--worker-class", "sync", "--timeout", "120", factory]  # fmt: skip

    def start(self, timeout_s: float = 300) -> None:
        """Start gunicorn and return once a worker answers (its model loaded); raises RewardServerError."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with code {code}" if code is not None else f"did not answer within {timeout_s:.0f} s"
                raise RewardServerError(f"the reward server ({self.python} -m gunicorn) {why}; the end of {self.log}:\n"
                                        f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.5)

    def _answers(self) -> bool:
        """A worker answers GET / (405: the route takes POST only) once its model is loaded."""
        try:
            with _DIRECT.open(self.url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.is_file() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM gunicorn (it stops its workers), SIGKILL its process group after `timeout_s`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def __enter__(self) -> RewardServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
