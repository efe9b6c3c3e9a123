"""Token layout of one attention call: text tokens plus a frames × height × width video grid.

A video token at token index t has video index v = f·S + p with S = H·W and spatial index
p = y·W + x. Text tokens sit before the video (``prefix``, CogVideoX) or after it (``suffix``,
HunyuanVideo). A 1-D model (text encoder, LLM) is ``Geometry.sequence(n)``: F = 1, H = n, W = 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

TextPosition = Literal["prefix", "suffix"]
BLOCK_SIZES = (64, 128)


class GeometryError(ValueError):
    """A geometry field is out of range or does not match the tensors it describes."""


@dataclass(frozen=True)
class Geometry:
    frames: int
    height: int
    width: int
    text_tokens: int = 0
    text_position: TextPosition = "prefix"

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GeometryError(f"geometry.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.text_tokens, int) or isinstance(self.text_tokens, bool) or self.text_tokens < 0:
            raise GeometryError(f"geometry.text_tokens must be a non-negative integer, got {self.text_tokens!r}")
        if self.text_position not in ("prefix", "suffix"):
            raise GeometryError(
                f"geometry.text_position must be 'prefix' or 'suffix', got {self.text_position!r}"
            )

    @classmethod
    def sequence(cls, num_tokens: int) -> Geometry:
        """1-D geometry for text-only models: every token is a 'video' token of one frame."""
        return cls(frames=1, height=num_tokens, width=1)

    @property
    def frame_size(self) -> int:
        """S = H·W, tokens per frame."""
        return self.height * self.width

    @property
    def video_tokens(self) -> int:
        return self.frames * self.frame_size

    @property
    def num_tokens(self) -> int:
        """N = T + F·H·W."""
        return self.text_tokens + self.video_tokens

    @property
    def video_start(self) -> int:
        """Token index of video index 0."""
        return self.text_tokens if self.text_position == "prefix" else 0

    def num_blocks(self, block_size: int) -> int:
        check_block_size(block_size)
        return math.ceil(self.num_tokens / block_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        fields = ("frames", "height", "width", "text_tokens", "text_position")
        missing = [f for f in fields[:3] if f not in data]
        if missing:
            raise GeometryError(f"geometry is missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise GeometryError(f"geometry has unknown field(s): {', '.join(unknown)}")
        return cls(**{k: data[k] for k in fields if k in data})

    def check_tokens(self, num_tokens: int) -> None:
        """Raise if a tensor's sequence length is not this geometry's N."""
        if num_tokens != self.num_tokens:
            raise GeometryError(
                f"sequence length {num_tokens} does not match geometry N = T + F·H·W = "
                f"{self.text_tokens} + {self.frames}·{self.height}·{self.width} = {self.num_tokens}"
            )

    def __str__(self) -> str:
        text = f", {self.text_tokens} text ({self.text_position})" if self.text_tokens else ""
        return f"{self.frames}×{self.height}×{self.width}{text} (N={self.num_tokens})"


def check_block_size(block_size: int) -> None:
    if block_size not in BLOCK_SIZES:
        raise GeometryError(f"block_size must be one of {BLOCK_SIZES}, got {block_size!r}")
