"""The client in an RL trainer's environment: numpy 2, no torch, no transformers (`.venv-client`, made by
scripts/setup_client_venv.sh). Only the server's environment needs numpy 1 (the Triton stub is built against it), so
the package's core does not cap numpy: the client there scores the served tiny model as the official golden file,
files and float arrays alike, bad items failing alone."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from hpsv3_repository.launcher import TritonServer

from .conftest import IMAGES

CLIENT_PYTHON = Path(__file__).resolve().parent.parent / ".venv-client" / "bin" / "python"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image
    from hpsv3_client import HPSv3Client, HPSv3Reward

    url, folder, names, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    files = [f"{folder}/{name}" for name in names]
    floats = [np.asarray(Image.open(path).convert("RGB"), np.float32) / 255 for path in files]
    results = HPSv3Client(url).score(files + [b"not an image"], prompts + ["x"])
    with HPSv3Reward(url, failed_score=-100.0) as reward:
        scores, info = reward(floats + [np.full((8, 8, 3), np.nan, np.float32)], prompts + ["x"])
    print(json.dumps({
        "numpy": np.__version__,
        "heavy": sorted(name for name in ("torch", "transformers") if name in sys.modules),
        "files": [[r.mu, r.log_sigma] if r.ok else r.error for r in results],
        "arrays": scores.tolist(),
        "failed": info["failed"],
    }))
    """
)


@pytest.mark.skipif(not CLIENT_PYTHON.exists(), reason="run scripts/setup_client_venv.sh (make test does)")
def test_a_numpy_2_client_scores_as_the_official_file(tiny_server: TritonServer, golden: dict) -> None:
    items = golden["items"]
    names, prompts = [item["image"] for item in items], [item["prompt"] for item in items]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [CLIENT_PYTHON, "-c", SCRIPT, tiny_server.grpc_url, str(IMAGES), json.dumps(names), json.dumps(prompts)],
        capture_output=True, text=True, env=env, timeout=300, cwd=IMAGES,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert int(answer["numpy"].split(".")[0]) >= 2 and answer["heavy"] == []
    for (mu, log_sigma), item in zip(answer["files"][:-1], items, strict=True):
        assert abs(mu - item["mu"]) <= 1e-5 and abs(log_sigma - item["log_sigma"]) <= 1e-5
    assert "IMAGE" in answer["files"][-1]  # the bad file fails alone, named
    # float arrays go as patches made on the client; uint8 rounding of x/255 gives back the file's pixels
    for score, item in zip(answer["arrays"][:-1], items, strict=True):
        assert abs(score - item["mu"]) <= 1e-5
    assert answer["arrays"][-1] == -100.0 and answer["failed"] == [len(items)]
