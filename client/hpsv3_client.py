"""`HPSv3Client`: score (image, prompt) pairs against the `hpsv3` model of a Triton server over asyncio gRPC.

One item per request (IMAGE and PROMPT of shape [1, 1]) so that a bad item fails only its own request; the
server's dynamic batcher regroups the requests, and up to `concurrency` of them are in flight at once. Images
held in memory (numpy arrays, torch tensors, PIL images) are resized and patched here by the server's own code
and go to the `hpsv3_patches` twin as uint8 PATCHES + GRID_THW: no encoding, no decoding, the same scores.

`model=` picks the served reward model: "hpsv3" (results carry mu and sigma; `.score` is mu) or another judge that
`hpsv3 serve --models` serves ("pickscore", "clip-h", "aesthetic", "hpsv2", ...: results are `JudgeResult`s whose
`.score` is the model's SCORE, mu and sigma None), or "rewards" (every served model's score of each item from one
request: `RewardsResult.scores`, model name → score, and `.errors` for a model that refused the item). Judges take
IMAGE only: images held in memory go to them as lossless PNG (TIFF for modes PNG cannot hold), in their own mode,
so a judge sees the pixels the in-process judge would.

Several endpoints (`HPSv3Client("gpu-a:8001,gpu-b:8001")` or a list) share the load: each request goes to the
healthy endpoint with the fewest requests in flight. An endpoint that is down (UNAVAILABLE) or going down
(unloading its models) is taken out of rotation and its request goes to another one (inference is
idempotent); after a cool-down that doubles with each failure (up to `MAX_COOLDOWN_S`) a health probe
(`is_model_ready`) brings it back.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcclient
from PIL import Image
from tqdm import tqdm
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from hpsv3_serve.errors import HPSv3Error, InputError
from hpsv3_serve.inputs import (
    ImageInput,
    check_header_pixels,
    describe,
    open_image,
    prepare_image,
    read_image_bytes,
)
from hpsv3_serve.judges import JUDGES
from hpsv3_serve.judges.base import JudgeResult, check_text
from hpsv3_serve.judges.served import RewardsResult, score_output
from hpsv3_serve.limits import DEFAULT_LIMITS, InputLimits
from hpsv3_serve.pixels import image_items, is_array
from hpsv3_serve.prompt import check_prompt
from hpsv3_serve.results import ScoreResult, printable

DEFAULT_URL = "127.0.0.1:8001"
MAX_COOLDOWN_S = 30.0
PATCHES_SUFFIX = "_patches"  # the ensemble for pixels held in memory: "hpsv3" → "hpsv3_patches"
_UNAVAILABLE = "StatusCode.UNAVAILABLE"
_UNLOADING = "has no available versions"  # NOT_FOUND while a server unloads its models (shutdown, restart)
_RECOVERING = "is not healthy"  # a model's stub died; `hpsv3 serve`'s watchdog is reloading it
_BUSY = "Exceeds maximum queue size"  # backpressure: the server's queue is full, try again a little later
MAX_BACKOFF_S = 2.0


class ServerUnavailableError(HPSv3Error):
    """No Triton server answers at the client's address (after the retries)."""

    code = "server_unavailable"


class ModelNotReadyError(HPSv3Error):
    """The server answers but does not serve the requested model (yet)."""

    code = "model_not_ready"


ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']*', ")


def _retryable(exc: InferenceServerException) -> bool:
    """The endpoint, not the request, is the problem: down, going down (unloading its models) or recovering
    (reloading a model whose stub died)."""
    message = exc.message() or ""
    return exc.status() == _UNAVAILABLE or _UNLOADING in message or _RECOVERING in message


