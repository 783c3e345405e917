"""The locked control plane: Triton's model-repository API (and its other admin APIs) need a key.

The stub watchdog needs explicit model control, and with it anyone who reaches the HTTP or gRPC port could load a
model, files included (`file:1/model.py`: code that runs in the server), or unload the service. So every server this
project starts restricts those APIs to requests carrying the header `hpsv3-admin-key` (Triton's
`--grpc-restricted-protocol` / `--http-restricted-api`; over gRPC Triton expects it as the metadata key
`triton-grpc-protocol-hpsv3-admin-key`). The key is a fresh random secret per start that only the
process running the server (its watchdog) holds, unless the operator supplies one in a file (`--admin-key-file`, a
Kubernetes Secret) to reach the API themselves. Inference, health, metadata, statistics and metrics stay open.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from hpsv3_serve.errors import HPSv3Error

ADMIN_HEADER = "hpsv3-admin-key"
GRPC_PREFIX = "triton-grpc-protocol-"  # Triton reads a restricted gRPC protocol's header under this prefix
# Triton's API groups that need the key: loading code and unloading (model-repository), registering shared memory
# the server would read from or write to, and the trace and log settings (which name files the server writes).
# Model configs stay readable: perf_analyzer and other Triton clients read them to learn a model's inputs.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-.~]{24,512}")  # a header value Triton's `key=value` flag can carry as is
MAKE_KEY = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))" > admin.key && chmod 600 admin.key'


class AdminKeyError(HPSv3Error):
    """The operator's admin key file cannot be used; the message says how to make one."""

    code = "admin_key"


def new_admin_key() -> str:
    """A per-start random key (256 bits)."""
    return secrets.token_urlsafe(32)


def read_admin_key(path: str | Path) -> str:
    """The key in `path` (surrounding whitespace ignored), checked to be long and header-safe."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminKeyError(f"cannot read the admin key file {path} ({exc}); make one with: {MAKE_KEY}") from exc
    if not KEY_PATTERN.fullmatch(key):
        raise AdminKeyError(
            f"the admin key in {path} must be 24 to 512 characters of A-Z a-z 0-9 _ - . ~; make one with: {MAKE_KEY}"
        )
    return key


def admin_headers(key: str, grpc: bool) -> dict[str, str]:
    """The header (HTTP) or metadata (gRPC) that opens the restricted APIs."""
    return {(GRPC_PREFIX if grpc else "") + ADMIN_HEADER: key}


def restriction_arguments(key: str, http: bool) -> list[str]:
    """tritonserver's flags that put `RESTRICTED_APIS` behind the key on gRPC (and HTTP when it is on)."""
    setting = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"
    return [f"--grpc-restricted-protocol={setting}"] + ([f"--http-restricted-api={setting}"] if http else [])
