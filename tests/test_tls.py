"""gRPC over TLS end to end: tritonserver started with a certificate (as `hpsv3 serve --grpc-tls-cert/-key`),
HPSv3Client and `hpsv3 score --endpoint --tls-root-cert` trusting it; a plain-text client is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsv3_client import HPSv3Client, ServerUnavailableError
from hpsv3_repository.launcher import GrpcTls, ServerStartError, TritonServer, free_port

from .conftest import IMAGES, TOY_REPOSITORY

HPSV3 = str(Path(sys.executable).with_name("hpsv3"))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.pem", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    cert, key = tls_files
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None,
                          workdir=tmp_path_factory.mktemp("tls-triton"), tls=GrpcTls(cert, key))  # fmt: skip
    server.start(timeout_s=120)
    yield server
    server.stop()


def test_clients_that_trust_the_certificate_are_served(tls_server: TritonServer, tls_files: tuple[Path, Path]):
    cert, _ = tls_files
    (result,) = HPSv3Client(tls_server.grpc_url, ssl=True, root_certificates=str(cert)).score([b"abc"], "p")
    assert result.error is None and result.mu == 3.0
    done = subprocess.run([HPSV3, "score", IMAGES / "small_200.png", "--prompt", "p", "--endpoint",
                           tls_server.grpc_url, "--tls-root-cert", cert, "--format", "jsonl"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"mu": ' in done.stdout


def test_a_plain_text_client_is_refused(tls_server: TritonServer) -> None:
    with pytest.raises(ServerUnavailableError):
        HPSv3Client(tls_server.grpc_url, retries=0).score([b"abc"], "p")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    server = TritonServer(TOY_REPOSITORY, grpc_port=free_port(), http_port=None, metrics_port=None,
                          workdir=tmp_path, tls=GrpcTls(tmp_path / "no.pem", tmp_path / "no.key"))  # fmt: skip
    with pytest.raises(ServerStartError, match=r"no\.pem does not exist"):
        server.start(timeout_s=10)


def test_bench_scores_over_tls_and_refuses_bad_tls_flags(tls_server: TritonServer, tls_files: tuple[Path, Path],
                                                         tmp_path: Path) -> None:  # fmt: skip
    """`hpsv3 bench pairs` with --tls-root-cert (the toy model's mu is the image's byte count)."""
    cert, _ = tls_files
    big, small = sorted(IMAGES.iterdir(), key=lambda path: path.stat().st_size)[::-1][:2]
    data = tmp_path / "pairs.json"
    data.write_text(f'[{{"prompt": "p", "path1": "{big.name}", "path2": "{small.name}"}}]')
    bench = [HPSV3, "bench", "--endpoint", tls_server.grpc_url, "--output", str(tmp_path / "out")]
    done = subprocess.run([*bench, "--tls-root-cert", cert, "pairs", "--data", data, "--images-root", IMAGES],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"accuracy": 1.0' in (tmp_path / "out" / "pairs.json").read_text()
    missing = subprocess.run([*bench, "--tls-root-cert", tmp_path / "none.pem", "pairs", "--data", data],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "none.pem does not exist" in missing.stderr
    soak = subprocess.run([*bench, "soak", "--tls-root-cert", cert], capture_output=True, text=True, timeout=120)
    assert soak.returncode == 2 and "the --tls-* flags are for pairs, ranking and generation" in soak.stderr


def _listening_addresses(port: int) -> set[str]:
    """The addresses TCP sockets listen on at `port` (/proc/net/tcp and tcp6; IPv6 "any" and loopback by name)."""
    ipv6 = {"0" * 32: "::", "0" * 24 + "01000000": "::1"}
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:  # 0A: LISTEN
                continue
            found.add(ipv6.get(address, address) if table == "tcp6" else
                      ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))  # fmt: skip
    return found


def test_with_grpc_tls_http_and_metrics_stay_on_loopback(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    """`--host 0.0.0.0` with gRPC TLS: gRPC on every address, the plain-text HTTP and metrics ports on 127.0.0.1
    unless named otherwise; the warnings say which ports are reachable and how."""
    cert, key = tls_files
    server = TritonServer(TOY_REPOSITORY, host="0.0.0.0", grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), workdir=tmp_path, tls=GrpcTls(cert, key))  # fmt: skip
    assert server.exposure_warnings() == [
        f"WARNING: gRPC on 0.0.0.0:{server.grpc_port} is reachable beyond this machine"
    ]
    server.start(timeout_s=120)
    try:
        assert _listening_addresses(server.grpc_port) in ({"0.0.0.0"}, {"::"})  # gRPC may take a dual-stack socket
        assert _listening_addresses(server.http_port) == {"127.0.0.1"}
        assert _listening_addresses(server.metrics_port) == {"127.0.0.1"}
    finally:
        server.stop()
    named = TritonServer(TOY_REPOSITORY, host="0.0.0.0", tls=GrpcTls(cert, key), metrics_address="0.0.0.0")
    assert "--metrics-address=0.0.0.0" in named.arguments() and "--http-address=127.0.0.1" in named.arguments()
    assert "metrics on 0.0.0.0:8002 is reachable beyond this machine in plain text" in named.exposure_warnings()[1]
    plain = TritonServer(TOY_REPOSITORY, host="0.0.0.0")
    assert len(plain.exposure_warnings()) == 3 and "--http-address=0.0.0.0" in plain.arguments()
