"""The malloc tritonserver runs with. Under sustained load glibc's per-thread arenas leave tritonserver's heap
creeping up for a quarter of an hour (gRPC buffers allocated on one thread, freed on another); Triton's own
documentation recommends preloading tcmalloc or jemalloc, which NVIDIA's containers ship. `auto` takes
tcmalloc when the system has it (Debian/Ubuntu: libtcmalloc-minimal4), else glibc's malloc; the Python-backend
stubs keep glibc's malloc either way (see TritonServer: the stub launcher restores their LD_PRELOAD)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from hpsv3_serve.errors import HPSv3Error

CHOICES = ("auto", "tcmalloc", "jemalloc", "glibc")
LIBRARIES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
INSTALL = {"tcmalloc": "apt-get install libtcmalloc-minimal4", "jemalloc": "apt-get install libjemalloc2"}


class AllocatorError(HPSv3Error):
    """The allocator asked for is not installed; the message says how to install it."""

    code = "allocator"


def _library_dirs() -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [Path("/usr/lib") / multiarch, Path("/lib") / multiarch] if multiarch else []
    return [*dirs, Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]


def find_library(name: str) -> Path | None:
    """The shared library of allocator `name` ("tcmalloc" or "jemalloc") on this system, if installed."""
    for directory in _library_dirs():
        for soname in LIBRARIES[name]:
            if (directory / soname).is_file():
                return directory / soname
    return None


def resolve(choice: str) -> tuple[str, Path | None]:
    """(allocator used, library to preload or None for glibc) for --allocator `choice`; AllocatorError when an
    allocator named explicitly is not installed."""
    if choice not in CHOICES:
        raise AllocatorError(f"unknown allocator {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice == "glibc":
        return "glibc", None
    if choice == "auto":
        library = find_library("tcmalloc")
        return ("tcmalloc", library) if library is not None else ("glibc", None)
    library = find_library(choice)
    if library is None:
        raise AllocatorError(f"--allocator {choice}: {LIBRARIES[choice][0]} is not installed ({INSTALL[choice]})")
    return choice, library
