"""The typed errors of hpsv3-serve, defined once and mapped once by each front end."""

from __future__ import annotations


class HPSv3Error(Exception):
    """Base of every error this package raises on purpose."""

    code = "internal"


class InputError(HPSv3Error, ValueError):
    """One request item (image or prompt) cannot be scored; the message names the input."""

    code = "invalid_input"

    def __init__(self, input_name: str, reason: str) -> None:
        super().__init__(f"{input_name}: {reason}")
        self.input_name = input_name
        self.reason = reason


class ImageNotFoundError(InputError):
    code = "image_not_found"


class ImageDecodeError(InputError):
    code = "image_decode"


class ImageSizeError(InputError):
    code = "image_size"


class PromptError(InputError):
    code = "invalid_prompt"


class TensorError(InputError):
    """A tensor sent to an internal step of the server is not what the step before it makes (a client that calls
    `vision_encoder`, `language_model` or `reward_head` directly); the message names the tensor."""

    code = "invalid_tensor"


class ModelLoadError(HPSv3Error):
    """A checkpoint, base config or tokenizer cannot be found or does not fit the model."""

    code = "model_load"
