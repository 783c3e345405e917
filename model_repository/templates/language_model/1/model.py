"""Triton Python model `language_model` (CPU target): embed, batch, ONNX Runtime tower."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_serve.engines.onnx_engine import OnnxLanguageTower


def _input(request, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()[0]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        threads = int(parameters["threads"]["string_value"])
        self.tower = OnnxLanguageTower(Path(parameters["artifacts"]["string_value"]), threads=threads)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        rows, sequences = [], []
        for index, request in enumerate(requests):
            try:
                embeds, grid = _input(request, "_IMAGE_EMBEDS"), _input(request, "_GRID_THW")
                if len(embeds) != grid[1] * grid[2] // 4:
                    raise ValueError(f"{len(embeds)} image embeddings for an image grid of {grid.tolist()}")
                sequences.append(self.tower.embed(_input(request, "_INPUT_IDS"), embeds))
                rows.append(index)
            except (ValueError, IndexError) as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"language model: {exc}"))
        if sequences:
            hidden = self.tower(sequences)
            for row, index in enumerate(rows):
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor("_HIDDEN", hidden[row : row + 1])])
        return responses
