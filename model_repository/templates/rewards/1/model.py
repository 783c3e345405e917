"""Triton Python model `rewards`: IMAGE + PROMPT → SCORE_<MODEL> for HPSv3 and each judge, the image decoded once,
and ERRORS: why a model that refused the item could not score it (its score is then NaN)."""

import asyncio
import json
import re

import numpy as np
import triton_python_backend_utils as pb_utils

from hpsv3_repository.responses import error_response, public_error, public_input
from hpsv3_repository.stub_io import model_parameters, request_inputs
from hpsv3_serve.errors import InputError, PromptError, TensorError
from hpsv3_serve.judges.served import judge_device, prepare_all, score_output, served_judge
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import decode_prompt

LIMITS = ("max_image_bytes", "max_image_pixels", "max_prompt_bytes")  # set by `hpsv3 serve`
HPSV3 = "hpsv3_patches"  # HPSv3 on pixels already decoded: the ensemble the client uses for arrays
NAMED = re.compile(r"^(?:in ensemble '[^']*', )?([A-Z_]+): (.*)$", re.S)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = model_parameters(args)
        self.limits = InputLimits(allow_urls=False, **{key: int(parameters[key]) for key in LIMITS})
        self.judges = {}
        device = judge_device(parameters["device"], args)
        for source in json.loads(parameters["judges"]):
            self.judges[source["name"]] = served_judge(**source, limits=self.limits, device=device,
                                                       dtype=parameters["dtype"])  # fmt: skip

    def _prepare(self, request) -> tuple:
        image, prompt = request_inputs(pb_utils, request, "IMAGE", "PROMPT")
        items, patches = prepare_all(self.judges, bytes(image[0]), decode_prompt(bytes(prompt[0])), self.limits, True)
        return items, patches, bytes(prompt[0])

    async def _hpsv3(self, patches, prompt: bytes) -> float:
        inputs = [
            pb_utils.Tensor("PATCHES", patches.patches[None]),
            pb_utils.Tensor("GRID_THW", np.array([patches.grid_thw], np.int64)),
            pb_utils.Tensor("PROMPT", np.array([[prompt]], dtype=np.object_)),
        ]
        request = pb_utils.InferenceRequest(model_name=HPSV3, inputs=inputs, requested_output_names=["MU"])
        response = await request.async_exec()
        if response.has_error():
            error = response.error()
            named = NAMED.match(error.message())
            # "PROMPT: over the token limit": an input error names an upper-case tensor (an incident names the
            # model); the code BLS reports for an ensemble's step is not INVALID_ARG, so the name decides
            if named:
                kind = PromptError if named.group(1) == "PROMPT" else TensorError  # as hpsv3_patches named it
                raise kind(named.group(1), f"{named.group(2)} (hpsv3)")
            raise RuntimeError(f"{HPSV3}: {error.message()}")
        return float(pb_utils.get_output_tensor_by_name(response, "MU").as_numpy().reshape(-1)[0])

    def _score(self, name: str, items: list) -> list:
        """The judge's scores of `items`, or per item (a float or the exception) when the batch fails."""
        try:
            return list(self.judges[name].score_batch(items))
        except Exception:
            if len(items) == 1:
                raise
            outcomes = []
            for item in items:
                try:
                    outcomes.append(self.judges[name].score_batch([item])[0])
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    async def execute(self, requests: list) -> list:
        responses, prepared = [None] * len(requests), {}
        for index, request in enumerate(requests):
            try:
                prepared[index] = self._prepare(request)
            except Exception as exc:
                tensor = public_input(exc) if isinstance(exc, InputError) else None
                responses[index] = error_response(pb_utils, "rewards", exc, tensor)
        indices = list(prepared)
        outcomes = {index: {} for index in indices}
        hpsv3 = asyncio.gather(*(self._hpsv3(prepared[i][1], prepared[i][2]) for i in indices), return_exceptions=True)
        await asyncio.sleep(0)  # the HPSv3 requests are sent; the server scores them while the judges run here
        for name in self.judges:
            try:
                scores = self._score(name, [prepared[i][0][name] for i in indices])
            except Exception as exc:
                scores = [exc] * len(indices)
            for index, outcome in zip(indices, scores, strict=True):
                outcomes[index][name] = outcome
        for index, outcome in zip(indices, await hpsv3, strict=True):
            outcomes[index] = {"hpsv3": outcome} | outcomes[index]
        for index in indices:
            responses[index] = self._respond(outcomes[index])
        return responses

    def _respond(self, outcome: dict):
        """Every model's score; a model that refused the item gets NaN and its reason in ERRORS (JSON, model →
        message). When none scored it, the request fails with the first model's error."""
        failed = {name: value for name, value in outcome.items() if isinstance(value, BaseException)}

        def named(exc: BaseException) -> str | None:
            return public_input(exc) if isinstance(exc, InputError) else None

        if len(failed) == len(outcome):
            first = next(iter(failed.values()))
            return error_response(pb_utils, "rewards", first, named(first))
        reasons = {name: public_error(pb_utils, "rewards", exc, named(exc))[0] for name, exc in failed.items()}
        tensors = [pb_utils.Tensor(score_output(name), np.array([[np.nan if name in failed else value]], np.float32))
                   for name, value in outcome.items()]  # fmt: skip
        tensors.append(pb_utils.Tensor("ERRORS", np.array([[json.dumps(reasons).encode()]], dtype=np.object_)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
