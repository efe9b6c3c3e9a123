"""CogVideoX 1.0 / 1.5 (diffusers ``CogVideoXTransformer3DModel``).

Per block one joint self-attention (``attn1``, ``CogVideoXAttnProcessor2_0``): the processor
concatenates ``[encoder_hidden_states, hidden_states]`` — text first, so text_position is
``prefix`` — and calls SDPA once over N = T + F·H·W. T is the full length of the T5 embeddings:
the pipeline pads the prompt to max_text_seq_length = 226 tokens and passes no mask, so padding
tokens are ordinary tokens of the sequence. The learned/sincos positional embedding of
CogVideoX-2b covers exactly max_text_seq_length text tokens, so there T must be 226 (or the
config's value).

Latent input [B, F, 16, H, W]. 1.0: 2×2 spatial patches (Conv2d per frame), tokens f·S + y·W + x.
1.5 (patch_size_t = 2): 2×2×2 patches, tokens (f // 2)·S + y·W + x; the pipeline pads the latent
frames to a multiple of 2. Rotary embeddings (5b, 1.5) are computed as the pipeline does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .family import Family, VideoSize

_BASE = {"attention_head_dim": 64, "in_channels": 16, "out_channels": 16, "flip_sin_to_cos": True, "freq_shift": 0,
         "time_embed_dim": 512, "text_embed_dim": 4096, "dropout": 0.0, "attention_bias": True,
         "sample_width": 90, "sample_height": 60, "sample_frames": 49, "patch_size": 2,
         "temporal_compression_ratio": 4, "max_text_seq_length": 226, "activation_fn": "gelu-approximate",
         "timestep_activation_fn": "silu", "norm_elementwise_affine": True, "norm_eps": 1e-5,
         "spatial_interpolation_scale": 1.875, "temporal_interpolation_scale": 1.0}
COGVIDEOX_2B = {**_BASE, "num_attention_heads": 30, "num_layers": 30, "use_rotary_positional_embeddings": False}
COGVIDEOX_5B = {**_BASE, "num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True}
COGVIDEOX15_5B = {**COGVIDEOX_5B, "patch_size_t": 2, "patch_bias": False, "sample_height": 300, "sample_width": 300,
                  "sample_frames": 81}
#: 49 × 480 × 720: latent 13 × 60 × 90 → 13 × 30 × 45 = 17,550 video tokens + 226 text.
VIDEO_1_0 = VideoSize(49, 480, 720)
#: 81 × 768 × 1360: latent 21 (padded to 22) × 96 × 170 → 11 × 48 × 85 = 44,880 video tokens + 226 text.
VIDEO_1_5 = VideoSize(81, 768, 1360)
TEXT_TOKENS = 226


def resize_crop_region_for_grid(src: tuple[int, int], tgt_width: int, tgt_height: int):
    """The pipeline's ``get_resize_crop_region_for_grid`` (CogVideoX 1.0 rotary crop)."""
    th, tw = tgt_height, tgt_width
    h, w = src
    if h / w > th / tw:
        rh, rw = th, int(round(th / h * w))
    else:
        rw, rh = tw, int(round(tw / w * h))
    top, left = int(round((th - rh) / 2.0)), int(round((tw - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


class CogVideoX(Family):
    name = "cogvideox"
    class_name = "CogVideoXTransformer3DModel"
    text_position = "prefix"
    latent_layout = "FCHW"
    timestep_dtype = torch.long  # DDIM timesteps, as the pipeline passes them
    #: Tiny overrides for tests and dry runs: 2 blocks × 4 heads × head_dim 16 (rotary, 1.0 patching).
    tiny = {"num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 16, "text_embed_dim": 24,
            "time_embed_dim": 16}
    presets = {
        "cogvideox-2b": (COGVIDEOX_2B, VIDEO_1_0, TEXT_TOKENS),
        "cogvideox-5b": (COGVIDEOX_5B, VIDEO_1_0, TEXT_TOKENS),
        "cogvideox1.5-5b": (COGVIDEOX15_5B, VIDEO_1_5, TEXT_TOKENS),
    }

    def self_attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [block.attn1 for block in model.transformer_blocks]

    def patch(self, config: Any) -> tuple[int, int, int]:
        p_t = config.patch_size_t
        return (1 if p_t is None else int(p_t)), int(config.patch_size), int(config.patch_size)

    def text_dim(self, config: Any) -> int:
        return int(config.text_embed_dim)

    def pad_latent(self, config: Any, latent: tuple[int, int, int]) -> tuple[int, int, int]:
        """CogVideoX 1.5 pads the latent frames up to a multiple of patch_size_t (as its pipeline)."""
        f, h, w = latent
        p_t = self.patch(config)[0]
        return (-(-f // p_t) * p_t, h, w)

    def check_text_tokens(self, config: Any, tokens: int) -> int:
        if not config.use_rotary_positional_embeddings and tokens != config.max_text_seq_length:
            raise ValueError(f"cogvideox: with sincos positional embeddings (CogVideoX-2b) the text must be "
                             f"max_text_seq_length = {config.max_text_seq_length} tokens, got {tokens}")
        return tokens

    def rotary_embedding(self, model: nn.Module, latent_frames: int, latent_h: int, latent_w: int,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin) as ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` makes them."""
        cfg = model.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        p, p_t = cfg.patch_size, cfg.patch_size_t
        grid_h, grid_w = latent_h // p, latent_w // p
        base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
        if p_t is None:
            crops = resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
            cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                               grid_size=(grid_h, grid_w), temporal_size=latent_frames,
                                               device=device)
        else:
            cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None,
                                               grid_size=(grid_h, grid_w),
                                               temporal_size=(latent_frames + p_t - 1) // p_t,
                                               grid_type="slice", max_size=(base_h, base_w), device=device)
        return cos, sin

    def forward_inputs(self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor,
                       text: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        f, h, w = self.video_dims(latents)
        kw: dict[str, Any] = {"hidden_states": latents, "encoder_hidden_states": text, "timestep": timestep,
                              "image_rotary_emb": self.rotary_embedding(model, f, h, w, latents.device),
                              "return_dict": False}
        if model.config.ofs_embed_dim:  # CogVideoX 1.5 I2V: the pipeline passes ofs = 2.0
            kw["ofs"] = torch.full((latents.shape[0],), 2.0, device=latents.device, dtype=latents.dtype)
        return kw


FAMILY = CogVideoX()
