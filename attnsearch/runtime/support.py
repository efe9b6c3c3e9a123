"""What this process runs: for each kind of block-sparse call (head_dim, block size, precision) of
one dtype on one device, the backend ``backend="auto"`` takes and why each backend does not run it.

Both come from the backends themselves, asked on small tensors of that kind on the device
(``Backend.auto_reasons``, ``backends.backend_for``): this module holds no rule of its own, so what
it says is what a call of that kind does. ``attnsearch info`` prints it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..layer_plan import PRECISIONS
from .backends import BACKENDS, backend_for

#: The call kinds asked about: the head dims and block sizes the plans and kernels use.
HEAD_DIMS = (64, 128)
BLOCK_SIZES = (64, 128)


@dataclass(frozen=True)
class CallSupport:
    """One kind of call: the backend "auto" runs it on (None: none can) and, per backend, why it
    cannot (an empty list where it can)."""

    head_dim: int
    block_size: int
    precision: str
    backend: str | None
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"head_dim": self.head_dim, "block_size": self.block_size, "precision": self.precision,
                "backend": self.backend, "reasons": self.reasons}


def call_support(device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16,
                 head_dims=HEAD_DIMS, block_sizes=BLOCK_SIZES, precisions=PRECISIONS) -> list[CallSupport]:
    """Every (head_dim, block size, precision) of ``dtype`` calls on ``device`` (default: the CUDA
    GPU when there is one, else the CPU), in that order."""
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for head_dim in head_dims:
        for block_size in block_sizes:
            q = torch.zeros(1, 1, block_size, head_dim, dtype=dtype, device=device)
            for precision in precisions:
                reasons = {b.name: b.auto_reasons(q, q, q, block_size, precision) for b in BACKENDS}
                with warnings.catch_warnings():  # "auto" warns when it falls back to torch on CUDA
                    warnings.simplefilter("ignore", RuntimeWarning)
                    try:
                        chosen = backend_for(q, q, q, block_size, "auto", precision).name
                    except ValueError:  # no backend runs it: the reasons say why
                        chosen = None
                rows.append(CallSupport(head_dim, block_size, precision, chosen, reasons))
    return rows


__all__ = ["BLOCK_SIZES", "CallSupport", "HEAD_DIMS", "call_support"]
