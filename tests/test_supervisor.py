"""The stub watchdog of `hpsv3 serve` on a real tritonserver: a model whose Python stub is killed mid-stream
is reloaded, and the client's retries carry every request through (none lost, every answer right)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from hpsv3_client import HPSv3Client
from hpsv3_repository.processes import python_stubs
from hpsv3_repository.server import TritonServer, free_port
from hpsv3_repository.supervisor import StubWatchdog

from .conftest import TOY_REPOSITORY


def test_a_killed_stub_is_reloaded_and_no_request_is_lost(tmp_path: Path) -> None:
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None,
                          workdir=tmp_path, explicit_models=True)  # fmt: skip
    server.start(timeout_s=120)
    said: list[str] = []
    watchdog = StubWatchdog(server.pid, server.grpc_url, interval_s=0.2, say=said.append)
    watchdog.start()
    try:
        (victim,) = python_stubs(server.pid)["hpsv3"]
        client = HPSv3Client(server.grpc_url, concurrency=4, backoff_s=0.05)
        images = [b"x" * (1 + i) for i in range(400)]

        async def stream() -> list:
            async def kill() -> float:
                while client.health()[0]["served"] < 40:
                    await asyncio.sleep(0.01)
                os.kill(victim, signal.SIGKILL)
                return time.monotonic()

            killer = asyncio.ensure_future(kill())
            results = await client.score_async(images, "p")
            await killer
            return results

        results = asyncio.run(stream())
        assert [r.error for r in results] == [None] * len(images), "every request answered"
        assert [r.mu for r in results] == [float(len(image)) for image in images], "and answered right"
        (recovery,) = watchdog.recoveries
        assert recovery.model == "hpsv3" and recovery.ok and 0 < recovery.seconds < 60
        assert python_stubs(server.pid)["hpsv3"] != [victim], "a new stub serves"
        assert any("is back after" in line for line in said)
    finally:
        watchdog.stop()
        server.stop()
