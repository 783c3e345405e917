"""Triton Python model `language_model` (GPU target): the language tower in vLLM's async engine.

Every request of a dynamic batch goes to one `AsyncLLM` at once (its scheduler packs them into
forward steps by `max_num_batched_tokens`); the engine's event loop runs in a thread of its own.
The model folder is `ARTIFACTS/vllm/tower` from `hpsv3 export --vllm`: 1-D positions, LAST-token
pooling with no head, so the output is the final-norm hidden state at `<|Reward|>` (the TensorRT
reward_head applies rm_head in fp32). Images arrive as the vision encoder's embeddings.
"""

import asyncio
import json
import threading
import uuid
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_serve.engines.vllm_engine import embeds_prompt, engine_arguments, pooled


def _input(request, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()[0]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from vllm import PoolingParams

        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        folder = Path(parameters["vllm_model"]) / "tower"
        arguments = engine_arguments(
            folder,
            parameters["dtype"],
            max_num_batched_tokens=int(parameters["max_num_batched_tokens"]),
            gpu_memory_utilization=float(parameters["gpu_memory_utilization"]),
        )
        if parameters.get("quantization", "none") != "none":
            arguments["quantization"] = parameters["quantization"]  # e.g. fp8: vLLM quantizes the weights at load
        self.hidden_size = json.loads((folder / "config.json").read_text())["hidden_size"]
        self.pooling_params = PoolingParams(task="embed")
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-loop", daemon=True).start()
        self.engine = asyncio.run_coroutine_threadsafe(self._start(arguments), self.loop).result()

    @staticmethod
    async def _start(arguments: dict) -> object:
        """The engine is created on its loop, where its output handler will run."""
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**arguments))

    async def _hidden(self, prompt: dict) -> object:
        final = None
        async for output in self.engine.encode(prompt, self.pooling_params, request_id=uuid.uuid4().hex):
            final = output
        return final

    def _prompt(self, request) -> tuple[dict, int]:
        ids, embeds = _input(request, "_INPUT_IDS"), _input(request, "_IMAGE_EMBEDS")
        grid = _input(request, "_GRID_THW")
        if len(embeds) != grid[1] * grid[2] // 4:
            raise ValueError(f"{len(embeds)} image embeddings for an image grid of {grid.tolist()}")
        return embeds_prompt(ids, embeds, tuple(int(v) for v in grid)), len(ids)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        jobs = {}
        for index, request in enumerate(requests):
            try:
                prompt, length = self._prompt(request)
                jobs[index] = (asyncio.run_coroutine_threadsafe(self._hidden(prompt), self.loop), length)
            except (ValueError, IndexError) as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"language model: {exc}"))
        for index, (future, length) in jobs.items():
            try:
                hidden = pooled([future.result()], [length], self.hidden_size)
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor("_HIDDEN", hidden)])
            except Exception as exc:  # vLLM's errors are not typed; this request fails, the rest go on
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"language model: {exc}"))
        return responses

    def finalize(self) -> None:
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
