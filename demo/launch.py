"""Start the demo page: `streamlit run demo/app.py` with offline, local-only settings (`hpsv3 demo-ui`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")
REPO_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # the repository's examples/ (editable install)
MAX_UPLOAD_MB = 64  # hpsv3_serve.limits.DEFAULT_LIMITS.max_image_bytes; the client checks each image again

# Streamlit options: no usage statistics, no browser to open, no file watcher, no developer menu
SETTINGS = {
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "global.developmentMode": "false",
    "client.toolbarMode": "viewer",
    "client.showErrorDetails": "type",
    "server.maxUploadSize": str(MAX_UPLOAD_MB),
    "theme.base": "light",
}


def streamlit_command(
    endpoint: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    timeout_s: float = 60.0,
    allow_urls: bool = True,
    examples: Path | None = REPO_EXAMPLES,
    tls: dict | None = None,
) -> list[str]:
    """The `python -m streamlit run` command line; the page's own arguments follow `--`."""
    settings = {**SETTINGS, "server.address": host, "server.port": str(port)}
    command = [sys.executable, "-m", "streamlit", "run", str(APP)]
    command += [f"--{name}={value}" for name, value in settings.items()]
    command += ["--", "--endpoint", endpoint, "--timeout", str(timeout_s)]
    if not allow_urls:
        command.append("--no-urls")
    if examples is not None and examples.is_dir():
        command += ["--examples", str(examples)]
    flags = {
        "root_certificates": "--tls-root-cert",
        "certificate_chain": "--tls-client-cert",
        "private_key": "--tls-client-key",
    }
    for key, flag in flags.items():
        if (tls or {}).get(key):
            command += [flag, tls[key]]
    return command


def run(command: list[str]) -> int:
    """Replace this process with Streamlit (Ctrl-C and SIGTERM then reach it directly); 2 when it is missing."""
    if importlib.util.find_spec("streamlit") is None:
        print("hpsv3 demo-ui: Streamlit is not installed; pip install 'hpsv3-serve[demo]' (Python >= 3.11)",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached
