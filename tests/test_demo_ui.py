"""`hpsv3 demo-ui` in a real browser: Debian's Chromium, driven by Playwright, against the real Triton server.

The page's scores must be the endpoint's (`hpsv3 score --endpoint ... --format jsonl` for the same inputs), a bad
image gets its own error row while the others are scored, an unreachable endpoint shows a clear message and the
page keeps working, and nothing is fetched from outside this machine. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from hpsv3_repository.launcher import TritonServer, free_port

from .conftest import IMAGES

CHROMIUM = Path("/usr/bin/chromium")
HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PROMPT = "colourful balloons floating over a pastel landscape"
UPLOADS = ["square_512.png", "photo_800x600.jpg"]
MIME = {".png": "image/png", ".jpg": "image/jpeg"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (never Playwright's own download, which this network cannot reach)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make debian-packages` (scripts/setup_debian_packages.sh, as root)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _start_demo(endpoint: str, log: Path) -> Iterator[str]:
    """`hpsv3 demo-ui` as a user starts it, on a free port; yields the page's URL once Streamlit answers."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [HPSV3, "demo-ui", "--endpoint", endpoint, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"hpsv3 demo-ui exited with {process.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"hpsv3 demo-ui did not answer in 120 s:\n{log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def demo(tiny_server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _start_demo(tiny_server.grpc_url, tmp_path_factory.mktemp("demo") / "demo-ui.log")


def _new_page(browser: object, origin: str) -> tuple[object, list[str]]:
    """A wide page, and the list of every request it makes outside `origin` (must stay empty: offline)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1250})
    outside: list[str] = []

    def note(request: object) -> None:
        if not request.url.startswith((origin, "data:", "blob:")):
            outside.append(request.url)

    page.on("request", note)
    page.set_default_timeout(60_000)
    return page, outside


def _table(page: object) -> list[dict[str, str]]:
    """The results table as {header: cell text} per row."""
    cells = page.locator('[data-testid="stTable"] table').evaluate(
        "table => [...table.rows].map(row => [...row.cells].map(cell => cell.innerText.trim()))"
    )
    header, *body = cells
    return [dict(zip(header, row, strict=True)) for row in body]


def _pick(page: object, combobox: str, option: str | None = None) -> None:
    """Choose an option (the first by default) of a select box; a rerun of the page may close the list under
    the click: retry."""
    for _ in range(5):
        page.get_by_role("combobox", name=combobox).click()
        try:
            choice = page.get_by_role("option", name=option) if option else page.get_by_role("option").first
            choice.click(timeout=5_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    pytest.fail(f"could not pick an option of {combobox!r} in 5 tries")


def _cli_scores(endpoint: str, images: list[Path], prompt: str) -> dict[str, dict]:
    result = subprocess.run(
        [HPSV3, "score", *map(str, images), "--prompt", prompt, "--endpoint", endpoint, "--format", "jsonl"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {Path(row["image"]).name: row for row in rows}


def test_uploaded_images_are_scored_ranked_and_compared_as_the_cli_scores_them(
    browser: object, demo: str, tiny_server: TritonServer
) -> None:
    page, outside = _new_page(browser, demo)
    page.goto(demo)
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    files = [
        {"name": name, "mimeType": MIME[Path(name).suffix], "buffer": (IMAGES / name).read_bytes()} for name in UPLOADS
    ]
    files.append({"name": "broken.png", "mimeType": "image/png", "buffer": b"this is not an image"})
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files)
    page.wait_for_function(  # every chip uploaded (no spinner) before Score reads the widget
        "n => document.querySelectorAll('[data-testid=stFileChip]').length === n"
        " && !document.querySelector('[data-testid=stFileChipIconSpinner]')",
        arg=len(files),
    )
    page.get_by_role("button", name="Score").click()
    page.locator('[data-testid="stMetricValue"]').wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').wait_for()
    time.sleep(1)  # let the chart finish drawing before the screenshot
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-ui.png"), full_page=True)

    rows = _table(page)
    expected = _cli_scores(tiny_server.grpc_url, [IMAGES / name for name in UPLOADS], PROMPT)
    scored = [row for row in rows if row["mu"]]
    assert [row["image"] for row in scored] == sorted(expected, key=lambda name: -expected[name]["mu"])
    assert [row["rank"] for row in scored] == ["1", "2"]
    for row in scored:
        assert abs(float(row["mu"]) - expected[row["image"]]["mu"]) <= 1e-4, row
        assert abs(float(row["sigma"]) - expected[row["image"]]["sigma"]) <= 1e-4, row
        assert not row["error"]
    broken = [row for row in rows if row["image"] == "broken.png"]
    assert len(broken) == 1 and not broken[0]["mu"], rows
    assert broken[0]["error"].startswith("broken.png:") and "image" in broken[0]["error"], broken

    a, b = (expected[name] for name in UPLOADS)  # A and B default to the first two images given
    probability = 0.5 * math.erfc(-(a["mu"] - b["mu"]) / math.sqrt(2 * (a["sigma"] ** 2 + b["sigma"] ** 2)))
    shown = float(page.locator('[data-testid="stMetricValue"]').inner_text())
    assert abs(shown - probability) <= 1e-4, (shown, probability)
    assert not outside, f"the page fetched from outside this machine: {outside}"
    page.close()


def test_an_unreachable_endpoint_says_so_and_the_page_keeps_working(browser: object, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    for url in _start_demo(nobody, tmp_path / "demo-ui.log"):
        page, outside = _new_page(browser, url)
        page.goto(url)
        _pick(page, "Example images", "square_512.png")  # the built-in examples
        page.keyboard.press("Escape")
        _pick(page, "Example prompt")
        prompt = page.get_by_label("Prompt", exact=True)
        page.wait_for_function("box => box.value !== ''", arg=prompt.element_handle())  # the example fills it
        page.get_by_role("button", name="Score").click()
        message = page.get_by_text("Cannot score on the endpoint")
        message.wait_for()
        assert nobody in message.inner_text() and "no Triton server answers" in message.inner_text()
        page.screenshot(path=str(tmp_path / "unreachable.png"), full_page=True)
        page.get_by_label("Remove square_512.png").click()  # no image now: the page answers something else
        page.get_by_role("button", name="Score").click()
        page.get_by_text("Add an image first").wait_for()
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
            assert response.read() == b"ok"
        assert not outside, outside
        page.close()
