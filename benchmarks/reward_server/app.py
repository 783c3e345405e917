"""The reward server: yifan123/reward-server's `app_deqa.py` with HPSv3 as the model (what differs: __init__.py).

    gunicorn --chdir REPO --bind 127.0.0.1:18086 --workers 1 --worker-class sync --timeout 120 \\
        'benchmarks.reward_server.app:create_app("official", "build/tiny/HPSv3-tiny.safetensors", "build/tiny/base")'

POST / with a pickled `{"images": [JPEG bytes], "prompts": [str]}` → a pickled `{"outputs": [mu]}`, or the
traceback with status 500. Runs in either venv: "official" needs hpsv3==1.0.0 (`.venv-official`), "project" (the
stand-in) this project's package. It unpickles its request body: bind it to 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import pickle
import traceback
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

from flask import Blueprint, Flask, request
from PIL import Image

Scorer = Callable[[list[Image.Image], Sequence[str]], list[float]]  # images, prompts → mu per image
OFFICIAL_LOADER = Path(__file__).resolve().parent.parent / "official_inferencer.py"

root = Blueprint("root", __name__)
INFERENCE_FN: Scorer | None = None


def official_scorer(checkpoint: str, base: str) -> Scorer:
    """The official `HPSv3RewardInferencer` (loaded by benchmarks/official_inferencer.py), the request as one batch."""
    spec = importlib.util.spec_from_file_location("official_inferencer", OFFICIAL_LOADER)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    inferencer, _ = loader.load_inferencer(Path(checkpoint), Path(base))
    import torch

    @torch.no_grad()
    def score(images: list[Image.Image], prompts: Sequence[str]) -> list[float]:
        return inferencer.reward(images, prompts)[:, 0].tolist()

    return score


def project_scorer(checkpoint: str, base: str) -> Scorer:
    """The stand-in: this project's in-process `Scorer` (raises when an item fails, as the official code does)."""
    from hpsv3_serve.scorer import Scorer as ProjectScorer

    return ProjectScorer.from_pretrained(checkpoint, base)


SCORERS = {"official": official_scorer, "project": project_scorer}


def create_app(scorer: str, checkpoint: str, base: str) -> Flask:
    """The app with its model loaded (gunicorn calls this in each worker)."""
    global INFERENCE_FN
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {sorted(SCORERS)}, got {scorer!r}")
    INFERENCE_FN = SCORERS[scorer](checkpoint, base)

    app = Flask(__name__)
    app.register_blueprint(root)
    return app


@root.route("/", methods=["POST"])
def inference() -> tuple[bytes, int]:
    print(f"received POST request from {request.remote_addr}")
    data = request.get_data()
    try:
        data = pickle.loads(data)  # the upstream protocol: anyone who reaches the port runs code here
        images = [Image.open(BytesIO(d), formats=["jpeg"]) for d in data["images"]]
        print(f"Got {len(images)} images")
        response, returncode = pickle.dumps({"outputs": INFERENCE_FN(images, data["prompts"])}), 200
    except Exception:
        response = traceback.format_exc()
        print(response)
        response, returncode = response.encode("utf-8"), 500
    return response, returncode
