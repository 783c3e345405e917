"""Chat requests for `vllm serve` on an `hpsv3 export --vllm` folder, scored exactly like the official model.

    vllm serve DIR --runner pooling --trust-request-mm-kwargs \
        --pooler-config '{"pooling_type": "LAST", "use_activation": false}'      (`server_arguments`)

    body = pooling_request("cat.png", "a cat on a sofa")
    reply = requests.post("http://127.0.0.1:8000/pooling", json=body).json()
    score = read_score(reply, "cat.png", "a cat on a sofa")      # ScoreResult: mu, sigma, log_sigma

The folder's chat template turns the `[image, text]` message into HPSv3's prompt (ending at `<|Reward|>`)
and its processor resizes images to the official 200704 pixels. vLLM resizes with torchvision where that
is installed, whose bicubic differs from PIL's by a grey level here and there, so this request sends the
image already decoded and resized by `hpsv3_serve.inputs` (PNG, lossless) with `KEEP_SIZE`: the pixels,
the tokens and so the score are the official ones. `KEEP_SIZE` travels as per-request processor
arguments, which vLLM accepts only from a server started with `--trust-request-mm-kwargs` (trusted
clients: it lets a request choose the image size). Images sent as they are get the official size but
vLLM's resampling, EXIF rotation and alpha compositing: close to the official score, not equal.
"""

from __future__ import annotations

import base64
import io
import json
import math

from .engines.vllm_engine import KEEP_SIZE
from .inputs import ImageInput, describe, load_image, resize
from .prompt import check_prompt
from .results import ScoreResult


def server_arguments(folder: str) -> list[str]:
    """`vllm serve` arguments for the exported folder: pooling runner, raw LAST pooling, per-request sizes."""
    pooler = json.dumps({"pooling_type": "LAST", "use_activation": False})  # [mu, log_sigma], not normalised
    return [folder, "--runner", "pooling", "--pooler-config", pooler, "--trust-request-mm-kwargs"]


def image_data_url(image: ImageInput) -> str:
    """The image as the official preprocessing sees it (RGB, resized), as a PNG `data:` URL."""
    resized = resize(load_image(image), describe(image))
    buffer = io.BytesIO()
    resized.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pooling_request(image: ImageInput, prompt: str, model: str | None = None) -> dict:
    """The JSON body for `POST /pooling` that returns `[mu, log_sigma]` for (image, prompt)."""
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        {"type": "text", "text": check_prompt(prompt)},
    ]
    body = {"messages": [{"role": "user", "content": content}], "task": "embed", "mm_processor_kwargs": KEEP_SIZE}
    if model is not None:
        body["model"] = model
    return body


def read_score(reply: dict, image: ImageInput, prompt: str) -> ScoreResult:
    """The `ScoreResult` in a `/pooling` reply (an `error` result when vLLM refused the request)."""
    name = describe(image)
    if "data" not in reply:
        return ScoreResult(name, prompt, error=f"vLLM: {reply.get('error', reply)}")
    mu, log_sigma = (float(value) for value in reply["data"][0]["data"])
    return ScoreResult(name, prompt, mu=mu, sigma=math.exp(log_sigma), log_sigma=log_sigma)
