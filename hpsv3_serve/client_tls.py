"""The client side of gRPC TLS on every command line that talks to an endpoint (score, bench, cohp)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import HPSv3Error


class TlsConfigError(HPSv3Error):
    """The TLS flags do not fit together or name a missing file."""

    code = "tls_config"


def add_tls_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **defaults: object) -> None:
    """--tls-root-cert, --tls-client-cert, --tls-client-key (the server side: `hpsv3 serve --grpc-tls-cert`)."""
    parser.add_argument(
        "--tls-root-cert",
        type=Path,
        metavar="PEM",
        help="endpoint over TLS: CA or server certificate to trust",
        **defaults,
    )
    parser.add_argument(
        "--tls-client-cert", type=Path, metavar="PEM", help="mutual TLS: this client's certificate (PEM)", **defaults
    )
    parser.add_argument(
        "--tls-client-key", type=Path, metavar="PEM", help="mutual TLS: this client's private key (PEM)", **defaults
    )


def tls_options(args: argparse.Namespace) -> dict:
    """HPSv3Client keyword arguments for those flags: {} (plain gRPC) without --tls-root-cert."""
    root = getattr(args, "tls_root_cert", None)
    cert, key = getattr(args, "tls_client_cert", None), getattr(args, "tls_client_key", None)
    if bool(cert) != bool(key):
        raise TlsConfigError("--tls-client-cert and --tls-client-key go together (mutual TLS)")
    if root is None:
        if cert:
            raise TlsConfigError("mutual TLS needs --tls-root-cert too (the server's CA or certificate)")
        return {}
    for path in filter(None, (root, cert, key)):
        if not Path(path).is_file():
            raise TlsConfigError(f"TLS file {path} does not exist")
    return {"ssl": True, "root_certificates": str(root), "private_key": key and str(key),
            "certificate_chain": cert and str(cert)}  # fmt: skip
