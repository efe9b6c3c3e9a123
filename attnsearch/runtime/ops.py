"""The runtime as PyTorch operators, so ``torch.compile`` traces a model under a plan without graph
breaks and a forward can be captured in a CUDA graph.

    torch.ops.attnsearch.sparse_attention(q, k, v, plan_id, backend, scale, enable_gqa)
    torch.ops.attnsearch.planned_attention(q, k, v, token, attn_mask, dropout_p, is_causal, scale, enable_gqa)

Both are ``torch.library.custom_op`` operators with a fake (meta) implementation: the compiler sees
one opaque node per attention call whose output has q's shape and memory layout (``empty_like(q)``,
as SDPA's fused kernels and :func:`attnsearch.sparse_attention` allocate it), and the real work runs
eagerly inside the node: block tables, backend choice, the kernels.

A layer plan is not a tensor, so it crosses into the graph as *static* data: a small integer id
from :func:`layer_plan_id`, a registry keyed by the LayerPlan's content (LayerPlan hashes by
:attr:`~attnsearch.layer_plan.LayerPlan.key`), so equal plans share one id and the compiled graph holds a
constant. ``planned_attention`` is what :func:`attnsearch.apply` emits under ``torch.compile``: its
static ``token`` names the model the apply context runs (:func:`model_token`); which step and layer a
call is, and so which layer plan runs, is decided when the node runs (``apply`` numbers calls at
run time), so one compiled graph serves every step of the plan.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any, Callable

import torch

from ..plan import LayerPlan, PlanError

_LOCK = threading.Lock()
_PLAN_IDS: dict[LayerPlan, int] = {}
_PLANS: list[LayerPlan] = []


def _register(layer_plan: LayerPlan) -> int:
    with _LOCK:
        pid = _PLAN_IDS.get(layer_plan)
        if pid is None:
            pid = _PLAN_IDS[layer_plan] = len(_PLANS)
            _PLANS.append(layer_plan)
        return pid


def _assume_constant_result(fn: Callable) -> Callable:
    """``torch._dynamo.assume_constant_result``: marks ``fn`` so that dynamo calls it while tracing
    and bakes its result into the graph. Set here as that decorator sets it, without importing
    torch._dynamo (about 1.5 s on a CPU) into every process that loads the runtime and never compiles:
    search workers, the command line. tests/runtime/test_compile.py checks the mark is the decorator's."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def layer_plan_id(layer_plan: LayerPlan) -> int:
    """The static id of ``layer_plan`` for :data:`sparse_attention_op` (equal plans: one id).

    Under ``torch.compile`` the id is computed while tracing and baked into the graph as a constant."""
    if not isinstance(layer_plan, LayerPlan):
        raise TypeError(f"layer_plan: expected a LayerPlan, got {type(layer_plan).__name__}")
    return _register(layer_plan)


def registered_layer_plan(plan_id: int) -> LayerPlan:
    """The LayerPlan of an id from :func:`layer_plan_id`."""
    if not 0 <= plan_id < len(_PLANS):
        raise PlanError(f"plan_id: {plan_id} names no registered layer plan ({len(_PLANS)} registered)")
    return _PLANS[plan_id]


def _output_like(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """An uninitialised attention output: q's shape with v's head_dim, in q's layout where it can be."""
    if v.shape[-1] == q.shape[-1]:
        return torch.empty_like(q)  # preserve_format: q's strides if q is dense, else contiguous
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _in_layout_of(q: torch.Tensor, v: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """``result`` in :func:`_output_like`'s layout (what the fake promised the compiler), copied only
    where it differs."""
    promised = _output_like(q.to("meta"), v.to("meta"))
    if result.stride() == promised.stride() or result.numel() == 0:
        return result
    return _output_like(q, v).copy_(result)


# --- sparse_attention: one call, one layer plan -----------------------------------------------------


@torch.library.custom_op("attnsearch::sparse_attention", mutates_args=())
def sparse_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan_id: int, backend: str,
                        scale: float, enable_gqa: bool) -> torch.Tensor:
    """:func:`attnsearch.sparse_attention` as an operator; ``plan_id`` from :func:`layer_plan_id`."""
    from . import run_sparse_attention

    out = torch.empty_like(q)
    return run_sparse_attention(q, k, v, registered_layer_plan(plan_id), backend=backend, scale=scale,
                                enable_gqa=enable_gqa, out=out)


@sparse_attention_op.register_fake
def _sparse_attention_fake(q, k, v, plan_id, backend, scale, enable_gqa):
    return torch.empty_like(q)


# --- planned_attention: an SDPA call of a model under apply ----------------------------------------

_TOKENS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_NEXT_TOKEN = itertools.count()
#: token → the function running calls of that model's active apply context.
_RUNNERS: dict[int, Callable[..., torch.Tensor]] = {}


def model_token(model: Any) -> int:
    """A small integer naming ``model`` for as long as it lives (stable across apply contexts, so a
    compiled graph is reused by every ``with apply(model, plan)``)."""
    with _LOCK:
        try:
            token = _TOKENS.get(model)
        except TypeError:  # not weak-referenceable: one token per context
            return next(_NEXT_TOKEN)
        if token is None:
            token = _TOKENS[model] = next(_NEXT_TOKEN)
        return token


def activate(token: int, runner: Callable[..., torch.Tensor]) -> None:
    """Route ``planned_attention`` calls of ``token`` to ``runner(q, k, v, sdpa_kwargs)`` until
    :func:`deactivate`."""
    with _LOCK:
        if token in _RUNNERS:
            raise RuntimeError("attnsearch.apply: this model is already inside an apply context; "
                               "nested contexts on one model are not supported")
        _RUNNERS[token] = runner


def deactivate(token: int) -> None:
    with _LOCK:
        _RUNNERS.pop(token, None)


@torch.library.custom_op("attnsearch::planned_attention", mutates_args=())
def planned_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, token: int,
                      attn_mask: torch.Tensor | None, dropout_p: float, is_causal: bool, scale: float | None,
                      enable_gqa: bool) -> torch.Tensor:
    """One SDPA call of the model named by ``token``, run by its active apply context."""
    runner = _RUNNERS.get(token)
    if runner is None:
        raise PlanError("attnsearch::planned_attention: the model's apply context has exited; a graph compiled "
                        "under apply runs only inside it")
    kwargs = {"attn_mask": attn_mask, "dropout_p": dropout_p, "is_causal": is_causal, "scale": scale,
              "enable_gqa": enable_gqa}
    with torch._C.DisableTorchFunction():  # SDPA calls made here are the plan's, not the model's
        return _in_layout_of(q, v, runner(q, k, v, kwargs))


@planned_attention.register_fake
def _planned_attention_fake(q, k, v, token, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    return _output_like(q, v)


__all__ = ["activate", "deactivate", "layer_plan_id", "model_token", "planned_attention", "registered_layer_plan",
           "sparse_attention_op"]
