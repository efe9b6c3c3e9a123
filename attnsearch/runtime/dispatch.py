"""Backends and dispatch: each backend says what it cannot run and why; "auto" takes the first that can.

    hopper  warp-specialised block-sparse flash attention in Gluon (FlashAttention-3's schedule):
            Hopper GPUs (sm_90), head_dim 64 or 128, block size 128, fp16 / bf16, TMA-aligned strides
    triton  block-sparse flash attention (CUDA; or CPU under TRITON_INTERPRET=1)
            head_dim 64 or 128, fp16 / bf16 / fp32
    torch   reference-quality chunked gather in PyTorch: any device, head_dim, floating dtype

On CUDA, "auto" falling back to torch is a performance surprise, so it warns once per distinct
reason (falling from hopper to triton is expected on other GPUs and block size 64, and is silent).
Naming a backend that cannot run the call raises with its reasons.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from typing import Literal

import torch

from ..plan import LayerPlan
from .block_tables import get_block_tables

BackendName = Literal["auto", "hopper", "triton", "torch"]
#: Head dims the Triton kernel is built for (a power of two its tiles hold whole).
HEAD_DIMS = (64, 128)


class Backend(ABC):
    name: str = ""
    #: Which block-table fusion the backend consumes ("layer": one launch per layer).
    fusion = "layer"

    @abstractmethod
    def not_supported_reasons(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              layer_plan: LayerPlan) -> list[str]:
        """Why this backend cannot run the call (empty: it can)."""

    @abstractmethod
    def forward(self, q, k, v, layer_plan: LayerPlan, scale: float, out: torch.Tensor | None) -> torch.Tensor:
        """Run the call; ``out`` (optional) receives the result."""


class HopperBackend(Backend):
    """Where it runs, 15-28% faster than the Triton kernel on an H100 at head_dim 128
    (reports/kernel/kernel-notes.md, variants 10-12)."""

    name = "hopper"

    def not_supported_reasons(self, q, k, v, layer_plan):
        if q.device.type != "cuda":
            return [f"tensors are on {q.device.type}; the Hopper kernel needs a CUDA GPU of compute capability 9.x"]
        if os.environ.get("TRITON_INTERPRET") == "1":
            return ["TRITON_INTERPRET=1: Gluon kernels do not run under the interpreter"]
        try:
            from . import hopper_kernel
        except (ImportError, AttributeError) as err:  # no Gluon, or a Gluon without warp specialisation
            return [f"triton.experimental.gluon with Hopper support is not importable ({err})"]
        # head_dim 64 included: queued, its tile schedule was 1-9% ahead of the Triton kernel in 7
        # of 8 interleaved pairs on H100s (kernel-notes.md, runs 33-36). The synced timings before
        # (Triton 6-12% ahead, runs 9-10) had charged it its heavier launch.
        return hopper_kernel.not_supported_reasons(q, k, v, layer_plan.block_size)

    def forward(self, q, k, v, layer_plan, scale, out):
        from . import hopper_kernel

        tables = get_block_tables(layer_plan, q.device, self.fusion)
        return hopper_kernel.forward(q, k, v, tables, scale, out)


class TritonBackend(Backend):
    name = "triton"

    def not_supported_reasons(self, q, k, v, layer_plan):
        reasons = []
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        if q.device.type != "cuda" and not (q.device.type == "cpu" and interpret):
            # Checked before importing the kernel module: importing it decides interpreter or not.
            reasons.append(f"tensors are on {q.device.type}; the Triton kernel needs CUDA "
                           "(or CPU tensors with TRITON_INTERPRET=1)")
        else:
            try:
                from . import triton_kernel
            except ImportError as err:  # triton missing or broken on this platform
                return [f"triton is not importable ({err})"]
            if q.device.type == "cpu" and not triton_kernel.interpreter_active():
                reasons.append("TRITON_INTERPRET=1 was set after triton (or the kernel module) was imported")
            if q.device.type == "cuda" and triton_kernel.interpreter_active():
                reasons.append("the kernel was imported under TRITON_INTERPRET=1 and cannot run on CUDA")
        if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            reasons.append(f"dtype {q.dtype} is not one of fp16, bf16, fp32")
        if q.shape[-1] not in HEAD_DIMS:
            reasons.append(f"head_dim {q.shape[-1]} is not one of {HEAD_DIMS}")
        return reasons

    def forward(self, q, k, v, layer_plan, scale, out):
        from . import triton_kernel

        tables = get_block_tables(layer_plan, q.device, self.fusion)
        return triton_kernel.forward(q, k, v, tables, scale, out)


class TorchBackend(Backend):
    name = "torch"
    fusion = "group"  # heads of one family have similar counts: less padding per gather

    def not_supported_reasons(self, q, k, v, layer_plan):
        return [] if q.dtype.is_floating_point else [f"dtype {q.dtype} is not a floating-point type"]

    def forward(self, q, k, v, layer_plan, scale, out):
        from . import torch_backend

        tables = get_block_tables(layer_plan, q.device, self.fusion)
        return torch_backend.forward(q, k, v, tables, scale, out)


BACKENDS: tuple[Backend, ...] = (HopperBackend(), TritonBackend(), TorchBackend())
_WARNED: set[str] = set()


def get_backend(name: str) -> Backend:
    for b in BACKENDS:
        if b.name == name:
            return b
    raise ValueError(f"backend: must be 'auto' or one of {[b.name for b in BACKENDS]}, got {name!r}")


def select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan,
                   backend: BackendName = "auto") -> Backend:
    """The backend that runs this call: the named one (or raise), or the first that supports it."""
    if backend != "auto":
        chosen = get_backend(backend)
        reasons = chosen.not_supported_reasons(q, k, v, layer_plan)
        if reasons:
            raise ValueError(f"backend={backend!r} cannot run this call: {'; '.join(reasons)}")
        return chosen
    skipped = []
    for b in BACKENDS:
        reasons = b.not_supported_reasons(q, k, v, layer_plan)
        if not reasons:
            if b.name == "torch" and skipped and q.device.type == "cuda":
                msg = "; ".join(f"{name}: {', '.join(r)}" for name, r in skipped)
                if msg not in _WARNED:
                    _WARNED.add(msg)
                    warnings.warn(f"attnsearch.sparse_attention: using the {b.name} backend ({msg})",
                                  RuntimeWarning, stacklevel=3)
            return b
        skipped.append((b.name, reasons))
    raise ValueError("no backend can run this call: " + "; ".join(f"{n}: {', '.join(r)}" for n, r in skipped))
