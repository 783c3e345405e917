"""Triton Python model `vision_encoder` (CPU target): ONNX Runtime, one image per run."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_each
from hpsv3_serve.engines.onnx_engine import OnnxVisionEncoder
from hpsv3_serve.step_inputs import check_patches, single


def _input(request, name: str):
    return single(pb_utils.get_input_tensor_by_name(request, name).as_numpy(), name)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        threads = int(parameters["threads"]["string_value"])
        self.encoder = OnnxVisionEncoder(Path(parameters["artifacts"]["string_value"]), threads=threads)

    def _encode(self, request) -> list:
        patches, position_ids = _input(request, "_PATCHES"), _input(request, "_POSITION_IDS")
        check_patches(patches, position_ids)  # a direct caller gets no more than preprocess could send
        return [pb_utils.Tensor("_IMAGE_EMBEDS", self.encoder.run(patches, position_ids)[None])]

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, "vision_encoder", requests, self._encode)
