"""The stub watchdog of `hpsv3 serve` on a real tritonserver: a model whose Python stub is killed mid-stream
is reloaded, and the client's retries carry every request through (none lost, every answer right)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpsv3_client import HPSv3Client
from hpsv3_repository.launcher import GrpcTls, TritonServer, free_port
from hpsv3_repository.processes import python_stubs
from hpsv3_repository.supervisor import StubWatchdog

from .conftest import TOY_REPOSITORY


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "server.pem", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.mark.parametrize("route", ["grpc", "http beside a TLS-only gRPC port"])
def test_a_killed_stub_is_reloaded_and_no_request_is_lost(route: str, tmp_path: Path) -> None:
    tls, client_tls, http_port = None, {}, None
    if route != "grpc":  # the watchdog reloads over loopback HTTP: the TLS gRPC port does not stop it
        cert, key = _self_signed(tmp_path)
        tls, client_tls, http_port = GrpcTls(cert, key), {"ssl": True, "root_certificates": str(cert)}, free_port()
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=http_port, metrics_port=None,
                          workdir=tmp_path, explicit_models=True, tls=tls)  # fmt: skip
    server.start(timeout_s=120)
    said: list[str] = []
    watchdog = StubWatchdog(
        server.pid,
        server.grpc_url,
        interval_s=0.2,
        say=said.append,
        http_url=server.http_url,
        admin_key=server.admin_key,
    )
    watchdog.start()
    try:
        (victim,) = python_stubs(server.pid)["hpsv3"]
        client = HPSv3Client(server.grpc_url, concurrency=4, backoff_s=0.05, **client_tls)
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
