"""Residual reuse across denoising steps (docs/design.md, "Residual reuse").

A plan entry with ``residual`` runs, at its first step, every call's inexact heads (all but the
native dense ones) also exactly and keeps R = exact − planned on those heads (the part of their
output the layer plan misses); each later step of the entry returns planned + R. Between
neighbouring denoising steps a layer's attention output changes slowly, and so does what its mask
misses, so the entry's later steps err by how much R drifts, not by R itself.

:class:`ResidualStore` holds the residuals of one ``apply`` context, keyed by (expert, layer, the
call's ordinal among that layer's calls in its step: CFG branches called separately are two calls),
each tagged with the entry (its first step) that made it. A later step whose residual is missing,
belongs to another entry or does not match the call's shape is a PlanError, never an output without
it; so is running out of device memory while keeping one (the message says what the residuals hold;
``Plan.residual_bytes`` says it before a run).

``precision`` "fp8" keeps each residual in e4m3 with a float32 scale per row (``quantize_rows``): about
half the memory of bf16 (a quarter of float32), at e4m3's rounding of R (relative ~2⁻⁴ per value).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Callable, NamedTuple, Union

import torch

from ..plan import PlanError, ScheduleEntry
from .quantize import dequantize_rows, quantize_rows

#: How a ResidualStore keeps residuals: in the call's dtype, or in e4m3 with a scale per row.
RESIDUAL_PRECISIONS = ("native", "fp8")


class Fp8Residual(NamedTuple):
    """A residual kept in FP8: e4m3 values, a float32 scale per row (``quantize_rows``) and the
    dtype it is added back in."""

    values: torch.Tensor
    scale: torch.Tensor
    dtype: torch.dtype

    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.scale.numel() * self.scale.element_size()

    def dequantized(self) -> torch.Tensor:
        return dequantize_rows(self.values, self.scale, self.dtype)


Kept = Union[torch.Tensor, Fp8Residual]


@lru_cache(maxsize=256)
def head_index(heads: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``heads`` as an index tensor on ``device``, made once per (heads, device): no host-to-device
    copy per call."""
    return torch.tensor(heads, device=device)


class ResidualStore:
    """Residuals of one ``apply`` context (see the module docstring)."""

    def __init__(self, precision: str = "native") -> None:
        if precision not in RESIDUAL_PRECISIONS:
            raise ValueError(f"residual_precision: must be one of {', '.join(RESIDUAL_PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self._kept: dict[tuple, tuple[int, Kept]] = {}
        self._ordinal: Counter = Counter()
        self._bytes = 0
        #: The most bytes the kept residuals held at once since the store was made or last cleared.
        self.peak_bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def nbytes(self) -> int:
        """Bytes the kept residuals occupy."""
        return self._bytes

    def clear(self) -> None:
        self._kept.clear()
        self._ordinal.clear()
        self._bytes = self.peak_bytes = 0

    def _keep(self, key: tuple, start: int, step: int, make: Callable[[], torch.Tensor]) -> None:
        """Store ``make()`` (exact − planned) under ``key``, replacing the entry's earlier one."""
        old = self._kept.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old[1])
        try:
            residual = make()
            if self.precision == "fp8":
                residual = Fp8Residual(*quantize_rows(residual), residual.dtype)
        except torch.OutOfMemoryError as err:
            expert, layer, ordinal = key
            where = f"layer {layer}" + (f" of {expert}" if expert is not None else "")
            raise PlanError(f"residual: out of device memory at step {step} keeping the residual of {where}, call "
                            f"{ordinal}: {len(self._kept)} residuals hold {self._bytes / 2**30:.2f} GiB already "
                            "(one per layer and call of a step; Plan.residual_bytes gives a plan's total): keep them in "
                            "FP8 (apply(..., residual_precision=\"fp8\")), run a smaller batch, or a plan without "
                            "residual entries") from err
        self._kept[key] = (start, residual)
        self._bytes += _nbytes(residual)
        self.peak_bytes = max(self.peak_bytes, self._bytes)

    def run(self, step: int, layer: int, expert: str | None, entry: ScheduleEntry, heads: tuple[int, ...],
            planned: Callable[[], torch.Tensor], exact: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The output of one call in residual ``entry`` whose inexact heads are ``heads`` (dim 1 of
        the output): ``planned()`` with, at the entry's first step, those heads replaced by
        ``exact()`` (their exact output, [batch, len(heads), N, D]) and exact − planned kept; at
        the later steps the kept residual added to them."""
        ordinal = self._ordinal[(step, expert, layer)]
        self._ordinal[(step, expert, layer)] += 1
        key = (expert, layer, ordinal)
        if entry.refreshes(step):
            out = planned()
            exact_out = exact()
            if len(heads) == out.shape[1]:
                self._keep(key, entry.start, step, lambda: exact_out - out)
                return exact_out
            index = head_index(heads, out.device)
            self._keep(key, entry.start, step, lambda: exact_out - out.index_select(1, index))
            return out.index_copy_(1, index, exact_out)
        kept = self._kept.get(key)
        where = f"residual entry [{entry.start}, {entry.stop})"
        if kept is None or kept[0] != entry.start:
            raise PlanError(f"residual: step {step} of the {where} has no residual from its exact step "
                            f"{entry.start} for call {ordinal} of this layer (did sampling start after step "
                            f"{entry.start}, or does the entry cross an expert hand-over?)")
        out = planned()
        residual = kept[1]
        fp8 = isinstance(residual, Fp8Residual)
        values, dtype = (residual.values if fp8 else residual), residual.dtype  # an Fp8Residual's: the one it returns to
        want = (out.shape[0], len(heads), *out.shape[2:])
        if tuple(values.shape) != want or dtype != out.dtype or values.device != out.device:
            raise PlanError(f"residual: step {step} of the {where}: the call's output {tuple(out.shape)} "
                            f"{out.dtype} does not match the residual kept at step {entry.start} "
                            f"({tuple(values.shape)} {dtype}): the calls' shapes changed within the entry")
        if fp8:
            residual = residual.dequantized()
        if len(heads) == out.shape[1]:
            return out.add_(residual)
        return out.index_add_(1, head_index(heads, out.device), residual)


def _nbytes(kept: Kept) -> int:
    return kept.nbytes() if isinstance(kept, Fp8Residual) else kept.numel() * kept.element_size()


__all__ = ["RESIDUAL_PRECISIONS", "ResidualStore"]
