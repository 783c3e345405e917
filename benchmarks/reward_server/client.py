"""The client side: flow_grpo's `unifiedreward_score_remote` reward function (what differs: __init__.py)."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from io import BytesIO

import numpy as np
import requests
from PIL import Image
from requests.adapters import HTTPAdapter, Retry

BATCH_SIZE = 64  # flow_grpo's
RETRIES = 1000  # flow_grpo's


def reward_server_fn(
    url: str, batch_size: int = BATCH_SIZE, retries: int = RETRIES
) -> Callable[[Sequence[np.ndarray], Sequence[str], object], tuple[list[float], dict]]:
    """`fn(images, prompts, metadata) -> (scores, info)`: uint8 [H, W, 3] arrays are JPEG-encoded, pickled with the
    prompts and POSTed `batch_size` at a time; `info["request_bytes"]` sums the POST bodies."""
    sess = requests.Session()
    retry = Retry(total=retries, backoff_factor=1, status_forcelist=[500], allowed_methods=False)
    sess.mount("http://", HTTPAdapter(max_retries=retry))

    def _fn(images: Sequence[np.ndarray], prompts: Sequence[str], metadata: object = None) -> tuple[list[float], dict]:
        batches = np.array_split(np.arange(len(images)), np.ceil(len(images) / batch_size))
        all_scores: list[float] = []
        sent = 0
        for batch in batches:
            jpeg_images = []
            for index in batch:  # Compress the images using JPEG
                buffer = BytesIO()
                Image.fromarray(images[index]).save(buffer, format="JPEG")
                jpeg_images.append(buffer.getvalue())
            data_bytes = pickle.dumps({"images": jpeg_images, "prompts": np.asarray(prompts)[batch]})
            sent += len(data_bytes)
            response = sess.post(url, data=data_bytes, timeout=120)
            all_scores += pickle.loads(response.content)["outputs"]
        return all_scores, {"request_bytes": sent}

    return _fn
