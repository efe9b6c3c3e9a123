"""Tiny random diffusers video pipelines built from configs and saved to disk (nothing downloaded).

``build(kind, folder)`` writes a pipeline folder that ``DiffusionPipeline.from_pretrained`` loads:
real pipeline classes (text encoders, tokenizer, VAE, scheduler, transformer(s)) with random
weights, a few thousand parameters each, so a 2-step generation takes well under a second on a CPU.

Kinds: ``wan`` (Wan2.1 T2V), ``wan2.2`` (Wan2.2 T2V: ``transformer`` for high-noise steps,
``transformer_2`` for low-noise, ``boundary_ratio`` 0.5), ``wan-i2v`` (Wan2.1 I2V: CLIP image
encoder, image tokens cross-attended), ``wan2.2-i2v`` (two experts, the image as conditioning
latents), ``cogvideox``, ``cogvideox-i2v``, ``hunyuanvideo``. Every tokenizer is a word-level one
over :data:`WORDS`, so prompts of equal word counts have equal token counts.

Sizes used with them: 9 frames × 64 × 96 px → latent 3 × 8 × 12 → 3 × 4 × 6 = 72 video tokens.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "</s>", "a", "cat", "dog", "fox", "walks", "runs", "jumps", "on", "the", "grass",
         "snow", "sand", "red", "blue"]
#: The pixel sizes every pipeline here is run at.
SIZES = {"num_frames": 9, "height": 64, "width": 96}
KINDS = ("wan", "wan2.2", "wan-i2v", "wan2.2-i2v", "cogvideox", "cogvideox-i2v", "hunyuanvideo")


def _tokenizer(cls_name: str = "PreTrainedTokenizerFast", **extra):
    import tokenizers
    import transformers

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return getattr(transformers, cls_name)(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                           eos_token="</s>", **extra)


def _umt5(d_model: int = 24):
    import transformers

    return transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=len(WORDS), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8))


def _wan_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(seed: int, **overrides):
    from attnsearch.models.diffusers import random_transformer
    from attnsearch.models.diffusers.wan import FAMILY as WAN

    return random_transformer("wan", {**WAN.tiny, **overrides}, seed=seed)


def _wan(folder: Path, *, experts: int, i2v: bool) -> None:
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    parts = {"tokenizer": _tokenizer(), "text_encoder": _umt5(), "vae": _wan_vae(),
             "scheduler": diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)}
    conditioning = {}
    if i2v:
        conditioning = {"in_channels": 36}       # noisy latents + mask + image latents
        if experts == 1:                         # Wan2.1 I2V: CLIP image tokens, cross-attended
            conditioning.update(image_dim=16, added_kv_proj_dim=64)
            parts["image_encoder"] = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
                hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, projection_dim=16))
            parts["image_processor"] = transformers.CLIPImageProcessor(crop_size=32, size={"shortest_edge": 32})
    parts["transformer"] = _wan_transformer(1, **conditioning)
    if experts == 2:
        parts["transformer_2"] = _wan_transformer(2, **conditioning)
        parts["boundary_ratio"] = 0.5
    cls = diffusers.WanImageToVideoPipeline if i2v else diffusers.WanPipeline
    cls(**parts).save_pretrained(folder)


def _cogvideox(folder: Path, *, i2v: bool) -> None:
    import diffusers
    import torch
    import transformers

    from attnsearch.models.diffusers import random_transformer
    from attnsearch.models.diffusers.cogvideox import FAMILY as COG

    torch.manual_seed(0)
    text_encoder = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(WORDS), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8))
    vae = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=4)
    # The 5b layout (rotary embeddings): its text may have any length, the I2V model's input
    # doubles the channels (noisy latents + image latents).
    overrides = {**COG.tiny, "sample_height": 8, "sample_width": 12, "sample_frames": 9}
    if i2v:
        overrides["in_channels"] = 32
    transformer = random_transformer("cogvideox-5b", overrides, seed=1)
    cls = diffusers.CogVideoXImageToVideoPipeline if i2v else diffusers.CogVideoXPipeline
    cls(tokenizer=_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=diffusers.CogVideoXDDIMScheduler(timestep_spacing="trailing")).save_pretrained(folder)


def _hunyuan(folder: Path) -> None:
    import diffusers
    import torch
    import transformers

    from attnsearch.models.diffusers import random_transformer
    from attnsearch.models.diffusers.hunyuan import FAMILY as HUN

    torch.manual_seed(0)
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=len(WORDS), hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512))
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(WORDS), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, eos_token_id=2, pad_token_id=0))
    vae = diffusers.AutoencoderKLHunyuanVideo(
        block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1, norm_num_groups=4)
    transformer = random_transformer("hunyuanvideo", HUN.tiny, seed=1)
    diffusers.HunyuanVideoPipeline(
        text_encoder=llama, tokenizer=_tokenizer(), transformer=transformer, vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=clip,
        tokenizer_2=_tokenizer()).save_pretrained(folder)


def build(kind: str, folder: Path) -> Path:
    """Write the tiny pipeline ``kind`` (one of :data:`KINDS`) to ``folder``; returns it."""
    folder = Path(folder)
    if kind in ("wan", "wan2.2", "wan-i2v", "wan2.2-i2v"):
        _wan(folder, experts=2 if kind.startswith("wan2.2") else 1, i2v=kind.endswith("i2v"))
    elif kind in ("cogvideox", "cogvideox-i2v"):
        _cogvideox(folder, i2v=kind.endswith("i2v"))
    elif kind == "hunyuanvideo":
        _hunyuan(folder)
    else:
        raise ValueError(f"unknown tiny pipeline {kind!r} (known: {', '.join(KINDS)})")
    return folder


def image():
    """A 64 × 96 RGB test image (the I2V pipelines' conditioning frame)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZES["height"], SIZES["width"], 3), dtype=np.uint8))
