"""Triton Python model `language_model` (CPU target): embed, batch, ONNX Runtime tower."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_batch
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.engines.onnx_engine import OnnxLanguageTower
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.step_inputs import check_grid, check_image_embeds


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        self.tower = OnnxLanguageTower(Path(parameters["artifacts"]), threads=int(parameters["threads"]))
        self.hidden_size = self.tower.embed_tokens.shape[1]
        limits = InputLimits(max_prompt_tokens=int(parameters["max_prompt_tokens"]))
        self.sequences = PromptTokenizer.from_base(Path(parameters["base"]), limits).sequence_rules

    def _embed(self, request) -> np.ndarray:
        """The request's sequence embedded, after checking it is one preprocess and vision_encoder could send."""
        ids, embeds, grid = request_inputs(pb_utils, request, "_INPUT_IDS", "_IMAGE_EMBEDS", "_GRID_THW")
        grid = check_grid(grid)
        check_image_embeds(embeds, grid, self.hidden_size)
        self.sequences.check(ids, len(embeds))
        return self.tower.embed(ids, embeds)

    def _run(self, sequences: list[np.ndarray]) -> list[list]:
        hidden = self.tower(sequences)
        return [[pb_utils.Tensor("_HIDDEN", hidden[row : row + 1])] for row in range(len(sequences))]

    def execute(self, requests: list) -> list:
        return answer_batch(pb_utils, "language_model", requests, self._embed, self._run)
