"""docker/: the Dockerfile passes hadolint, the entrypoint script passes shellcheck, and they fit the package."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
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


def _build_context(out: Path) -> Path:
    """The files `docker build .` sends: the repository less .dockerignore (root patterns; `**/` ones anywhere)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def ignored(folder: str, names: list[str]) -> set[str]:
        at_root = Path(folder) == ROOT
        return {
            name
            for name in names
            for pattern in patterns
            if (at_root or pattern.startswith("**/")) and fnmatch.fnmatch(name, pattern.removeprefix("**/"))
        }

    return Path(shutil.copytree(ROOT, out, ignore=ignored, symlinks=True))


def test_the_image_can_pip_install_the_package_from_its_build_context(tmp_path: Path) -> None:
    context = _build_context(tmp_path / "context")
    assert (context / "docker" / "entrypoint.sh").is_file() and not (context / "tests").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path, context],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("hpsv3_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"hpsv3_repository/entrypoint.py", "hpsv3_repository/templates/hpsv3/config.pbtxt"} <= names
    assert "hpsv3_export/tensorrt_build.py" in names


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
