"""The shape of one diffusers video-transformer family, and the hooks that mark its self-attention.

Geometry. Inferred from the config and the actual inputs (:meth:`Family.geometry`): the latent
video after patchify (frames // p_t, height // p, width // p, in the patch-embedding's token order
f·S + y·W + x), and the text tokens of the joint sequence with their position: CogVideoX
concatenates [text, video] (``prefix``, all T5 tokens incl. padding: the 226-token prompt is
padded, not masked), HunyuanVideo [video, text] (``suffix``), Wan none (its text is cross-attended).

Layers. :class:`Instrumentation` puts a forward pre/post hook on each self-attention module a
family names and installs ``model.attnsearch_accept(call)``, which accepts an SDPA call only while
one of them is running (see :mod:`attnsearch.models.diffusers.common`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...geometry import Geometry


def require_diffusers():
    """Import diffusers or raise ModelUnavailableError saying how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        from .. import ModelUnavailableError

        raise ModelUnavailableError(
            "the diffusers adapters need the package diffusers (pip install 'attnsearch[diffusers]'): "
            f"{exc}") from None
    return diffusers


def positive_int(name: str, value: Any, lo: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"option {name} must be an integer ≥ {lo}, got {value!r}")
    return value


def resolve_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"option dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


# --- families ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSize:
    """Pixel-space video size, as the pipelines take it."""

    num_frames: int
    height: int
    width: int


class Family(ABC):
    """One diffusers transformer class: how to find its self-attention and lay out its inputs.

    Subclasses (wan.py, cogvideox.py, hunyuan.py) set the class attributes and implement the
    abstract methods. Sizes: VAE compression ``vae_temporal`` × ``vae_spatial`` (4 × 8 for all
    three), latent frames = (num_frames − 1) // vae_temporal + 1.
    """

    name: ClassVar[str]
    class_name: ClassVar[str]
    text_position: ClassVar[str] = "prefix"
    #: Order of the latent input's dims after batch: "CFHW" (Wan, Hunyuan) or "FCHW" (CogVideoX).
    latent_layout: ClassVar[str] = "CFHW"
    vae_temporal: ClassVar[int] = 4
    vae_spatial: ClassVar[int] = 8
    #: preset name → (transformer config, default pixel video size, default text tokens)
    presets: ClassVar[dict[str, tuple[dict[str, Any], VideoSize, int]]] = {}
    #: config overrides of a tiny instance (tests, dry runs): few layers and heads, head_dim 16
    tiny: ClassVar[dict[str, Any]] = {}
    #: dtype of the timestep the pipeline passes (and random inputs use)
    timestep_dtype: ClassVar[torch.dtype] = torch.float32

    # -- class and modules ---------------------------------------------------------------------

    def transformer_class(self) -> type:
        diffusers = require_diffusers()
        return getattr(diffusers, self.class_name)

    def matches(self, model: nn.Module) -> bool:
        try:
            return isinstance(model, self.transformer_class())
        except AttributeError:  # an old diffusers without this class
            return False

    @abstractmethod
    def self_attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """The attention modules whose SDPA call is a layer, in call order."""

    def num_heads(self, model: nn.Module) -> int:
        return int(model.config.num_attention_heads)

    def head_dim(self, model: nn.Module) -> int:
        return int(model.config.attention_head_dim)

    @abstractmethod
    def patch(self, config: Any) -> tuple[int, int, int]:
        """(p_t, p_h, p_w)."""

    def in_channels(self, config: Any) -> int:
        return int(config.in_channels)

    @abstractmethod
    def text_dim(self, config: Any) -> int:
        """Width of the text embeddings the transformer takes."""

    # -- sizes and geometry --------------------------------------------------------------------

    def latent_size(self, config: Any, size: VideoSize) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width) the pipeline makes for a pixel size."""
        for name in ("num_frames", "height", "width"):
            positive_int(name, getattr(size, name))
        if (size.num_frames - 1) % self.vae_temporal:
            raise ValueError(f"{self.name}: num_frames must be 1 + a multiple of {self.vae_temporal} "
                             f"(e.g. 81), got {size.num_frames}")
        p_t, p_h, p_w = self.patch(config)
        cell_h, cell_w = self.vae_spatial * p_h, self.vae_spatial * p_w
        if size.height % cell_h or size.width % cell_w:
            raise ValueError(f"{self.name}: height and width must be multiples of {cell_h} and {cell_w} "
                             f"(VAE ×{self.vae_spatial} × patch), got {size.height}×{size.width}")
        frames = (size.num_frames - 1) // self.vae_temporal + 1
        return frames, size.height // self.vae_spatial, size.width // self.vae_spatial

    def pad_latent(self, config: Any, latent: tuple[int, int, int]) -> tuple[int, int, int]:
        """The latent size the transformer is fed (CogVideoX 1.5 pads the frames); default unchanged."""
        return latent

    def check_text_tokens(self, config: Any, tokens: int) -> int:
        """Raise if the model cannot take ``tokens`` text tokens; default any number."""
        return tokens

    def latent_shape(self, config: Any, latent: tuple[int, int, int], batch: int) -> tuple[int, ...]:
        f, h, w = latent
        c = self.in_channels(config)
        return (batch, c, f, h, w) if self.latent_layout == "CFHW" else (batch, f, c, h, w)

    def video_dims(self, hidden_states: torch.Tensor) -> tuple[int, int, int]:
        """(frames, height, width) of a latent input tensor (before patchify)."""
        if hidden_states.dim() != 5:
            raise ValueError(f"{self.name}: hidden_states must be a 5-D latent video, got {tuple(hidden_states.shape)}")
        if self.latent_layout == "CFHW":
            return tuple(hidden_states.shape[2:])  # type: ignore[return-value]
        return (hidden_states.shape[1], *hidden_states.shape[3:])  # type: ignore[return-value]

    def text_tokens(self, inputs: dict[str, Any]) -> int:
        """Text tokens that join the self-attention sequence (0 when text is cross-attended)."""
        return int(inputs["encoder_hidden_states"].shape[1]) if self.text_position_of(inputs) else 0

    def text_position_of(self, inputs: dict[str, Any]) -> str | None:
        return self.text_position

    def geometry(self, model: nn.Module, inputs: dict[str, Any]) -> Geometry:
        """Token layout of every self-attention call of a forward with these keyword inputs."""
        f, h, w = self.video_dims(inputs["hidden_states"])
        p_t, p_h, p_w = self.patch(model.config)
        if f % p_t or h % p_h or w % p_w:
            raise ValueError(f"{self.name}: latent {f}×{h}×{w} is not divisible by the patch {p_t}×{p_h}×{p_w}")
        pos = self.text_position_of(inputs)
        return Geometry(f // p_t, h // p_h, w // p_w, self.text_tokens(inputs), pos or "prefix")

    # -- inputs --------------------------------------------------------------------------------

    @abstractmethod
    def forward_inputs(self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor,
                       text: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Keyword inputs of one transformer forward (return_dict=False)."""

    def prepare(self, model: nn.Module, instrumentation: Instrumentation) -> None:
        """Family-specific instrumentation (HunyuanVideo's mask handling)."""


