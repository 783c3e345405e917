"""What every Python model of the repository reads: its config's parameters and the one item of a request."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hpsv3_serve.step_inputs import single


def model_parameters(args: dict) -> dict[str, str]:
    """The model config's `parameters` (set by `build.py`), name → string value."""
    return {key: value["string_value"] for key, value in json.loads(args["model_config"])["parameters"].items()}


def request_inputs(pb_utils: Any, request: Any, *names: str) -> tuple[np.ndarray, ...]:
    """The request's inputs `names` as numpy; a request of more than one item is refused, naming the input."""
    return tuple(single(pb_utils.get_input_tensor_by_name(request, name).as_numpy(), name) for name in names)
