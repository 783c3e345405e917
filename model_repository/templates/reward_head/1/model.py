"""Triton Python model `reward_head` (CPU target): ONNX Runtime rm_head over the whole batch."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_serve.engines.onnx_engine import OnnxRewardHead


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.head = OnnxRewardHead(Path(parameters["artifacts"]["string_value"]), threads=1)

    def execute(self, requests: list) -> list:
        hidden = np.concatenate([pb_utils.get_input_tensor_by_name(r, "_HIDDEN").as_numpy() for r in requests])
        mu, sigma = self.head(hidden)
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("MU", mu[i : i + 1, None]), pb_utils.Tensor("SIGMA", sigma[i : i + 1, None])]
            )
            for i in range(len(requests))
        ]