# --- instrumentation ---------------------------------------------------------------------------


class Instrumentation:
    """Hooks that mark the self-attention calls of one transformer (see the module docstring).

    ``model.attnsearch_accept`` is :meth:`accept`; ``model.attnsearch_instrumentation`` is this
    object. :meth:`remove` takes every hook and attribute away again.
    """

    def __init__(self, model: nn.Module, family: Family) -> None:
        self.family = family
        self.modules = family.self_attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__}: found no self-attention modules")
        self.depth = 0
        self.handles: list[Any] = []
        self.model = model
        for m in self.modules:
            self.handles.append(m.register_forward_pre_hook(self._enter))
            self.handles.append(m.register_forward_hook(self._exit, always_call=True))
        family.prepare(model, self)
        model.attnsearch_accept = self.accept
        model.attnsearch_geometry = self.geometry
        model.attnsearch_instrumentation = self

    @property
    def num_layers(self) -> int:
        """Self-attention calls per forward."""
        return len(self.modules)

    def _enter(self, module, args) -> None:
        self.depth += 1

    def _exit(self, module, args, output) -> None:
        self.depth -= 1

    def geometry(self, *args: Any, **kwargs: Any) -> Geometry:
        """The geometry of a forward's self-attention calls, from the forward's arguments
        (``hidden_states`` first or by keyword): ``apply`` asks it, so a plan runs at the size the
        pipeline is called with."""
        inputs = dict(kwargs)
        if args and "hidden_states" not in inputs:
            inputs["hidden_states"] = args[0]
        return self.family.geometry(self.model, inputs)

    def accept(self, call: Any) -> bool:
        """capture_attention's filter: only calls made inside a self-attention module are layers."""
        return self.depth > 0

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        for name in ("attnsearch_accept", "attnsearch_geometry", "attnsearch_instrumentation"):
            self.model.__dict__.pop(name, None)


__all__ = ["Family", "Instrumentation", "VideoSize", "positive_int", "require_diffusers", "resolve_dtype"]
