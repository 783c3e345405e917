"""DifferentiableScorer: the official differentiable path's values and gradients (golden), finite differences,
bf16, gradient checkpointing, frozen weights, bad inputs, and the distance to the inference path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image

import hpsv3_serve
from hpsv3_serve.differentiable import DifferentiableScorer
from hpsv3_serve.errors import InputError
from hpsv3_serve.scorer import Scorer

from .conftest import IMAGES, TESTS

GOLDEN = TESTS / "golden" / "official_tiny_differentiable.json"
TOLERANCE = 1e-5  # mu, log_sigma against the official, fp32
GRAD_TOLERANCE = 1e-4  # gradients against the official, relative to the largest recorded |value| (or to the L2 norm)
FD_STEP = 1e-2  # central differences in fp32: a step well above rounding, well below curvature (measured)
# bf16 against fp32 on the tiny model, 6 images x 3 prompts: |Δmu| <= 0.013, |Δlog_sigma| <= 0.021, gradient cosine
# median 0.998, min 0.89 (bf16 flips some of rm_head's ReLUs); checked here on two images with their golden prompts.
BF16_MU, BF16_LOG_SIGMA, BF16_GRAD_COSINE = 0.03, 0.05, 0.95


@pytest.fixture(scope="module")
def diff_golden(golden: dict) -> dict:
    loaded = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert loaded["checkpoint_sha256"] == golden["checkpoint_sha256"], "regenerate with make_golden_differentiable.py"
    return loaded


@pytest.fixture(scope="module")
def differentiable(tiny: Path, tiny_checkpoint: Path) -> DifferentiableScorer:
    return DifferentiableScorer.from_pretrained(tiny_checkpoint, tiny / "base")


def load(tiny: Path, **options: object) -> DifferentiableScorer:
    return DifferentiableScorer.from_pretrained(tiny / "HPSv3-tiny.safetensors", tiny / "base", **options)


def unit_pixels(name: str) -> torch.Tensor:
    """A fixture image as float32 [3, H, W] in [0, 1] (uint8 / 255), as the golden file's input."""
    array = np.asarray(Image.open(IMAGES / name).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def score_and_grad(
    scorer: DifferentiableScorer, pixels: torch.Tensor, prompt: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """([mu, log_sigma], d(mu)/d(pixels)) of one image."""
    pixels = pixels.clone().requires_grad_(True)
    out = scorer(pixels[None], [prompt])
    out[0, 0].backward()
    return out[0].detach(), pixels.grad


def test_exported_lazily_from_the_package() -> None:
    assert hpsv3_serve.DifferentiableScorer is DifferentiableScorer
    assert "DifferentiableScorer" in hpsv3_serve.__all__


def test_golden_was_made_by_the_official_differentiable_path(diff_golden: dict) -> None:
    assert diff_golden["versions"]["hpsv3"] == "1.0.0"
    assert diff_golden["versions"]["transformers"] == "4.45.2"
    assert len(diff_golden["items"]) >= 6


def test_values_and_gradients_match_official(differentiable: DifferentiableScorer, diff_golden: dict) -> None:
    for item in diff_golden["items"]:
        out, grad = score_and_grad(differentiable, unit_pixels(item["image"]), item["prompt"])
        assert out.dtype == torch.float32
        assert abs(out[0].item() - item["mu"]) <= TOLERANCE, item["image"]
        assert abs(out[1].item() - item["log_sigma"]) <= TOLERANCE, item["image"]
        expected = item["grad_mu"]
        values = [grad[c, y, x].item() for c, y, x in expected["indices"]]
        scale = max(abs(v) for v in expected["values"])
        np.testing.assert_allclose(
            values, expected["values"], rtol=0, atol=GRAD_TOLERANCE * scale, err_msg=item["image"]
        )
        assert grad.double().norm().item() == pytest.approx(expected["l2"], rel=GRAD_TOLERANCE), item["image"]
        assert abs(grad.double().sum().item() - expected["sum"]) <= GRAD_TOLERANCE * expected["l2"], item["image"]


@pytest.mark.skipif(PIL.__version__ != "13.0.0", reason="golden pixels were decoded with Pillow 13.0.0")
def test_pixel_values_match_official_preprocess_tensor(diff_golden: dict) -> None:
    from hpsv3_serve.differentiable_inputs import pixel_values

    for item in diff_golden["items"]:
        values, grids = pixel_values([unit_pixels(item["image"])])
        assert list(grids[0]) == item["grid_thw"], item["image"]
        flat, expected = values.double().ravel(), item["pixel_values"]
        assert flat.sum().item() == pytest.approx(expected["sum"], abs=1e-3), item["image"]
        assert flat.abs().sum().item() == pytest.approx(expected["abs_sum"], rel=1e-9), item["image"]
        np.testing.assert_allclose(flat[:8].numpy(), expected["head"], atol=1e-6)


def test_batch_and_list_of_sizes_equal_one_by_one(differentiable: DifferentiableScorer) -> None:
    square, photo = unit_pixels("square_512.png"), unit_pixels("photo_800x600.jpg")
    alone = [score_and_grad(differentiable, image, "a fox")[0] for image in (square, photo)]
    torch.testing.assert_close(differentiable([square, photo], "a fox").detach(), torch.stack(alone), rtol=0, atol=1e-6)
    batch = torch.stack([square, square.flip(-1)])
    one = differentiable(batch[1:], ["b"]).detach()
    torch.testing.assert_close(differentiable(batch, ["a", "b"]).detach()[1:], one, rtol=0, atol=1e-6)


def test_gradient_matches_finite_differences(differentiable: DifferentiableScorer) -> None:
    """Central differences in fp32 (the model computes parts of attention in fp32 whatever the dtype, so fp64
    is not available): the pixels with the largest gradients, two fixed ones and one random direction."""
    generator = torch.Generator().manual_seed(0)
    pixels = 0.25 + 0.5 * torch.rand(3, 56, 56, generator=generator)  # upscaled 8x: each pixel moves many patches
    _, grad = score_and_grad(differentiable, pixels, "a red fox")

    def mu(image: torch.Tensor) -> float:
        with torch.no_grad():
            return differentiable(image[None], "a red fox")[0, 0].double().item()

    picks = [*grad.abs().flatten().topk(3).indices.tolist(), 5, 4000]
    for index in picks:
        step = torch.zeros(pixels.numel())
        step[index] = FD_STEP
        step = step.view_as(pixels)
        difference = (mu(pixels + step) - mu(pixels - step)) / (2 * FD_STEP)
        assert abs(difference - grad.flatten()[index].item()) <= 1e-2 * grad.abs().max().item(), index
    direction = torch.randn(pixels.shape, generator=generator)
    direction /= direction.norm()
    difference = (mu(pixels + FD_STEP * direction) - mu(pixels - FD_STEP * direction)) / (2 * FD_STEP)
    assert abs(difference - (grad * direction).sum().item()) <= 1e-3 * grad.norm().item()


def test_bfloat16_runs_close_to_float32(tiny: Path, differentiable: DifferentiableScorer) -> None:
    bf16 = load(tiny, dtype="bfloat16")
    for name, prompt in (("photo_800x600.jpg", "sunset over mountains"), ("gray_300.png", "a lighthouse at night")):
        pixels = unit_pixels(name)
        (ref, ref_grad), (out, grad) = (score_and_grad(s, pixels, prompt) for s in (differentiable, bf16))
        assert out.dtype == torch.float32 and grad.dtype == torch.float32
        assert abs(out[0] - ref[0]) <= BF16_MU and abs(out[1] - ref[1]) <= BF16_LOG_SIGMA, name
        assert torch.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0) >= BF16_GRAD_COSINE, name


def runs_in_step(scorer: DifferentiableScorer, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """`score_and_grad`, and how often the first vision block's and decoder layer's MLPs started in forward +
    backward (a pre-hook: the recompute stops as soon as it has what backward needs, before the MLP returns)."""
    counts = [0, 0]
    inner = (scorer.model.visual.blocks[0].mlp, scorer.model.language_model.layers[0].mlp)
    hooks = [
        module.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        for i, module in enumerate(inner)
    ]
    try:
        return (*score_and_grad(scorer, pixels, "a cat"), counts)
    finally:
        for hook in hooks:
            hook.remove()


def test_gradient_checkpointing_recomputes_both_towers_same_values_and_gradients(
    tiny: Path, differentiable: DifferentiableScorer
) -> None:
    pixels = unit_pixels("photo_800x600.jpg")
    ref, ref_grad, ref_runs = runs_in_step(differentiable, pixels)
    checkpointed = load(tiny, gradient_checkpointing=True)
    out, grad, runs = runs_in_step(checkpointed, pixels)
    assert ref_runs == [1, 1]
    assert runs == [2, 2], "checkpointed blocks and layers run again in backward"
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6 * ref_grad.abs().max().item())
    assert not checkpointed.model.rm_head.training, "dropout stays off"


def test_frozen_weights_get_no_gradient_and_unfrozen_ones_do(tiny: Path, differentiable: DifferentiableScorer) -> None:
    pixels = unit_pixels("small_200.png")
    _, grad = score_and_grad(differentiable, pixels, "a cat")
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in differentiable.model.parameters())
    trainable = load(tiny, freeze=False)
    score_and_grad(trainable, pixels, "a cat")
    missing = [name for name, p in trainable.model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_same_size_as_the_model_sees_equals_the_inference_path(
    differentiable: DifferentiableScorer, scorer: Scorer
) -> None:
    """At a smart_resize size (448x448 for a square) neither path resizes: the scores agree to fp32 rounding."""
    array = np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    pixels = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    mu, log_sigma = differentiable(pixels[None], "a cat")[0].tolist()
    (result,) = scorer.score([Image.fromarray(array)], ["a cat"])
    assert abs(mu - result.mu) <= TOLERANCE and abs(log_sigma - result.log_sigma) <= TOLERANCE


def test_distance_to_the_inference_path_is_the_official_one(
    differentiable: DifferentiableScorer, scorer: Scorer, diff_golden: dict
) -> None:
    """Bilinear (no antialias) vs PIL bicubic on the same pixels, ours and the official's (docs/DIFFERENTIABLE.md)."""
    for item in diff_golden["items"]:
        with torch.no_grad():
            mu = differentiable(unit_pixels(item["image"])[None], item["prompt"])[0, 0].item()
        (result,) = scorer.score([IMAGES / item["image"]], [item["prompt"]])
        assert abs((mu - result.mu) - (item["mu"] - item["mu_pil"])) <= 2 * TOLERANCE, item["image"]
        assert abs(mu - result.mu) <= 2e-3, item["image"]  # tiny model, measured at most 1.6e-3


IMAGE = torch.rand(1, 3, 64, 64)
BAD_INPUTS = {
    "3-D tensor": (IMAGE[0], "a", "pixels", "pixels\\[None\\]"),
    "5-D tensor": (IMAGE[None], "a", "pixels", "\\[B, 3, H, W\\]"),
    "numpy array": (IMAGE.numpy(), "a", "pixels", "ndarray"),
    "4 channels": (torch.rand(1, 4, 64, 64), "a", "pixels[0]", "RGB, channels first"),
    "channels last": ([IMAGE[0].permute(1, 2, 0)], "a", "pixels[0]", "permute"),
    "uint8": ((IMAGE * 255).to(torch.uint8), "a", "pixels[0]", "float\\(\\) / 255"),
    "NaN in the second": (torch.cat([IMAGE, IMAGE.clone().index_fill_(3, torch.tensor([5]), torch.nan)]), "a",
                          "pixels[1]", "NaN: True"),
    "above 1": (IMAGE * 2, "a", "pixels[0]", "clamp"),
    "VAE range": (IMAGE * 2 - 1, "a", "pixels[0]", "\\[0, 1\\]"),
    "empty batch": (torch.empty(0, 3, 64, 64), "a", "pixels", "empty batch"),
    "empty list": ([], "a", "pixels", "empty batch"),
    "empty image": (torch.rand(1, 3, 0, 64), "a", "pixels[0]", "empty"),
    "aspect ratio 250": (torch.rand(1, 3, 2, 500), "a", "pixels[0]", "aspect ratio"),
    "too few prompts": (torch.rand(2, 3, 64, 64), ["a"], "prompts", "1 prompts for 2 images"),
    "prompts not text": (IMAGE, None, "prompts", "str"),
    "reserved token": (IMAGE, "<|Reward|>", "'<|Reward|>'", "reserved token"),
}  # fmt: skip


@pytest.mark.parametrize(("pixels", "prompts", "name", "reason"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise_input_error_naming_the_input(
    differentiable: DifferentiableScorer, pixels: object, prompts: object, name: str, reason: str
) -> None:
    with pytest.raises(InputError, match=reason) as raised:
        differentiable(pixels, prompts)
    assert raised.value.input_name == name


def test_a_refl_step_through_a_real_vae_raises_mu(differentiable: DifferentiableScorer) -> None:
    """The README's ReFL use: diffusers' AutoencoderKL (tiny, random) decodes latents, the reward's gradient reaches
    the latents, and a small step along it raises mu."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=64,
    ).requires_grad_(False)  # fmt: skip
    latents = torch.randn(2, 4, 48, 40, requires_grad=True)
    prompts = ["a red fox in the snow", "a lighthouse at night"]

    def mu(step: torch.Tensor) -> torch.Tensor:
        images = (vae.decode(step / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        return differentiable(images, prompts)[:, 0]

    before = mu(latents)
    before.sum().backward()
    grad = latents.grad
    assert grad.shape == latents.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        after = mu(latents + 1e-2 * grad / grad.norm())
    assert after.sum() > before.detach().sum()
