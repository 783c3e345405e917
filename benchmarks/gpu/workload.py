"""Synthetic requests with real shapes, prepared in worker processes (no torch here: workers stay light).

Images are generated JPEGs at common generator sizes, decoded, smart-resized and patchified by
`hpsv3_serve.inputs` exactly as in serving. Token ids are random but have the real structure and length
(chat prefix, image pads, 524–614 text tokens up to `<|Reward|>`): the lent machine has no Qwen tokenizer
and ids do not change the work done.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from hpsv3_serve.batching import Batch, PreparedItem, collate
from hpsv3_serve.inputs import prepare_image
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import IMAGE_PAD_TOKEN_ID, PAD_TOKEN_ID, REWARD_TOKEN_ID

IMAGE_SIZES = ((1024, 1024), (1920, 1080), (768, 1344), (1216, 832))  # width × height
TEXT_TOKENS = (524, 614)  # ids besides the image pads, `<|Reward|>` included (780–870 in all for 256 pads)
PREFIX_TOKENS = 15  # `<|im_start|>system … <|vision_start|>` before the image pads
# The official sequence goes on after `<|Reward|>`: "\n\nEND\n<|im_end|>\n<|im_start|>assistant\n".
OFFICIAL_TAIL = np.array([271, 4689, 198, 151645, 198, 151644, 77091, 198], np.int64)

_JPEGS: list[bytes] = []


@dataclass(frozen=True)
class Request:
    """One (image, prompt) request: which generated JPEG, how many text ids, and the seed of those ids."""

    image: int
    text_tokens: int
    seed: int


def make_jpegs(count: int, sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES, seed: int = 0) -> list[bytes]:
    """`count` smooth random JPEGs (quality 90), cycling through `sizes`."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), np.uint8), "RGB")
        pixels = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.int16)
        pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def make_requests(count: int, images: int, text_tokens: tuple[int, int] = TEXT_TOKENS, seed: int = 0) -> list[Request]:
    """`count` requests over `images` JPEGs with text lengths drawn uniformly from `text_tokens`."""
    rng = np.random.default_rng(seed)
    low, high = text_tokens
    return [Request(i % images, int(rng.integers(low, high + 1)), seed * 1_000_003 + i) for i in range(count)]


def init_worker(jpegs: list[bytes]) -> None:
    """Pool initializer: the JPEGs are sent once per worker, requests then travel as three integers."""
    _JPEGS[:] = jpegs


def token_ids(request: Request, image_tokens: int) -> np.ndarray:
    """Prefix, image pads, text ids, `<|Reward|>`: int64 [PREFIX_TOKENS + image_tokens + text − PREFIX]."""
    rng = np.random.default_rng(request.seed)
    text = rng.integers(0, PAD_TOKEN_ID, request.text_tokens, dtype=np.int64)
    text[-1] = REWARD_TOKEN_ID
    pads = np.full(image_tokens, IMAGE_PAD_TOKEN_ID, np.int64)
    return np.concatenate([text[:PREFIX_TOKENS], pads, text[PREFIX_TOKENS:]])


def prepare(request: Request) -> PreparedItem:
    """Decode, resize and patchify the request's JPEG and build its ids (runs in a worker process)."""
    image = prepare_image(_JPEGS[request.image], InputLimits(allow_urls=False))
    return PreparedItem(input_ids=token_ids(request, image.num_tokens), image=image)


def official_batch(items: list[PreparedItem]) -> Batch:
    """The official batch: full sequences (tail after `<|Reward|>` included) right-padded in arrival order."""
    batch = collate([replace(item, input_ids=np.concatenate([item.input_ids, OFFICIAL_TAIL])) for item in items])
    return replace(batch, reward_index=batch.reward_index - len(OFFICIAL_TAIL))


def length_sorted(items: list[PreparedItem], batch_size: int) -> list[list[PreparedItem]]:
    """Batches of similar sequence length (little padding in the language tower, 88 % of the work), each
    ordered by patch count so that equal-size images sit together: one attention call per run of them."""
    order = sorted(items, key=lambda item: len(item.input_ids))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [sorted(batch, key=lambda item: len(item.image.patches)) for batch in batches]
