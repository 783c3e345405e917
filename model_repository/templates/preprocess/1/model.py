"""Triton Python model `preprocess`: IMAGE bytes + PROMPT bytes → uint8 patches, rotary ids, grid, token ids."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_each, public_input
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.inputs import describe, grid_of, load_image, patch_pixels, resize, vision_position_ids
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer, decode_prompt

LIMITS = ("max_image_bytes", "max_image_pixels", "max_prompt_tokens", "max_prompt_bytes")  # set by `hpsv3 serve`


def _scalar(request, name: str) -> bytes:
    return bytes(request_inputs(pb_utils, request, name)[0][0])


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        limits = {key: int(parameters[key]) for key in LIMITS if key in parameters}
        self.limits = InputLimits(allow_urls=False, **limits)  # the server takes bytes and never fetches
        self.tokenizer = PromptTokenizer.from_base(Path(parameters["base"]), self.limits)

    def _prepare(self, request) -> list:
        prompt = decode_prompt(_scalar(request, "PROMPT"))
        data = _scalar(request, "IMAGE")
        image = resize(load_image(data, self.limits), describe(data))
        patches, grid = patch_pixels(image), grid_of(image)
        ids = self.tokenizer.encode_one(prompt, len(patches) // 4)
        return [
            pb_utils.Tensor("_PATCHES", patches[None]),
            pb_utils.Tensor("_POSITION_IDS", vision_position_ids(grid)[None]),
            pb_utils.Tensor("_GRID_THW", np.array([grid], np.int64)),
            pb_utils.Tensor("_INPUT_IDS", ids[None]),
        ]

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, "preprocess", requests, self._prepare, public_input)
