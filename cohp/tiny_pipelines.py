"""Tiny random-weight diffusers pipelines (FLUX, SD3, SDXL/Playground v2.5, Kolors), built offline in code.

Each architecture keeps the real pipeline classes, text encoders and schedulers, shrunk to a few thousand
parameters: 64×64 images in a few steps on a CPU. Tokenizers are built here too (CLIP byte-level BPE, T5
Unigram, a SentencePiece model for Kolors' ChatGLM). `build(arch, root, seed)` saves the text-to-image
pipeline with `save_pretrained` under `root/ARCH-seedN` once and returns that folder, which the real
`from_pretrained` path then loads like any hub checkout.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from hpsv3_serve.defaults import cache_dir
from hpsv3_serve.qwen_tokenizer import bytes_to_unicode

FORMAT = 1  # bump when a builder changes, so cached folders are rebuilt
ARCHITECTURES = ("flux", "sd3", "sdxl", "kolors")
CORPUS = (
    "a photo of a cat sitting on a red sofa",
    "an astronaut riding a horse on the moon, digital art",
    "a bowl of fruit on a wooden table in the morning light",
    "portrait of a woman with flowers in her hair, oil painting",
    "a futuristic city skyline at night with neon lights",
    "0123456789 !?.,;:'\"-()[]{}<>/\\@#$%^&*_+=|~`",
)


def clip_tokenizer():
    """A CLIPTokenizer over single bytes (with and without the end-of-word mark): every text tokenizes."""
    from transformers import CLIPTokenizer

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def t5_tokenizer(max_length: int):
    """A T5 tokenizer (Unigram) over the printable ASCII characters, with and without the word mark."""
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("▁" + c, -2.5) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


def chatglm_tokenizer(folder: Path):
    """Kolors' ChatGLMTokenizer over a SentencePiece model trained here on a few captions (deterministic)."""
    import sentencepiece as spm
    from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4),
        model_writer=model,
        vocab_size=128,
        model_type="bpe",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path = folder / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return ChatGLMTokenizer(str(path))


def _clip_text(projection: bool, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=hidden,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5_encoder(d_model: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=196, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    return T5EncoderModel(config).eval()


def _vae(latent_channels: int, flux_style: bool = False):
    """A 3-level AutoencoderKL: 64×64 images ↔ 16×16 latents."""
    from diffusers import AutoencoderKL

    kwargs = {"use_quant_conv": False, "use_post_quant_conv": False, "shift_factor": 0.0609} if flux_style else {}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
        **kwargs,
    )


def _sdxl_unet(cross_attention_dim: int, pooled_dim: int, **kwargs: object):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + pooled_dim,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
        **kwargs,
    )


def _flux(folder: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2×2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,  # FLUX.1-dev is guidance-distilled
        axes_dims_rope=(4, 4, 8),
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(4, flux_style=True),
        text_encoder=_clip_text(projection=False),
        tokenizer=clip_tokenizer(),
        text_encoder_2=_t5_encoder(32),
        tokenizer_2=t5_tokenizer(512),
        transformer=transformer,
    )


def _sd3(folder: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,  # T5 width = CLIP-L ‖ CLIP-G width
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=32,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(4, flux_style=True),  # SD3's VAE too has a shift and no quant convs
        text_encoder=_clip_text(projection=True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_text(projection=True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5_encoder(64),
        tokenizer_3=t5_tokenizer(256),
    )


def _sdxl(folder: Path):
    """Playground v2.5's layout: SDXL UNet and two CLIP encoders with the EDM DPM-Solver scheduler."""
    from diffusers import EDMDPMSolverMultistepScheduler, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=_vae(4),
        text_encoder=_clip_text(projection=False),
        text_encoder_2=_clip_text(projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=_sdxl_unet(cross_attention_dim=64, pooled_dim=32),
        scheduler=EDMDPMSolverMultistepScheduler(),
    )


def _kolors(folder: Path):
    from diffusers import EulerDiscreteScheduler, KolorsPipeline
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    tokenizer = chatglm_tokenizer(folder)
    config = ChatGLMConfig(
        num_layers=2,
        padded_vocab_size=160,
        hidden_size=32,
        ffn_hidden_size=64,
        kv_channels=8,
        num_attention_heads=4,
        seq_length=256,
        multi_query_attention=True,
        multi_query_group_num=2,
        add_qkv_bias=True,
        original_rope=True,  # as Kolors' config.json
        torch_dtype="float32",
    )
    text_encoder = ChatGLMModel(config, empty_init=False).eval()
    with torch.no_grad():  # ChatGLM's RMSNorm weights start as torch.empty (garbage): set them as a fresh norm
        for name, param in text_encoder.named_parameters():
            if name.endswith("layernorm.weight"):
                param.fill_(1.0)
    unet = _sdxl_unet(cross_attention_dim=32, pooled_dim=32, encoder_hid_dim_type="text_proj", encoder_hid_dim=32)
    return KolorsPipeline(
        vae=_vae(4),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.014),
        force_zeros_for_empty_prompt=False,
    )


BUILDERS: dict[str, Callable[[Path], object]] = {"flux": _flux, "sd3": _sd3, "sdxl": _sdxl, "kolors": _kolors}


def default_root() -> Path:
    """Where tiny pipelines are cached: `cohp-tiny/` in the cache folder (`hpsv3_serve.defaults.cache_dir`)."""
    return cache_dir() / "cohp-tiny"


def build(arch: str, root: Path | None = None, seed: int = 0) -> Path:
    """The folder of the tiny `arch` pipeline (weights from `seed`), built and saved on first use."""
    if arch not in BUILDERS:
        raise ValueError(f"no tiny pipeline for {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    root = Path(root) if root is not None else default_root()
    folder = root / f"{arch}-seed{seed}-v{FORMAT}"
    if (folder / "model_index.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=root))
    try:
        torch.manual_seed(seed)
        pipeline = BUILDERS[arch](staging)
        pipeline.save_pretrained(staging, safe_serialization=True)
        (staging / "tokenizer.model").unlink(missing_ok=True)  # the trainer's scratch copy (Kolors)
        try:
            staging.rename(folder)
        except OSError:  # built concurrently by another process: theirs is as good
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
