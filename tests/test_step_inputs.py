"""Direct calls to every internal step of the served graph (a client may skip `preprocess`): each refuses tensors
`preprocess` would never make with INVALID_ARGUMENT naming the tensor and nothing else, valid hand-made tensors
chained through the steps give the ensemble's score, and the server answers a normal request after each case."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from hpsv3_repository.launcher import TritonServer
from hpsv3_serve.inputs import prepare_image, vision_position_ids
from hpsv3_serve.prompt import IMAGE_PAD_TOKEN_ID, REWARD_TOKEN_ID, VOCAB_ROWS, PromptTokenizer

from .conftest import IMAGES
from .test_hostile_inputs import LEAKS

PROMPT = "a lighthouse at night"
OUTPUT = {"vision_encoder": "_IMAGE_EMBEDS", "language_model": "_HIDDEN", "reward_head": "MU"}
Tensors = dict[str, np.ndarray]


def _call(client: grpcclient.InferenceServerClient, model: str, tensors: Tensors, outputs: list[str]) -> list:
    inputs = []
    for name, value in tensors.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return [result.as_numpy(name) for name in outputs]


@pytest.fixture(scope="module")
def valid(tiny_server: TritonServer, tiny) -> dict[str, Tensors]:
    """Tensors each step would get for one real image, made by hand with the core library and the steps."""
    image = prepare_image(IMAGES / "photo_800x600.jpg")
    ids = PromptTokenizer.from_base(tiny / "base").encode_one(PROMPT, image.num_tokens)
    vision = {"_PATCHES": image.patches[None], "_POSITION_IDS": vision_position_ids(image.grid_thw)[None]}
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        (embeds,) = _call(client, "vision_encoder", vision, ["_IMAGE_EMBEDS"])
        language = {"_INPUT_IDS": ids[None], "_IMAGE_EMBEDS": embeds, "_GRID_THW": np.array([image.grid_thw])}
        (hidden,) = _call(client, "language_model", language, ["_HIDDEN"])
    return {"vision_encoder": vision, "language_model": language, "reward_head": {"_HIDDEN": hidden}}


def _ensemble_mu(client: grpcclient.InferenceServerClient) -> float:
    data = (IMAGES / "photo_800x600.jpg").read_bytes()
    tensors = {"IMAGE": np.array([[data]], np.object_), "PROMPT": np.array([[PROMPT.encode()]], np.object_)}
    return float(_call(client, "hpsv3", tensors, ["MU"])[0].ravel()[0])


def test_hand_made_valid_tensors_through_the_steps_give_the_ensemble_score(tiny_server: TritonServer, valid) -> None:
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        (mu,) = _call(client, "reward_head", valid["reward_head"], ["MU"])
        assert float(mu.ravel()[0]) == pytest.approx(_ensemble_mu(client), abs=1e-6)


def _ids(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, "_INPUT_IDS": edit(t["_INPUT_IDS"][0].copy())[None]}


def _set(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensors], Tensors]:
    return lambda t: {**t, name: make(t[name])}


def _at(index: int, value: int) -> Callable[[np.ndarray], np.ndarray]:
    def edit(ids: np.ndarray) -> np.ndarray:
        ids[index] = value
        return ids

    return edit


def _patches(count: int) -> Callable[[Tensors], Tensors]:
    """`count` patches with the ids of a 2 × count/2 grid."""
    grid = (1, 2, count // 2)
    return lambda t: {"_PATCHES": np.zeros((1, count, 588), np.uint8), "_POSITION_IDS": vision_position_ids(grid)[None]}


CASES: dict[str, tuple[str, Callable[[Tensors], Tensors], str | None]] = {  # name: (model, edit, error fragment)
    # vision_encoder
    "too-few-patches": ("vision_encoder", _patches(8), "_PATCHES: 8 patches; preprocess makes 508 to 1816"),
    "too-many-patches": ("vision_encoder", _patches(40_000), "_PATCHES: 40000 patches"),
    "shuffled-positions": ("vision_encoder", _set("_POSITION_IDS", lambda p: p[:, ::-1].copy()), "_POSITION_IDS: not"),
    "negative-positions": ("vision_encoder", _set("_POSITION_IDS", lambda p: p - 7), "_POSITION_IDS"),
    "huge-positions": ("vision_encoder", _set("_POSITION_IDS", lambda p: p * 10**12), "_POSITION_IDS"),
    "float-patches": ("vision_encoder", _set("_PATCHES", lambda p: p.astype(np.float32)), None),  # Triton's own
    "two-images-in-one-request": ("vision_encoder", _set("_PATCHES", lambda p: np.concatenate([p, p])), None),
    # language_model
    "id-past-the-vocabulary": ("language_model", _ids(_at(-3, VOCAB_ROWS)), "_INPUT_IDS: ids must lie in"),
    "negative-id": ("language_model", _ids(_at(-3, -1)), "_INPUT_IDS: ids must lie in"),
    "huge-id": ("language_model", _ids(_at(-3, 2**62)), "_INPUT_IDS: ids must lie in"),
    "a-million-ids": (
        "language_model",
        _ids(lambda i: np.concatenate([i[:-1], np.full(10**6, 9707), i[-1:]])),
        "_INPUT_IDS: 1000",
    ),
    "no-reward-at-the-end": ("language_model", _ids(lambda i: i[:-1]), "_INPUT_IDS: the sequence must end at"),
    "two-reward-tokens": ("language_model", _ids(_at(-3, REWARD_TOKEN_ID)), "_INPUT_IDS: the sequence must end at"),
    "not-the-chat-prefix": ("language_model", _ids(_at(0, 0)), "_INPUT_IDS: the sequence does not start with"),
    "image-pad-in-the-text": ("language_model", _ids(_at(-3, IMAGE_PAD_TOKEN_ID)), "_INPUT_IDS: expected"),
    "grid-of-other-size": (
        "language_model",
        _set("_GRID_THW", lambda g: g + np.array([0, 0, 2])),
        "_IMAGE_EMBEDS: expected",
    ),
    "grid-odd": ("language_model", _set("_GRID_THW", lambda g: g + np.array([0, 1, 0])), "_GRID_THW: "),
    "grid-of-a-video": ("language_model", _set("_GRID_THW", lambda g: g + np.array([1, 0, 0])), "_GRID_THW: "),
    "grid-negative": ("language_model", _set("_GRID_THW", lambda g: -g), "_GRID_THW: "),
    "grid-huge": ("language_model", _set("_GRID_THW", lambda g: g * [1, 1000, 1000]), "_GRID_THW: "),
    "embeds-nan": ("language_model", _set("_IMAGE_EMBEDS", lambda e: e * np.float32("nan")), "_IMAGE_EMBEDS: holds"),
    "embeds-too-few": ("language_model", _set("_IMAGE_EMBEDS", lambda e: e[:, :-4].copy()), "_IMAGE_EMBEDS: expect"),
    "two-items-in-one-request": (
        "language_model",
        lambda t: {k: np.concatenate([v, v]) for k, v in t.items()},
        "a batch of 2; send one item per request",
    ),
    # reward_head
    "hidden-nan": ("reward_head", _set("_HIDDEN", lambda h: h * np.float32("nan")), "_HIDDEN: holds NaN"),
    "hidden-inf": ("reward_head", _set("_HIDDEN", lambda h: h / np.float32(0)), "_HIDDEN: holds NaN"),
    "three-rows-in-one-request": (
        "reward_head",
        _set("_HIDDEN", lambda h: np.concatenate([h, h, h])),
        "_HIDDEN: a batch of 3; send one item per request",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_each_step_refuses_what_preprocess_would_not_make(tiny_server: TritonServer, valid, name: str) -> None:
    model, edit, fragment = CASES[name]
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        normal = _ensemble_mu(client)
        with pytest.raises(InferenceServerException) as refused:
            _call(client, model, edit(valid[model]), [OUTPUT[model]])
        message = refused.value.message()
        if fragment is not None:  # ours: INVALID_ARGUMENT naming the tensor
            assert fragment in message and refused.value.status() == "StatusCode.INVALID_ARGUMENT", message
        assert not any(leak in message for leak in LEAKS), message
        assert _ensemble_mu(client) == normal, f"the server answers normally after {name}"


def test_preprocess_called_with_a_batch_names_the_input(tiny_server: TritonServer) -> None:
    data = (IMAGES / "small_200.png").read_bytes()
    tensors = {"IMAGE": np.array([[data], [data]], np.object_), "PROMPT": np.array([[b"a"], [b"b"]], np.object_)}
    with (
        grpcclient.InferenceServerClient(tiny_server.grpc_url) as client,
        pytest.raises(InferenceServerException, match=r"(IMAGE|PROMPT): a batch of 2; send one item per request"),
    ):
        _call(client, "preprocess", tensors, ["_PATCHES"])