def image_inputs(image: ImageInput, limits: InputLimits = DEFAULT_LIMITS) -> tuple[bool, list[grpcclient.InferInput]]:
    """What goes on the wire for one image, and whether it is pixels: images held in memory (numpy arrays, torch
    tensors, PIL images) are resized and patched here exactly as the server's preprocess would (no encoding, no
    decoding) and go to the `_patches` ensemble as PATCHES + GRID_THW; files, URLs and bytes go as they are, as
    IMAGE, for the server to decode. Raises `InputError` naming the input."""
    if is_array(image) or isinstance(image, Image.Image):
        prepared = prepare_image(image, limits)
        return True, [_tensor_input("PATCHES", prepared.patches[None]),
                      _tensor_input("GRID_THW", np.array([prepared.grid_thw], np.int64))]  # fmt: skip
    if not isinstance(image, (str, os.PathLike, bytes, bytearray)):
        raise InputError(describe(image), "an image must be a path, URL, bytes, a PIL image or an array")
    data = read_image_bytes(image, limits)
    check_header_pixels(data, describe(image), limits)
    return False, [_tensor_input("IMAGE", np.array([[data]], dtype=np.object_))]


def encoded_image(image: ImageInput, limits: InputLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes a judge model gets as IMAGE: files, URLs and bytes as they are; arrays, tensors and PIL images as a
    lossless file in their own mode (PNG, or TIFF for modes PNG cannot hold, such as CMYK). Raises `InputError`."""
    if is_array(image) or isinstance(image, Image.Image):
        opened = open_image(image, limits)  # arrays: RGB uint8 by the rules of hpsv3_serve.pixels
        out = io.BytesIO()
        try:
            opened.save(out, format="PNG", compress_level=1)
        except (OSError, KeyError, ValueError):
            out = io.BytesIO()
            opened.save(out, format="TIFF")
        return out.getvalue()
    if not isinstance(image, (str, os.PathLike, bytes, bytearray)):
        raise InputError(describe(image), "an image must be a path, URL, bytes, a PIL image or an array")
    data = read_image_bytes(image, limits)
    check_header_pixels(data, describe(image), limits)
    return data


def _tensor_input(name: str, value: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    tensor.set_data_from_numpy(value)
    return tensor


def _scalar(result: grpcclient.InferResult, name: str) -> float:
    values = result.as_numpy(name)
    if values is None or values.size != 1:
        raise ValueError(f"the server returned {name} of shape {None if values is None else values.shape}, not [1, 1]")
    return float(values.reshape(-1)[0])


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """ "a:1,b:2" or ["a:1", "b:2"] → ["a:1", "b:2"] (blanks dropped, order and duplicates kept out)."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    found = list(dict.fromkeys(part.strip() for part in parts if part and part.strip()))
    if not found:
        raise ValueError(f"no endpoint address in {urls!r} (expected HOST:PORT[,HOST:PORT...])")
    return found


@dataclass
class Endpoint:
    """One server of the pool: its channel (per event loop), load and health."""

    url: str
    client: grpcclient.InferenceServerClient | None = None
    loop: asyncio.AbstractEventLoop | None = None
    checked: bool = False
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    down_until: float = 0.0
    down_reason: str = ""
    probe: asyncio.Task | None = field(default=None, repr=False)

    @property
    def healthy(self) -> bool:
        return self.failures == 0


class HPSv3Client:
    """Async client of an HPSv3 Triton endpoint; `score()` is the blocking wrapper of `score_async()`.

    The gRPC channel belongs to the event loop that first uses it; it is (re)created lazily inside a running
    loop, so one client can serve successive `score()` calls.

    `limits` are checked here, before anything is sent: image bytes, pixels (from the file's header, or of the
    pixels held in memory), prompt bytes; the prompt's token count is the server's to check (the client holds no
    tokenizer).
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        model: str = "hpsv3",
        concurrency: int = 16,
        timeout_s: float = 60.0,
        retries: int = 3,
        recover_s: float = 60.0,
        backoff_s: float = 0.25,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        self.endpoints = [Endpoint(address) for address in split_urls(url)]
        self.url = ",".join(endpoint.url for endpoint in self.endpoints)
        self.model = model
        self.judge = model in JUDGES and model != "hpsv3"  # SCORE from IMAGE + PROMPT, no patches route
        self.rewards = model == "rewards"  # SCORE_<MODEL> for every served model, same inputs
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.recover_s = recover_s
        self.backoff_s = backoff_s
        self.headers = dict(headers) if headers else None
        self.limits = limits
        self._tls = {
            "ssl": ssl,
            "root_certificates": root_certificates,
            "private_key": private_key,
            "certificate_chain": certificate_chain,
        }

    # -- connection ----------------------------------------------------------------------------------------

    def _unavailable(self, detail: str) -> ServerUnavailableError:
        where = f"at {self.url}" if len(self.endpoints) == 1 else f"at any of {self.url}"
        return ServerUnavailableError(
            f"no Triton server answers {where} ({detail}); start one with `hpsv3 serve` "
            "or point the client at a running server"
        )

    def _channel(self, endpoint: Endpoint) -> grpcclient.InferenceServerClient:
        """The endpoint's client in the running loop, created on first use in that loop."""
        loop = asyncio.get_running_loop()
        if endpoint.client is None or endpoint.loop is not loop:
            endpoint.client = grpcclient.InferenceServerClient(endpoint.url, **self._tls)
            endpoint.loop, endpoint.checked, endpoint.probe = loop, False, None
        return endpoint.client

    async def _rpc(self, endpoint: Endpoint, method: str, *args: object, **kwargs: object) -> object:
        return await getattr(self._channel(endpoint), method)(
            *args, headers=self.headers, client_timeout=self.timeout_s, **kwargs
        )

    async def _call(self, method: str, *args: object, **kwargs: object) -> object:
        """One idempotent RPC on the pool: the least busy healthy endpoint; when it is down or going down, that
        endpoint leaves the rotation and the call goes to the next one, with exponential backoff (and jitter)
        once every endpoint has failed it. A server that is recovering (reloading a model whose stub died)
        gets up to `recover_s` before the call gives up."""
        tried: set[str] = set()
        started = time.monotonic()
        for attempt in itertools.count():
            endpoint = await self._pick()
            endpoint.in_flight += 1
            try:
                result = await self._rpc(endpoint, method, *args, **kwargs)
            except InferenceServerException as exc:
                if _BUSY in (exc.message() or ""):  # the server is fine, only full: back off, no failover
                    if attempt >= self.retries + len(self.endpoints) - 1:
                        raise  # a per-item error that says the server is saturated
                    await asyncio.sleep(min(self.backoff_s * 2**attempt, MAX_BACKOFF_S) * (0.5 + random.random()))
                    continue
                if not _retryable(exc):
                    raise
                self._mark_down(endpoint, exc.message() or "UNAVAILABLE")
                tried.add(endpoint.url)
                recovering = _RECOVERING in (exc.message() or "")
                if attempt >= self.retries + len(self.endpoints) - 1 and not (
                    recovering and time.monotonic() - started < self.recover_s
                ):
                    raise self._unavailable(exc.message() or "UNAVAILABLE") from exc
                if len(tried) == len(self.endpoints):  # every endpoint failed: back off before the next round
                    backoff = self.backoff_s * 2 ** (attempt + 1 - len(tried))
                    await asyncio.sleep(min(backoff, MAX_BACKOFF_S) * (0.5 + random.random()))
                continue
            finally:
                endpoint.in_flight -= 1
            endpoint.served += 1
            endpoint.failures = 0  # it answered: back in rotation (also when picked while down)
            return result
        raise AssertionError("unreachable")

    def _mark_down(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.failures += 1
        cooldown = min(MAX_COOLDOWN_S, self.backoff_s * 2 ** (endpoint.failures - 1))
        endpoint.down_until, endpoint.down_reason = time.monotonic() + cooldown, reason

    async def _pick(self) -> Endpoint:
        """The healthy endpoint with the fewest requests in flight; endpoints past their cool-down are probed in
        the background. When none is healthy, the one whose cool-down ends first is tried (the call decides)."""
        now = time.monotonic()
        for endpoint in self.endpoints:
            if not endpoint.healthy and now >= endpoint.down_until and endpoint.probe is None:
                endpoint.probe = asyncio.ensure_future(self._probe(endpoint))
        healthy = [endpoint for endpoint in self.endpoints if endpoint.healthy]
        if healthy:
            return min(healthy, key=lambda endpoint: (endpoint.in_flight, endpoint.served))
        return min(self.endpoints, key=lambda endpoint: endpoint.down_until)

    async def _probe(self, endpoint: Endpoint) -> None:
        """Back into rotation when the endpoint serves the model again; else a longer cool-down."""
        try:
            ready = await self._rpc(endpoint, "is_model_ready", self.model)
        except InferenceServerException as exc:
            ready, reason = False, exc.message() or str(exc.status())
        else:
            reason = f"model {self.model!r} not ready"
        if ready:
            endpoint.failures, endpoint.down_reason = 0, ""
        else:
            self._mark_down(endpoint, reason)
        endpoint.probe = None

    def health(self) -> list[dict]:
        """Per endpoint: url, healthy, requests in flight and answered, consecutive failures, last reason."""
        return [
            {"url": e.url, "healthy": e.healthy, "in_flight": e.in_flight, "served": e.served,
             "failures": e.failures, "reason": e.down_reason}
            for e in self.endpoints
        ]  # fmt: skip

    async def _check(self, endpoint: Endpoint) -> tuple[type[HPSv3Error], str] | None:
        """None when the endpoint serves the model, else the error class and why (the endpoint is marked down)."""
        self._channel(endpoint)
        if endpoint.checked:
            return None
        try:
            ready = await self._rpc(endpoint, "is_model_ready", self.model)
        except InferenceServerException as exc:
            self._mark_down(endpoint, f"{exc.status()}: {exc.message()}")
            return ServerUnavailableError, f"{endpoint.url}: {exc.status()}: {exc.message()}"
        if not ready:
            self._mark_down(endpoint, f"model {self.model!r} not ready")
            return ModelNotReadyError, (
                f"the server at {endpoint.url} answers but model {self.model!r} is not ready (still loading, or not "
                "served there: check the model name; hpsv3 serve's ensemble is 'hpsv3', other reward models and "
                "'rewards' come with hpsv3 serve --models)"
            )
        endpoint.checked, endpoint.failures = True, 0
        return None

    async def _connect(self) -> None:
        """Check once per channel that the endpoints answer and serve the model; one that does is enough. When
        none does: ModelNotReadyError if one answered, else ServerUnavailableError (after the retries)."""
        for attempt in range(self.retries + 1):
            problems = [p for p in await asyncio.gather(*(self._check(e) for e in self.endpoints)) if p]
            if len(problems) < len(self.endpoints):
                return
            not_ready = [message for kind, message in problems if kind is ModelNotReadyError]
            if not_ready:
                raise ModelNotReadyError("; ".join(not_ready))
            if attempt == self.retries:
                raise self._unavailable("; ".join(message for _, message in problems))
            await asyncio.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the server serves the model; raises ServerUnavailableError/ModelNotReadyError at the end."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                await self._connect()
                return
            except (ServerUnavailableError, ModelNotReadyError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.25)

    async def close(self) -> None:
        """Close the gRPC channels (a later call opens new ones)."""
        for endpoint in self.endpoints:
            client, endpoint.client, endpoint.loop = endpoint.client, None, None
            if endpoint.probe is not None:
                endpoint.probe.cancel()
                endpoint.probe = None
            if client is not None:
                await client.close()

    async def __aenter__(self) -> HPSv3Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- scoring -------------------------------------------------------------------------------------------

    async def _score_judge(self, image: ImageInput, prompt: str) -> JudgeResult | RewardsResult:
        """One item on another reward model (IMAGE, encoded, + PROMPT → SCORE) or on `rewards` (→ SCORE_<MODEL>)."""
        if self.rewards:
            result = RewardsResult(describe(image), printable(prompt))
        else:
            result = JudgeResult(describe(image), printable(prompt), self.model)
        try:
            text = check_text(prompt, self.limits).encode("utf-8")
            data = await asyncio.to_thread(encoded_image, image, self.limits)
        except InputError as exc:
            result.error = str(exc)
            return result
        except Exception as exc:  # an input nobody foresaw: this item's error only
            result.error = f"{result.image}: could not be prepared ({type(exc).__name__}: {exc})"
            return result
        inputs = [_tensor_input("IMAGE", np.array([[data]], dtype=np.object_)),
                  _tensor_input("PROMPT", np.array([[text]], dtype=np.object_))]  # fmt: skip
        try:
            response = await self._call("infer", self.model, inputs)
            if self.rewards:
                names = {score_output(name): name for name in JUDGES}
                outputs = [output.name for output in response.get_response().outputs if output.name != "ERRORS"]
                result.errors = json.loads(response.as_numpy("ERRORS").reshape(-1)[0] or b"{}")
                result.scores = {names.get(out, out): _scalar(response, out) for out in outputs
                                 if names.get(out, out) not in result.errors}  # fmt: skip
            else:
                result.score = _scalar(response, "SCORE")
        except InferenceServerException as exc:
            result.error = f"{result.image}: {self._reason(exc)}"
        except ValueError as exc:
            result.error = f"{result.image}: {exc}"
        return result

    def _reason(self, exc: InferenceServerException) -> str:
        status = exc.status() or "error"
        reason = f"timed out after {self.timeout_s:g} s" if "DEADLINE_EXCEEDED" in status else exc.message()
        return ENSEMBLE_PREFIX.sub("", reason or "")  # "in ensemble 'hpsv3', IMAGE: ..." → "IMAGE: ..."

    async def _score_one(self, image: ImageInput, prompt: str) -> ScoreResult | JudgeResult | RewardsResult:
        if self.judge or self.rewards:
            return await self._score_judge(image, prompt)
        result = ScoreResult(image=describe(image), prompt=printable(prompt))
        try:
            text = check_prompt(prompt, self.limits).encode("utf-8")
            pixels, inputs = await asyncio.to_thread(image_inputs, image, self.limits)
        except InputError as exc:
            result.error = str(exc)
            return result
        except Exception as exc:  # an input nobody foresaw: this item's error only
            result.error = f"{result.image}: could not be prepared ({type(exc).__name__}: {exc})"
            return result
        inputs.append(_tensor_input("PROMPT", np.array([[text]], dtype=np.object_)))
        try:
            response = await self._call("infer", self.model + PATCHES_SUFFIX if pixels else self.model, inputs)
            result.mu, result.sigma = _scalar(response, "MU"), _scalar(response, "SIGMA")
        except InferenceServerException as exc:
            result.error = f"{result.image}: {self._reason(exc)}"
            return result
        except ValueError as exc:
            result.error = f"{result.image}: {exc}"
            return result
        with np.errstate(divide="ignore", invalid="ignore"):
            result.log_sigma = float(np.log(np.float64(result.sigma)))
        return result

    async def score_async(
        self, images: Sequence[ImageInput], prompts: str | Sequence[str], progress: bool = False
    ) -> list[ScoreResult | JudgeResult | RewardsResult]:
        """Score every pair, in input order; failed items carry `error` (the server's message) and no scores.

        `images`: a list of paths, URLs, bytes, PIL images, numpy arrays or torch tensors (uint8, or float in [0, 1]:
        `hpsv3_serve.pixels`), one image, or a batch array / tensor [B, ...]. `prompts` is one prompt for all images
        or one per image. Raises ServerUnavailableError when no server answers at `url` and ModelNotReadyError when
        it does not serve the model.
        """
        images = image_items(images)
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompt_list)} prompts")
        if not images:
            return []
        await self._connect()
        slots = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(images), unit="img", disable=None if progress else True)

        async def one(image: ImageInput, prompt: str) -> ScoreResult | JudgeResult | RewardsResult:
            async with slots:
                result = await self._score_one(image, prompt)
            bar.update(1)
            return result

        tasks = [asyncio.ensure_future(one(image, prompt)) for image, prompt in zip(images, prompt_list, strict=True)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # after a ServerUnavailableError, stop the others (no-op when all are done)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()

    def score(
        self, images: Sequence[ImageInput], prompts: str | Sequence[str], progress: bool = False
    ) -> list[ScoreResult | JudgeResult | RewardsResult]:
        """Blocking `score_async` (runs its own event loop; in a thread if this one already runs a loop)."""

        async def run() -> list[ScoreResult | JudgeResult | RewardsResult]:
            try:
                return await self.score_async(images, prompts, progress)
            finally:
                await self.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        outcome: dict[str, object] = {}

        def in_thread() -> None:
            try:
                outcome["value"] = asyncio.run(run())
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=in_thread, name="hpsv3-client")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
