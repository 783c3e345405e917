"""Triton Python model `reward_model` (GPU target, --engine torch): the fast engine over each dynamic batch."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import answer_batch
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve import engines
from hpsv3_serve.batching import PreparedItem, collate
from hpsv3_serve.engines.fast_engine import served_lengths
from hpsv3_serve.inputs import PreparedImage, vision_position_ids
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.step_inputs import check_grid, check_patches


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        device = parameters["device"]
        if device == "cuda":  # KIND_GPU: the instance's own card, current in this stub (graph capture uses it)
            import torch

            device = f"cuda:{args['model_instance_device_id']}"
            torch.cuda.set_device(device)
        self.engine = engines.load(
            "fast",
            checkpoint=parameters["checkpoint"],
            base=parameters["base"],
            device=device,
            dtype=parameters["dtype"],
            compile_layers=parameters["compile"] == "True",
            cuda_graphs=parameters["cuda_graphs"] == "True",
        )
        limits = InputLimits(max_prompt_tokens=int(parameters["max_prompt_tokens"]))
        tokenizer = PromptTokenizer.from_base(Path(parameters["base"]), limits)
        self.sequences = tokenizer.sequence_rules
        max_batch = json.loads(args["model_config"])["max_batch_size"]
        if graphs := self.engine.warm_up(max_batch, served_lengths(tokenizer)):  # before the first request
            pb_utils.Logger.log_info(f"reward_model: {graphs} CUDA graphs captured for batches up to {max_batch}")

    def _prepare(self, request) -> PreparedItem:
        """The request as an item, after checking it is one preprocess could send."""
        patches, grid, ids = request_inputs(pb_utils, request, "_PATCHES", "_GRID_THW", "_INPUT_IDS")
        grid = check_grid(grid)
        check_patches(patches, vision_position_ids(grid))
        self.sequences.check(ids, len(patches) // 4)
        return PreparedItem(ids, PreparedImage(patches, grid))

    def _run(self, items: list[PreparedItem]) -> list[list]:
        scores = self.engine.score(collate(items))
        mu, sigma = scores[:, :1], np.exp(scores[:, 1:])
        return [[pb_utils.Tensor("MU", mu[i : i + 1]), pb_utils.Tensor("SIGMA", sigma[i : i + 1])]
                for i in range(len(items))]  # fmt: skip

    def execute(self, requests: list) -> list:
        return answer_batch(pb_utils, "reward_model", requests, self._prepare, self._run)

    def finalize(self) -> None:
        self.engine.close()
