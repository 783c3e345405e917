"""Triton Python model `vision_encoder` (CPU target): ONNX Runtime, one image per run."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from hpsv3_serve.engines.onnx_engine import OnnxVisionEncoder


def _input(request, name: str):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        threads = int(parameters["threads"]["string_value"])
        self.encoder = OnnxVisionEncoder(Path(parameters["artifacts"]["string_value"]), threads=threads)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                embeds = self.encoder.run(_input(request, "_PATCHES")[0], _input(request, "_POSITION_IDS")[0])
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("_IMAGE_EMBEDS", embeds[None])]))
            except (RuntimeError, ValueError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"vision encoder: {exc}")))
        return responses
