"""Wan2.1 (diffusers ``WanTransformer3DModel``).

Per block: ``attn1`` is self-attention over the video tokens only (N = F·H·W after the (1, 2, 2)
patchify; no text in the sequence, so geometry text_tokens = 0), ``attn2`` cross-attends the video
queries to the 512 UMT5 text tokens (plus 257 CLIP image tokens in I2V, a second SDPA call): both
are passed through untouched. One self-attention SDPA call per block → num_layers layers.

Latent input [B, 16, F, H, W]; the patch embedding (Conv3d, then flatten(2)) orders tokens
f·S + y·W + x. The pipeline pads the text embeddings to 512 tokens (zeros beyond the prompt).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .family import Family, VideoSize

#: Wan2.1-T2V-1.3B / 14B transformer configs (their published transformer/config.json).
_BASE = {"patch_size": (1, 2, 2), "attention_head_dim": 128, "in_channels": 16, "out_channels": 16,
         "text_dim": 4096, "freq_dim": 256, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
         "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": 1024}
WAN_1_3B = {**_BASE, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30}
WAN_14B = {**_BASE, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
#: 480p, 81 frames: latent 21 × 60 × 104 → 21 × 30 × 52 = 32,760 tokens.
VIDEO_480P = VideoSize(81, 480, 832)
VIDEO_720P = VideoSize(81, 720, 1280)   # latent 21 × 90 × 160 → 21 × 45 × 80 = 75,600 tokens
TEXT_TOKENS = 512


class Wan(Family):
    name = "wan"
    class_name = "WanTransformer3DModel"
    text_position = "prefix"  # unused: no text in the self-attention sequence
    latent_layout = "CFHW"
    #: Tiny overrides for tests and dry runs: 2 blocks × 4 heads × head_dim 16.
    tiny = {"num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 16, "ffn_dim": 64, "text_dim": 24,
            "freq_dim": 32}
    presets = {
        "wan2.1-1.3b": (WAN_1_3B, VIDEO_480P, TEXT_TOKENS),
        "wan2.1-14b": (WAN_14B, VIDEO_720P, TEXT_TOKENS),
    }

    def self_attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [block.attn1 for block in model.blocks]

    def patch(self, config: Any) -> tuple[int, int, int]:
        p_t, p_h, p_w = config.patch_size
        return int(p_t), int(p_h), int(p_w)

    def text_dim(self, config: Any) -> int:
        return int(config.text_dim)

    def text_position_of(self, inputs: dict[str, Any]) -> str | None:
        return None  # text is cross-attended, not part of the self-attention sequence

    def forward_inputs(self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor,
                       text: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        return {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": text, "return_dict": False}


FAMILY = Wan()
