"""Triton Python model `vision_encoder` (CPU target): ONNX Runtime, one image per run."""

from pathlib import Path

import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_each
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.engines.onnx_engine import OnnxVisionEncoder
from hpsv3_serve.step_inputs import check_patches


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        self.encoder = OnnxVisionEncoder(Path(parameters["artifacts"]), threads=int(parameters["threads"]))

    def _encode(self, request) -> list:
        patches, position_ids = request_inputs(pb_utils, request, "_PATCHES", "_POSITION_IDS")
        check_patches(patches, position_ids)  # a direct caller gets no more than preprocess could send
        return [pb_utils.Tensor("_IMAGE_EMBEDS", self.encoder.run(patches, position_ids)[None])]

    def execute(self, requests: list) -> list:
        return answer_each(pb_utils, "vision_encoder", requests, self._encode)
