"""Triton Python model `preprocess_patches`: PROMPT + the client's GRID_THW → token ids, rotary ids, checked grid."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_each, public_input
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.inputs import MERGE_SIZE, vision_position_ids
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer, decode_prompt
from hpsv3_serve.step_inputs import check_grid

LIMITS = ("max_prompt_tokens", "max_prompt_bytes")  # set by `hpsv3 serve`


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        limits = InputLimits(**{key: int(parameters[key]) for key in LIMITS})
        self.tokenizer = PromptTokenizer.from_base(Path(parameters["base"]), limits)

    def _prepare(self, request) -> list:
        prompt, grid = request_inputs(pb_utils, request, "PROMPT", "GRID_THW")
        prompt, grid = decode_prompt(bytes(prompt[0])), check_grid(grid, "GRID_THW")
        ids = self.tokenizer.encode_one(prompt, grid[1] * grid[2] // (MERGE_SIZE * MERGE_SIZE))
        return [
            pb_utils.Tensor("_POSITION_IDS", vision_position_ids(grid)[None]),
            pb_utils.Tensor("_GRID_THW", np.array([grid], np.int64)),
            pb_utils.Tensor("_INPUT_IDS", ids[None]),
        ]

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, "preprocess_patches", requests, self._prepare, public_input)
