"""A local server's processes, from Linux /proc: who listens on a port, its process tree, their memory, and
its Python-backend stubs per model (for the stub watchdog, and the soak's memory samples and fault injection)."""

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


def _rollup_kib(pid: int) -> dict[str, int]:
    try:
        lines = (PROC / str(pid) / "smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.endswith("kB")}


def private_mib(pids: list[int]) -> float:
    """Memory of the processes still alive, MiB, shared-memory mappings left out: proportional set size (a page
    several of them map, a library's say, is split between them) of their anonymous and file mappings."""
    total_kib = 0
    for pid in pids:
        rollup = _rollup_kib(pid)
        total_kib += rollup.get("Pss", 0) - rollup.get("Pss_Shmem", 0)
    return total_kib / 1024


def shared_memory_mib(pids: list[int]) -> float:
    """The /dev/shm files the processes map (the Python backend's regions: tensors between tritonserver and each
    stub), by the memory they hold, each counted once. Per-process resident sizes count a region once per
    mapping, and the backend maps a region again, in tritonserver and in the stub, each time it grows."""
    regions = set()
    for pid in pids:
        try:
            maps = (PROC / str(pid) / "maps").read_text().splitlines()
        except OSError:
            continue
        regions.update(line.split(maxsplit=5)[5] for line in maps if " /dev/shm/" in line)
    total = 0
    for region in regions:
        try:
            total += os.stat(region).st_blocks * 512
        except OSError:
            continue
    return total / 2**20


def server_memory(root: int) -> dict[str, float]:
    """The memory of the server at `root`, MiB, in parts that add up with nothing counted twice: "tritonserver",
    each model's Python-backend stubs, and "shared_memory" (the backend's /dev/shm regions)."""
    stubs = python_stubs(root)
    parts = {"tritonserver": private_mib([root])}
    parts.update({model: private_mib(pids) for model, pids in sorted(stubs.items())})
    parts["shared_memory"] = shared_memory_mib([root, *(pid for pids in stubs.values() for pid in pids)])
    return parts


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
