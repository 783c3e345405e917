"""docker/: the Dockerfile passes hadolint, the entrypoint script passes shellcheck, and they fit the package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
TOOLS = Path(sys.executable).parent


def _tool(name: str) -> Path:
    path = TOOLS / name
    if not path.is_file():
        pytest.skip(f"{name} is missing: pip install -e '.[deploy-checks]' (make does)")
    return path


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), "--no-color", DOCKERFILE], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_script_passes_shellcheck() -> None:
    result = subprocess.run([_tool("shellcheck"), ROOT / "docker" / "entrypoint.sh"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_the_base_and_runs_the_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TRITON_VERSION=\d\d\.\d\d$", text, re.M)
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    assert re.search(r"^ARG VLLM_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert re.search(r'^ENTRYPOINT \[.*"hpsv3-entrypoint"\]$', text, re.M)
    assert "EXPOSE 8000 8001 8002" in text and "HPSV3_CACHE_DIR=/models/cache" in text


def test_build_context_keeps_what_pip_install_needs() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-dir]")[1].split("\n[")[0]
    package_dirs = re.findall(r'^\w+ = "(\w+)"', section, re.M)
    assert package_dirs, "no [tool.setuptools.package-dir] entries found"
    needed = {"pyproject.toml", "README.md", "hpsv3_serve", "docker", *package_dirs}
    assert not needed & ignored


def test_readme_docker_run_has_what_an_operator_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    run = readme[readme.index("docker run -d --name hpsv3") :].split("\n\n")[0].split("```")[0]
    for flag in (
        "--gpus",
        "--shm-size",
        "-p 8000:8000",
        "-p 8001:8001",
        "-p 8002:8002",
        ":/models/cache",
        "-e HF_TOKEN",
    ):
        assert flag in run, flag
    assert "docker build -f docker/Dockerfile" in readme and "kubectl -n hpsv3 apply -f" in readme
