"""HunyuanVideo (diffusers ``HunyuanVideoTransformer3DModel``).

Layers: the ``num_layers`` dual-stream blocks (``transformer_blocks[i].attn``: video and text
get their own projections, the processor concatenates ``[video, text]``) then the
``num_single_layers`` single-stream blocks (``single_transformer_blocks[i].attn``: the block
concatenates ``[video, text]`` itself). Both are one SDPA call over N = F·H·W + T with the text
*after* the video: text_position ``suffix``. 20 + 40 = 60 layers for the released model. The
token refiner (``context_embedder``) attends over the text alone: passed through, not a layer.

Text and its mask. The pipeline pads the prompt (LLaMA tokens, 256 after the template crop) and
passes ``encoder_attention_mask``; the transformer turns it into a boolean key mask [B, 1, 1, N]
handed to every attention call. attnsearch's patterns keep every text column, so padded keys
cannot be honoured by a sparse plan: inputs built here carry no padding (T = the real prompt
tokens; :func:`trim_text_padding` drops a pipeline's padding, which is exact for the video output:
padded tokens are masked keys everywhere and never reach the output). When the mask of a forward is
all ones — checked once per forward — the adapter drops the (then all-true) mask from the
self-attention calls, an exact no-op, so sparse plans and the profiler see unmasked SDPA. A mask
with real padding is left in place: the profiler and ``apply`` then refuse those calls by name.

Latent input [B, 16, F, H, W] with a (1, 2, 2) patch (Conv3d, flatten(2)): tokens f·S + y·W + x.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .family import Family, Instrumentation, VideoSize

HUNYUAN_VIDEO = {"in_channels": 16, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128,
                 "num_layers": 20, "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0,
                 "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
                 "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0,
                 "rope_axes_dim": (16, 56, 56)}
#: 129 × 720 × 1280: latent 33 × 90 × 160 → 33 × 45 × 80 = 118,800 video tokens (+ text).
VIDEO_720P = VideoSize(129, 720, 1280)
TEXT_TOKENS = 256


def trim_text_padding(inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop the text positions no batch element attends (mask zero everywhere past the longest
    prompt); returns new keyword inputs. Exact for the transformer's video output."""
    mask = inputs.get("encoder_attention_mask")
    if mask is None:
        return dict(inputs)
    keep = int(mask.to(torch.int64).sum(dim=1).max())
    out = dict(inputs)
    out["encoder_hidden_states"] = inputs["encoder_hidden_states"][:, :keep]
    out["encoder_attention_mask"] = mask[:, :keep]
    return out


class HunyuanVideo(Family):
    name = "hunyuanvideo"
    class_name = "HunyuanVideoTransformer3DModel"
    text_position = "suffix"
    latent_layout = "CFHW"
    #: Tiny overrides for tests and dry runs: 1 dual- + 2 single-stream blocks × 4 heads × head_dim 16.
    tiny = {"num_layers": 1, "num_single_layers": 2, "num_refiner_layers": 1, "num_attention_heads": 4,
            "attention_head_dim": 16, "text_embed_dim": 24, "pooled_projection_dim": 8, "rope_axes_dim": (4, 6, 6)}
    presets = {"hunyuanvideo": (HUNYUAN_VIDEO, VIDEO_720P, TEXT_TOKENS)}

    def self_attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [b.attn for b in model.transformer_blocks] + [b.attn for b in model.single_transformer_blocks]

    def patch(self, config: Any) -> tuple[int, int, int]:
        return int(config.patch_size_t), int(config.patch_size), int(config.patch_size)

    def text_dim(self, config: Any) -> int:
        return int(config.text_embed_dim)

    def prepare(self, model: nn.Module, instrumentation: Instrumentation) -> None:
        state = {"full": False}

        def check_mask(module, args, kwargs) -> None:  # once per transformer forward
            mask = kwargs.get("encoder_attention_mask")
            if mask is None and len(args) > 3:
                mask = args[3]
            state["full"] = mask is not None and bool(mask.all())

        def drop_full_mask(module, args, kwargs):
            if state["full"] and kwargs.get("attention_mask") is not None:
                kwargs = dict(kwargs, attention_mask=None)
                return args, kwargs
            return None

        h = instrumentation.handles
        h.append(model.register_forward_pre_hook(check_mask, with_kwargs=True))
        for m in instrumentation.modules:
            h.append(m.register_forward_pre_hook(drop_full_mask, with_kwargs=True))

    def forward_inputs(self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor,
                       text: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        b, dev = latents.shape[0], latents.device
        cfg = model.config
        pooled = torch.randn(b, cfg.pooled_projection_dim, generator=generator).to(device=dev, dtype=latents.dtype)
        kw: dict[str, Any] = {
            "hidden_states": latents, "timestep": timestep, "encoder_hidden_states": text,
            "encoder_attention_mask": torch.ones(b, text.shape[1], dtype=torch.int64, device=dev),
            "pooled_projections": pooled, "return_dict": False,
        }
        if cfg.guidance_embeds:  # the pipeline's embedded guidance: 6.0 × 1000
            kw["guidance"] = torch.full((b,), 6000.0, device=dev, dtype=latents.dtype)
        return kw


FAMILY = HunyuanVideo()
