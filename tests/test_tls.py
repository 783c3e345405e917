"""gRPC over TLS end to end: tritonserver started with a certificate (as `hpsv3 serve --grpc-tls-cert/-key`),
HPSv3Client and `hpsv3 score --endpoint --tls-root-cert` trusting it; a plain-text client is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsv3_client import HPSv3Client, ServerUnavailableError
from hpsv3_repository.server import GrpcTls, ServerStartError, TritonServer, free_port

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
