"""A local server's processes, from Linux /proc: who listens on a port, its process tree, their resident
memory, and its Python-backend stubs per model (for the stub watchdog and the soak's fault injection)."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"  # TCP state in /proc/net/tcp*


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == LISTEN:
                inodes.add(fields[9])
    return inodes


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` of this machine (readable by this user), if any."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def _parents() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    parents, tree = _parents(), [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def rss_mib(pids: list[int]) -> float:
    """Total resident memory of the processes still alive, MiB."""
    total_kib = 0
    for pid in pids:
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def python_stubs(root: int) -> dict[str, list[int]]:
    """model name → pids of the live Python-backend stubs under `root` (a stub's first argument is
    REPOSITORY/<model>/<version>/model.py); zombies are not live."""
    stubs: dict[str, list[int]] = {}
    for pid in process_tree(root)[1:]:
        try:
            state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state == "Z" or len(argv) < 2 or not argv[0].endswith(b"triton_python_backend_stub"):
            continue
        parts = Path(argv[1].decode(errors="replace")).parts
        if len(parts) < 3:
            continue
        model = parts[-3]
        stubs.setdefault(model, []).append(pid)
    return stubs
