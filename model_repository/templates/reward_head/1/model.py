"""Triton Python model `reward_head` (CPU target): ONNX Runtime rm_head over the whole batch."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_batch
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.engines.onnx_engine import OnnxRewardHead
from hpsv3_serve.step_inputs import check_hidden


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        self.head = OnnxRewardHead(Path(parameters["artifacts"]), threads=1)
        self.hidden_size = int(parameters["hidden_size"])

    def _hidden(self, request) -> np.ndarray:
        (hidden,) = request_inputs(pb_utils, request, "_HIDDEN")
        check_hidden(hidden, self.hidden_size)
        return hidden

    def _run(self, rows: list[np.ndarray]) -> list[list]:
        mu, sigma = self.head(np.stack(rows))
        return [[pb_utils.Tensor("MU", mu[i : i + 1, None]), pb_utils.Tensor("SIGMA", sigma[i : i + 1, None])]
                for i in range(len(rows))]  # fmt: skip

    def execute(self, requests: list) -> list:
        return answer_batch(pb_utils, "reward_head", requests, self._hidden, self._run)
