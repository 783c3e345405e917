"""`HPSv3Client`: score (image, prompt) pairs against the `hpsv3` model of a Triton server over asyncio gRPC.

One item per request (IMAGE and PROMPT of shape [1, 1]) so that a bad item fails only its own request; the
server's dynamic batcher regroups the requests, and up to `concurrency` of them are in flight at once.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from PIL import Image
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from hpsv3_serve.errors import HPSv3Error, InputError
from hpsv3_serve.inputs import ImageInput, describe, read_image_bytes
from hpsv3_serve.prompt import check_prompt
from hpsv3_serve.results import ScoreResult

DEFAULT_URL = "127.0.0.1:8001"
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}  # saved to PNG and read back unchanged
_UNAVAILABLE = "StatusCode.UNAVAILABLE"


class ServerUnavailableError(HPSv3Error):
    """No Triton server answers at the client's address (after the retries)."""

    code = "server_unavailable"


class ModelNotReadyError(HPSv3Error):
    """The server answers but does not serve the requested model (yet)."""

    code = "model_not_ready"


ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']*', ")


def _name(image: object) -> str:
    """`describe(image)`, or a repr for objects that are not image inputs at all."""
    try:
        return describe(image)
    except TypeError:
        return repr(image)[:80]


def encode_image(image: ImageInput) -> bytes:
    """The encoded file bytes the server decodes: files and URLs as they are, PIL images as lossless PNG.

    PIL images in modes PNG cannot hold unchanged are converted to RGB first, which is what the server's
    decoding does to every image anyway. Raises `InputError` naming the input.
    """
    if not isinstance(image, (str, os.PathLike, bytes, bytearray, Image.Image)):
        raise InputError(_name(image), f"an image must be a path, URL, bytes or PIL image, not {type(image).__name__}")
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        (image if image.mode in PNG_MODES else image.convert("RGB")).save(buffer, format="PNG")
        return buffer.getvalue()
    return read_image_bytes(image)


def _bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


def _scalar(result: grpcclient.InferResult, name: str) -> float:
    values = result.as_numpy(name)
    if values is None or values.size != 1:
        raise ValueError(f"the server returned {name} of shape {None if values is None else values.shape}, not [1, 1]")
    return float(values.reshape(-1)[0])


class HPSv3Client:
    """Async client of an HPSv3 Triton endpoint; `score()` is the blocking wrapper of `score_async()`.

    The gRPC channel belongs to the event loop that first uses it; it is (re)created lazily inside a running
    loop, so one client can serve successive `score()` calls.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        model: str = "hpsv3",
        concurrency: int = 16,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.headers = dict(headers) if headers else None
        self._tls = {
            "ssl": ssl,
            "root_certificates": root_certificates,
            "private_key": private_key,
            "certificate_chain": certificate_chain,
        }
        self._client: grpcclient.InferenceServerClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked = False

    # -- connection ----------------------------------------------------------------------------------------

    def _unavailable(self, detail: str) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"no Triton server answers at {self.url} ({detail}); start one with `hpsv3 serve` "
            "or point the client at a running server"
        )

    def _channel(self) -> grpcclient.InferenceServerClient:
        """The client of the running loop, created on first use in that loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = grpcclient.InferenceServerClient(self.url, **self._tls)
            self._loop, self._checked = loop, False
        return self._client

    async def _call(self, method: str, *args: object, **kwargs: object) -> object:
        """One RPC, retried with exponential backoff (and jitter) while the server is UNAVAILABLE."""
        for attempt in range(self.retries + 1):
            try:
                return await getattr(self._channel(), method)(
                    *args, headers=self.headers, client_timeout=self.timeout_s, **kwargs
                )
            except InferenceServerException as exc:
                if exc.status() != _UNAVAILABLE:
                    raise
                if attempt == self.retries:
                    raise self._unavailable(exc.message() or "UNAVAILABLE") from exc
            await asyncio.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def _connect(self) -> None:
        """Check once per channel that the server answers and serves the model, with clear errors if not."""
        self._channel()
        if self._checked:
            return
        try:
            ready = await self._call("is_model_ready", self.model)
        except InferenceServerException as exc:
            raise self._unavailable(f"{exc.status()}: {exc.message()}") from exc
        if not ready:
            raise ModelNotReadyError(
                f"the server at {self.url} answers but model {self.model!r} is not ready (still loading, or "
                f"not in its model repository: {await self._model_names()})"
            )
        self._checked = True

    async def _model_names(self) -> list[str]:
        try:
            index = await self._call("get_model_repository_index", as_json=True)
        except (HPSv3Error, InferenceServerException):
            return []
        return [f"{entry.get('name')} ({entry.get('state', 'unknown').lower()})" for entry in index.get("models", [])]

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
        """Close the gRPC channel (a later call opens a new one)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> HPSv3Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- scoring -------------------------------------------------------------------------------------------

    async def _score_one(self, image: ImageInput, prompt: str) -> ScoreResult:
        result = ScoreResult(image=_name(image), prompt=str(prompt))
        try:
            data = await asyncio.to_thread(encode_image, image)
            text = check_prompt(prompt).encode("utf-8")
        except InputError as exc:
            result.error = str(exc)
            return result
        except UnicodeEncodeError as exc:
            result.error = f"{result.prompt[:60]!r}: a prompt must be valid UTF-8 text ({exc.reason})"
            return result
        inputs = [_bytes_input("IMAGE", data), _bytes_input("PROMPT", text)]
        try:
            response = await self._call("infer", self.model, inputs)
            result.mu, result.sigma = _scalar(response, "MU"), _scalar(response, "SIGMA")
        except InferenceServerException as exc:
            status = exc.status() or "error"
            reason = f"timed out after {self.timeout_s:g} s" if "DEADLINE_EXCEEDED" in status else exc.message()
            reason = ENSEMBLE_PREFIX.sub("", reason or "")  # "in ensemble 'hpsv3', IMAGE: ..." → "IMAGE: ..."
            result.error = f"{result.image}: {reason}"
            return result
        except ValueError as exc:
            result.error = f"{result.image}: {exc}"
            return result
        with np.errstate(divide="ignore", invalid="ignore"):
            result.log_sigma = float(np.log(np.float64(result.sigma)))
        return result

    async def score_async(
        self, images: Sequence[ImageInput], prompts: str | Sequence[str], progress: bool = False
    ) -> list[ScoreResult]:
        """Score every pair, in input order; failed items carry `error` (the server's message) and no scores.

        `prompts` is one prompt for all images or one per image. Raises ServerUnavailableError when no server
        answers at `url` and ModelNotReadyError when it does not serve the model.
        """
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompt_list)} prompts")
        if not images:
            return []
        await self._connect()
        slots = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(images), unit="img", disable=None if progress else True)

        async def one(image: ImageInput, prompt: str) -> ScoreResult:
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
    ) -> list[ScoreResult]:
        """Blocking `score_async` (runs its own event loop; in a thread if this one already runs a loop)."""

        async def run() -> list[ScoreResult]:
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
