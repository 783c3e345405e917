"""The root Dockerfile passes hadolint, docker/entrypoint.sh passes shellcheck, and they fit the package."""

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
DOCKERFILE = ROOT / "Dockerfile"
TOOLS = Path(sys.executable).parent


def instructions() -> list[str]:
    """The Dockerfile's instructions, one a line: comments dropped, continuation lines joined."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(line.split()) for line in "\n".join(lines).replace("\\\n", " ").splitlines() if line.strip()]


def image_env() -> dict[str, str]:
    """Every ENV KEY=VALUE of the Dockerfile (its values have no spaces)."""
    pairs = [item.split("=", 1) for line in instructions() if line.startswith("ENV ") for item in line.split()[1:]]
    return dict(pairs)


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
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3@${TRITON_DIGEST}" in instructions()
    assert re.search(r"^ARG VLLM_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert re.search(r'^ENTRYPOINT \[.*"hpsv3-entrypoint"\]$', text, re.M)
    assert "EXPOSE 8000 8001 8002" in text and "HPSV3_CACHE_DIR=/models/cache" in text


def test_dockerfile_pins_the_base_by_digest() -> None:
    (base,) = [line.split()[1] for line in instructions() if line.startswith("FROM ")]
    pinned = re.fullmatch(
        r"nvcr\.io/nvidia/tritonserver:\$\{TRITON_VERSION\}-py3@(sha256:[0-9a-f]{64}|\$\{(\w+)\})", base
    )
    assert pinned, base
    if argument := pinned.group(2):  # a build argument: required, no default that could pass for a digest
        assert f"ARG {argument}" in instructions()
        assert not [line for line in instructions() if line.startswith(f"ARG {argument}=")]
    for doc in ("README.md", "docs/DEPLOYMENT.md"):  # where an operator finds how to get the digest
        text = (ROOT / doc).read_text()
        assert "docker buildx imagetools inspect nvcr.io/nvidia/tritonserver:" in text, doc
        assert "--build-arg TRITON_DIGEST=sha256:" in text, doc


def test_image_runs_as_a_non_root_user_with_its_caches_in_home() -> None:
    users = [line.split()[1] for line in instructions() if line.startswith("USER ")]
    assert users[-1] == "1000:1000"  # not root; the uid of the Kubernetes manifests
    assert 'RUN install -d -o 1000 -g 1000 "${HOME}"' in instructions()
    env = image_env()
    home = env["HOME"]
    for name in ("XDG_CACHE_HOME", "TRITON_HOME", "TORCHINDUCTOR_CACHE_DIR"):
        assert f"{env[name]}/".startswith(f"{home}/"), name
    assert "TRITON_CACHE_DIR" not in env  # vLLM would then stop keeping its Triton kernels with its compile cache
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["DO_NOT_TRACK"] == "1"


def test_the_build_writes_no_predictable_file_in_tmp() -> None:
    assert not [line for line in instructions() if line.startswith("RUN ") and "/tmp" in line]


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
        "-p 127.0.0.1:8000:8000",
        "-p 127.0.0.1:8001:8001",
        "-p 127.0.0.1:8002:8002",
        ":/models/cache",
        "-e HF_TOKEN",
    ):
        assert flag in run, flag
    assert "docker build --build-arg TRITON_DIGEST=" in readme and "kubectl -n hpsv3 apply -f" in readme


def test_docker_run_examples_publish_on_loopback_only() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        for command in re.findall(r"docker run .*?(?<!\\)\n", doc.read_text(), re.S):
            for published in re.findall(r"(?:-p|--publish)[ =](\S+)", command):
                assert published.startswith("127.0.0.1:"), f"{doc.name}: {command}"
