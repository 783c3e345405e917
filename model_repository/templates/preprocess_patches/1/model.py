"""Triton Python model `preprocess_patches`: PROMPT + the client's GRID_THW → token ids, rotary ids, checked grid."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_each, public_input
from hpsv3_serve.inputs import MERGE_SIZE, vision_position_ids
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer, decode_prompt
from hpsv3_serve.step_inputs import check_grid, single

LIMITS = ("max_prompt_tokens", "max_prompt_bytes")  # set by `hpsv3 serve`


def _input(request, name: str) -> np.ndarray:
    return single(pb_utils.get_input_tensor_by_name(request, name).as_numpy(), name)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        limits = InputLimits(**{key: int(parameters[key]["string_value"]) for key in LIMITS})
        self.tokenizer = PromptTokenizer.from_base(Path(parameters["base"]["string_value"]), limits)

    def _prepare(self, request) -> list:
        prompt = decode_prompt(bytes(_input(request, "PROMPT")[0]))
        grid = check_grid(_input(request, "GRID_THW"), "GRID_THW")
        ids = self.tokenizer.encode_one(prompt, grid[1] * grid[2] // (MERGE_SIZE * MERGE_SIZE))
        return [
            pb_utils.Tensor("_POSITION_IDS", vision_position_ids(grid)[None]),
            pb_utils.Tensor("_GRID_THW", np.array([grid], np.int64)),
            pb_utils.Tensor("_INPUT_IDS", ids[None]),
        ]

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, "preprocess_patches", requests, self._prepare, public_input)
