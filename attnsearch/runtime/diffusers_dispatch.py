"""Which diffusers attention backends a plan can run under (diffusers' ``attention_dispatch``).

diffusers routes every attention call through ``dispatch_attention_fn`` to a backend chosen per
processor (``model.set_attention_backend(name)``) or globally (``DIFFUSERS_ATTN_BACKEND``, the
``attention_backend(name)`` context manager). ``apply`` sees a call only when that backend ends in
``torch.nn.functional.scaled_dot_product_attention``:

========================= ============================== ====================================
backend                   one GPU                        context parallel (Ulysses)
========================= ============================== ====================================
``native``                SDPA: intercepted              per-rank SDPA: intercepted
``_native_cudnn``         SDPA (cuDNN forced): intercepted   aten cuDNN kernel: refused
``_native_flash``         SDPA (flash forced): intercepted   aten flash kernel: refused
``_native_efficient``     SDPA: intercepted              (diffusers: no context parallelism)
``_native_math``          SDPA: intercepted              (diffusers: no context parallelism)
flash*, sage*, flex,      their own kernels: refused     refused
xformers, aiter, npu, xla
========================= ============================== ====================================

A refused backend would run every call dense, unseen: :func:`check_model` raises one line
naming it instead. An intercepted call runs the plan whatever SDPA kernel the backend forced;
all-dense layers keep the caller's SDPA kernel choice (``runtime.dense``).

Context parallelism: Ulysses (``ulysses_degree`` K) gives each rank H/K whole heads over the whole
sequence, which the plan's per-rank slice runs (``parallel``); ring attention (``ring_degree`` > 1)
splits the keys across ranks and is refused.

Nothing here imports diffusers unless the model has diffusers attention processors.
"""

from __future__ import annotations

from typing import Any

from ..plan import PlanError

#: Backends whose single-GPU path ends in torch's scaled_dot_product_attention.
SDPA_BACKENDS = frozenset({"native", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math"})
#: Backends whose context-parallel path still calls scaled_dot_product_attention on each rank.
CONTEXT_PARALLEL_SDPA_BACKENDS = frozenset({"native"})


def _processors(model: Any) -> list[Any]:
    modules = model.modules() if hasattr(model, "modules") else []
    return [p for p in (getattr(m, "processor", None) for m in modules) if hasattr(p, "_attention_backend")]


def _name(backend: Any) -> str:
    return str(getattr(backend, "value", backend))


def active_backend() -> str | None:
    """diffusers' global attention backend (None: diffusers not importable)."""
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    except ImportError:
        return None
    return _name(_AttentionBackendRegistry.get_active_backend()[0])


def _cp_config(processor: Any) -> Any:
    config = getattr(processor, "_parallel_config", None)
    return getattr(config, "context_parallel_config", None) if config is not None else None


def backends_of(model: Any) -> set[str]:
    """The diffusers attention backends ``model``'s processors dispatch to (empty: none)."""
    procs = _processors(model)
    if not procs:
        return set()
    default = active_backend() or "native"
    return {default if p._attention_backend is None else _name(p._attention_backend) for p in procs}


def context_parallel(model: Any) -> tuple[int, int] | None:
    """(Ulysses degree, this rank's index in the Ulysses group) from diffusers' context-parallel
    config on ``model``'s processors; None where none is set. Ring attention raises PlanError."""
    for p in _processors(model):
        cp = _cp_config(p)
        if cp is None:
            continue
        if (cp.ring_degree or 1) > 1:
            raise PlanError(f"context parallelism: ring attention (ring_degree {cp.ring_degree}) splits the keys "
                            "across ranks, which a block-sparse plan over the whole sequence cannot follow; use "
                            "Ulysses (ContextParallelConfig(ulysses_degree=K))")
        degree = cp.ulysses_degree or 1
        if degree > 1 and getattr(cp, "ulysses_anything", False):
            raise PlanError("context parallelism: ulysses_anything splits heads unevenly; a plan's rank slice needs "
                            "ContextParallelConfig(ulysses_anything=False)")
        rank = cp._ulysses_local_rank
        if rank is None:
            raise PlanError("context parallelism: the ContextParallelConfig is not set up (call "
                            "model.enable_parallelism(config=...) before apply)")
        return (degree, int(rank)) if degree > 1 else None
    return None


def check_model(model: Any) -> None:
    """Raise PlanError (one line) where ``model``'s diffusers attention would bypass SDPA, so a plan
    would silently not run; nothing for models without diffusers attention processors."""
    procs = _processors(model)
    if not procs:
        return
    parallel = any(_cp_config(p) is not None for p in procs)
    allowed = CONTEXT_PARALLEL_SDPA_BACKENDS if parallel else SDPA_BACKENDS
    bad = sorted(backends_of(model) - allowed)
    if bad:
        where = " under context parallelism" if parallel else ""
        raise PlanError(f"attention backend: diffusers backend {', '.join(repr(b) for b in bad)}{where} does not call "
                        f"torch's scaled_dot_product_attention, so the plan would not run; use "
                        f"{' or '.join(repr(b) for b in sorted(allowed))} (model.set_attention_backend)")
    context_parallel(model)


__all__ = ["CONTEXT_PARALLEL_SDPA_BACKENDS", "SDPA_BACKENDS", "active_backend", "backends_of", "check_model",
           "context_parallel"]
