"""A closed flow-matching denoising loop over recorded inputs, dense or under a plan (validation).

Kept apart from ``common`` (which the runtime's pipeline support imports) because it runs the
runtime's ``apply``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import family_of


def sample(model: nn.Module, inputs: list[dict[str, Any]], *, plan: Any = None, **apply_kwargs: Any) -> torch.Tensor:
    """Run a deterministic flow-matching Euler loop from ``inputs[0]`` and return the final latents.

    Step i feeds the current latents with ``inputs[i]``'s timestep and conditioning; the update is
    x ← x + (σ_{i+1} − σ_i)·v with σ = timestep / 1000 (σ_{n} = 0). With ``plan``, every forward
    runs under ``apply(model, plan, **apply_kwargs)`` (step i = forward i). Compare dense and sparse
    finals with :mod:`attnsearch.metrics`. It is the same closed loop for both, not each model's
    own scheduler: a consistent yardstick for how far sparse attention drifts.
    """
    from contextlib import nullcontext

    fam = family_of(model)
    ctx = nullcontext()
    if plan is not None:
        from ...runtime import apply

        ctx = apply(model, plan, **apply_kwargs)
    x = inputs[0]["hidden_states"]
    sigmas = [float(e["timestep"].reshape(-1)[0]) / (999.0 if fam.timestep_dtype == torch.long else 1000.0)
              for e in inputs] + [0.0]
    with torch.no_grad(), ctx:
        for i, entry in enumerate(inputs):
            kw = dict(entry, hidden_states=x)
            v = model(**kw)
            v = v[0] if isinstance(v, (tuple, list)) else getattr(v, "sample", v)
            x = (x.float() + (sigmas[i + 1] - sigmas[i]) * v.float()).to(x.dtype)
    return x


__all__ = ["sample"]
