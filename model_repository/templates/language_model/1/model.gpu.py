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

import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import error_response
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.engines.vllm_engine import embeds_prompt, engine_arguments, pooled
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import PromptTokenizer
from hpsv3_serve.step_inputs import check_grid, check_image_embeds


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        from vllm import PoolingParams

        parameters = model_parameters(args)
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
        limits = InputLimits(max_prompt_tokens=int(parameters["max_prompt_tokens"]))
        self.sequences = PromptTokenizer.from_base(Path(parameters["base"]), limits).sequence_rules
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
        """vLLM's prompt for the request, after checking it is one preprocess and vision_encoder could send."""
        ids, embeds, grid = request_inputs(pb_utils, request, "_INPUT_IDS", "_IMAGE_EMBEDS", "_GRID_THW")
        grid = check_grid(grid)
        check_image_embeds(embeds, grid, self.hidden_size)
        self.sequences.check(ids, len(embeds))
        return embeds_prompt(ids, embeds, grid), len(ids)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        jobs = {}
        for index, request in enumerate(requests):
            try:
                prompt, length = self._prompt(request)
                jobs[index] = (asyncio.run_coroutine_threadsafe(self._hidden(prompt), self.loop), length)
            except Exception as exc:  # this request fails alone, the rest go on
                responses[index] = error_response(pb_utils, "language_model", exc)
        for index, (future, length) in jobs.items():
            try:
                hidden = pooled([future.result()], [length], self.hidden_size)
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor("_HIDDEN", hidden)])
            except Exception as exc:  # vLLM's errors are not typed: logged, the client gets an incident id
                responses[index] = error_response(pb_utils, "language_model", exc)
        return responses

    def finalize(self) -> None:
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
