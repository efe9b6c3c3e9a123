"""The runtime: run attention by a plan.

    out = sparse_attention(q, k, v, plan.layer_plan(step, layer))   # one call
    with apply(model, plan): model(...)                              # every SDPA call of a model

Modules: ``schedule`` (work order and list scheduling), ``block_tables`` (cached per-head kept-block
lists), ``device_caps`` (SM count, TMA addressability), ``backends`` (what each backend supports, and
which runs a call), ``hopper/`` (warp-specialised block-sparse flash attention for Hopper, in
Gluon), ``triton/`` (block-sparse flash attention for any CUDA GPU and the CPU interpreter),
``torch_backend`` (reference implementation), ``dense`` (all-dense layers), ``apply`` (the
model-wide context manager), ``ops`` (the runtime as ``torch.library`` operators, for
``torch.compile`` and CUDA graphs), ``parallel`` (context parallelism: a rank's slice of a plan),
``diffusers_dispatch`` (which diffusers attention backends a plan can run under).
"""

from __future__ import annotations

import math

import torch

from ..plan import LayerPlan, PlanError
from .block_tables import BlockTables, cache_info, get_block_tables
from .backends import BACKENDS, BackendName, select_backend


def _check_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan, enable_gqa: bool,
                out: torch.Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a [batch, heads, N, head_dim] tensor, got {shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"k, v: dtypes {k.dtype}, {v.dtype} differ from q's {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"k, v: devices {k.device}, {v.device} differ from q's {q.device}")
    batch, num_heads, n, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)}")
    if k.shape[0] != batch or k.shape[3] != d:
        raise ValueError(f"k: batch/head_dim of {tuple(k.shape)} do not match q {tuple(q.shape)}")
    if k.shape[2] != n:
        raise ValueError(f"k: {k.shape[2]} keys for {n} queries; a block-sparse plan covers self-attention "
                         "(the same N for queries and keys)")
    if k.shape[1] != num_heads:
        if not enable_gqa or num_heads % k.shape[1]:
            raise ValueError(f"k: {k.shape[1]} heads for {num_heads} query heads "
                             "(needs enable_gqa=True and a divisor of the query heads)")
    layer_plan.check_inputs(n, num_heads)
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.device != q.device):
        raise ValueError(f"out: expected {tuple(q.shape)} {q.dtype} on {q.device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan, *,
                     backend: BackendName = "auto", scale: float | None = None, enable_gqa: bool = False,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Block-sparse attention of one call, following ``layer_plan``.

    Semantics (docs/design.md): per head, softmax over the keys of its kept blocks only; skip heads
    output zero. A head group of precision "fp8" computes its kept blocks on e4m3 operands
    (``runtime/quantize.py``: q, k, v of its heads quantized inside the call, scales per query
    block, key block and V channel; both products in FP8, softmax in fp32, output in q's dtype);
    ``layer_plan.with_precision("fp8")`` runs every head so.

    Args:
        q: [batch, heads, N, head_dim]; any strides (e.g. a [batch, N, heads, head_dim] tensor's
            ``.transpose(1, 2)``): nothing is copied.
        k, v: [batch, kv_heads, N, head_dim]; kv_heads = heads, or a divisor with ``enable_gqa``.
        layer_plan: from ``plan.layer_plan(step, layer)``; its geometry must give N and its
            num_heads the query heads.
        backend: "auto" (per precision of the plan's heads, the first of hopper, triton, torch that
            supports the call: see ``backends``), or one of them by name (an error with the reasons
            if it cannot run every head).
        scale: softmax scale; default 1/sqrt(head_dim).
        enable_gqa: as in ``scaled_dot_product_attention``.
        out: optional preallocated [batch, heads, N, head_dim] output of q's dtype.
    Returns:
        [batch, heads, N, head_dim] in q's dtype. Allocated (``out`` None) in q's memory layout
        when q is dense, as SDPA's fused backends do: for the [batch, N, heads, head_dim] view
        diffusers passes, its transpose back after attention is then free instead of a copy.

    Under ``torch.compile`` a call without ``out`` is one ``torch.ops.attnsearch.sparse_attention``
    node (``ops``): no graph break, the layer plan a constant of the graph.
    """
    if torch.compiler.is_compiling() and out is None:
        from .ops import layer_plan_id, sparse_attention_op

        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        return sparse_attention_op(q, k, v, layer_plan_id(layer_plan), backend, scale, bool(enable_gqa))
    return run_sparse_attention(q, k, v, layer_plan, backend=backend, scale=scale, enable_gqa=enable_gqa, out=out)


def run_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan, *,
                         backend: BackendName = "auto", scale: float | None = None, enable_gqa: bool = False,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sparse_attention` run eagerly (what its operator runs inside the graph)."""
    if not isinstance(layer_plan, LayerPlan):
        raise TypeError(f"layer_plan: expected a LayerPlan, got {type(layer_plan).__name__}")
    _check_call(q, k, v, layer_plan, enable_gqa, out)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    # Every precision's backend is chosen before anything runs: a call one of them cannot run fails whole.
    precisions = layer_plan.precisions or ("native",)   # no computed head: the zero fill only
    chosen = [(p, select_backend(q, k, v, layer_plan, backend, p)) for p in precisions]
    if out is None:
        out = torch.empty_like(q)  # preserve_format: q's strides if q is dense, else contiguous
    for precision, b in chosen:
        out = b.forward(q, k, v, layer_plan, scale, out, precision)
    return out


from .apply import apply  # noqa: E402  (needs sparse_attention above)

__all__ = ["BACKENDS", "BlockTables", "LayerPlan", "PlanError", "apply", "cache_info", "get_block_tables",
           "run_sparse_attention", "select_backend", "sparse_attention"]
