"""Triton Python model for one judge (`templates/judge`): IMAGE bytes + PROMPT bytes → SCORE, batched."""

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_batch, public_input
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.judges.served import judge_device, served_judge
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import decode_prompt

LIMITS = ("max_image_bytes", "max_image_pixels", "max_prompt_bytes")  # set by `hpsv3 serve`


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        self.name = parameters["judge"]
        limits = InputLimits(allow_urls=False, **{key: int(parameters[key]) for key in LIMITS})
        device = judge_device(parameters["device"], args)
        self.judge = served_judge(
            self.name, parameters["weights"], parameters["judge_base"], parameters["onnx"], limits, device,
            parameters["dtype"],
        )  # fmt: skip

    def _prepare(self, request):
        image, prompt = request_inputs(pb_utils, request, "IMAGE", "PROMPT")
        return self.judge.prepare(bytes(image[0]), decode_prompt(bytes(prompt[0])))

    def _run(self, items: list) -> list[list]:
        scores = np.asarray(self.judge.score_batch(items), np.float32)
        return [[pb_utils.Tensor("SCORE", scores[i : i + 1, None])] for i in range(len(items))]

    def execute(self, requests: list) -> list:
        return answer_batch(pb_utils, self.name, requests, self._prepare, self._run, public_input)
