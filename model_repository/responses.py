"""How the repository's Python models answer: one response per request, and errors that reveal nothing.

A request whose inputs are wrong (`InputError`: a bad image or prompt, or a tensor an internal step would never get
from the step before it) gets INVALID_ARG with a short `NAME: reason`. Anything else is the server's fault: its
traceback goes to the server log under an incident id and the client gets only `MODEL: internal error (incident
ID)`: no stack trace, path or exception repr leaves the server (an exception escaping `execute` would reach the
client with the Python backend's `At:` file/line trace).
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable
from typing import Any

from hpsv3_serve.errors import InputError, PromptError, TensorError

Request = Any  # pb_utils.InferenceRequest: the backend's types exist only inside a stub
Response = Any


def public_input(exc: InputError) -> str:
    """The input an entry step's error is about, as the client named it: a tensor, PROMPT, or IMAGE."""
    if isinstance(exc, TensorError):
        return exc.input_name
    return "PROMPT" if isinstance(exc, PromptError) else "IMAGE"


def public_error(pb_utils: Any, model: str, exc: BaseException, tensor: str | None = None) -> tuple[str, int]:
    """What a client may read of `exc`, and its Triton error code: INVALID_ARG `TENSOR: reason` for an `InputError`
    (`tensor` overrides the name it carries); otherwise a logged incident and a message that only names it."""
    if isinstance(exc, InputError):
        return f"{tensor or exc.input_name}: {exc.reason}", pb_utils.TritonError.INVALID_ARG
    incident = uuid.uuid4().hex[:12]
    pb_utils.Logger.log_error(f"{model}: incident {incident}:\n{''.join(traceback.format_exception(exc))}")
    return f"{model}: internal error (incident {incident} in the server log)", pb_utils.TritonError.INTERNAL


def error_response(pb_utils: Any, model: str, exc: BaseException, tensor: str | None = None) -> Response:
    """The response of a request that failed with `exc` (`public_error`'s message and code)."""
    message, code = public_error(pb_utils, model, exc, tensor)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def answer_each(
    pb_utils: Any,
    model: str,
    requests: list[Request],
    answer: Callable[[Request], list],
    tensor_of: Callable[[InputError], str | None] = lambda exc: None,
) -> list[Response]:
    """A response per request: `answer(request)`'s output tensors, or that request's error alone."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=answer(request)))
        except Exception as exc:  # whatever one request raises fails that request only
            responses.append(
                error_response(pb_utils, model, exc, tensor_of(exc) if isinstance(exc, InputError) else None)
            )
    return responses


def answer_batch(
    pb_utils: Any,
    model: str,
    requests: list[Request],
    prepare: Callable[[Request], Any],
    run: Callable[[list[Any]], list[list]],
    tensor_of: Callable[[InputError], str | None] = lambda exc: None,
) -> list[Response]:
    """`prepare` each request (its error is its own; `tensor_of` names the input as in `answer_each`), `run` the
    prepared ones as one batch (output tensors per item); when the batch fails, each item runs alone, so only an
    item that fails by itself gets an error."""
    responses: list[Response] = [None] * len(requests)
    prepared: dict[int, Any] = {}
    for index, request in enumerate(requests):
        try:
            prepared[index] = prepare(request)
        except Exception as exc:
            responses[index] = error_response(
                pb_utils, model, exc, tensor_of(exc) if isinstance(exc, InputError) else None
            )
    if not prepared:
        return responses
    try:
        outputs = dict(zip(prepared, run(list(prepared.values())), strict=True))
    except Exception:
        outputs = {}
        for index, item in prepared.items():
            try:
                outputs[index] = run([item])[0]
            except Exception as exc:
                responses[index] = error_response(pb_utils, model, exc)
    for index, tensors in outputs.items():
        responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
    return responses
