"""Triton Python model `reward_head` (CPU target): ONNX Runtime rm_head over the whole batch."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_batch
from hpsv3_serve.engines.onnx_engine import OnnxRewardHead
from hpsv3_serve.step_inputs import check_hidden, single


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        self.head = OnnxRewardHead(Path(parameters["artifacts"]["string_value"]), threads=1)
        self.hidden_size = int(parameters["hidden_size"]["string_value"])

    def _hidden(self, request) -> np.ndarray:
        hidden = single(pb_utils.get_input_tensor_by_name(request, "_HIDDEN").as_numpy(), "_HIDDEN")
        check_hidden(hidden, self.hidden_size)
        return hidden

    def _run(self, rows: list[np.ndarray]) -> list[list]:
        mu, sigma = self.head(np.stack(rows))
        return [[pb_utils.Tensor("MU", mu[i : i + 1, None]), pb_utils.Tensor("SIGMA", sigma[i : i + 1, None])]
                for i in range(len(rows))]  # fmt: skip

    def execute(self, requests: list) -> list:
        return answer_batch(pb_utils, "reward_head", requests, self._hidden, self._run)
