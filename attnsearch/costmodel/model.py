"""The cost model: predicted latency (ms) of layers and plans from a hardware table.

Why this form
-------------
The runtime runs a sparse layer as ONE fused launch over every computed head (block_tables'
``fusion="layer"``): a work list of items (batch, head, query block) in a fixed order (heads by
total work, heaviest first, query blocks in order inside a head), each item walking its kept key
blocks. Dense layers run cuDNN SDPA; skip heads are a zero fill. So a layer costs at most three
things, each with a small physical model:

* **sparse launch** ``t = launch + tile_ns · makespan`` where ``makespan`` (in tiles) is greedy
  list scheduling of the work list, in the runtime's order, on ``SMs × slots_per_sm`` resident
  programs, item i lasting ``item_tiles + kept_i`` tiles. This single term is the roofline
  throughput (Σ tiles / slots at the saturated per-program rate: one B×B tile is 4·B²·D flops
  against 2·B·D·2 bytes of K/V, compute-bound, so one rate per (head_dim, block size)), the wave
  quantisation (few items: one wave costs its longest item) and the load imbalance (a dense head's
  long rows, text rows, the tail of the last head) — all from the actual row lengths, not a proxy.
  Four constants per kernel variant, fitted on measured layers (``costmodel.calibrate``).
* **dense** (cuDNN): the same form on 128-row tiles where every item has every key tile (list
  scheduling of equal items is ``ceil(items / slots)`` waves).
* **zero fill** of skip heads: ``launch + bytes / bandwidth``.

Latency is device time (CUDA-graph replay in calibration); for eager execution
(``execution="eager"``) at least the host's dispatch time of the call too: an eager call whose
device work is shorter than what the CPU spends launching it (Python, the block-table lookup, a
launch per precision, FP8's quantization launches, the skip heads' fill) leaves the GPU waiting,
so back-to-back calls take ``max(device, host)`` each (``params.host``, fitted per kernel as a
base plus a cost per part the call has). ``execution="graph"`` (CUDA graphs, ``torch.compile``
with ``mode="reduce-overhead"``) drops the host term. At video-DiT sizes device time dominates and
the two agree; at a few thousand tokens and a few heads per call the host bounds, and an FP8
call's extra launches can make it slower than the native one.

For the search the sparse launch is made additive over heads (:meth:`CostModel.head_work_ms`):
each head contributes its share of the throughput, Σ (kept + item_tiles) · tile_ns / slots, and
the launch is a per-layer overhead. That drops the scheduling tail (under a few percent once a
layer has several waves of items: any video-DiT size) and the one-wave regime of tiny layers; the
search therefore re-costs chosen layers with the full model (:meth:`CostModel.layer_ms`) where
they are small, and reports the full model's figures for the final plan.

**FP8 layers.** Heads whose products run in FP8 (e4m3, a head group's ``precision="fp8"``: the
kernel "auto" runs them on) cost a launch of their own, the same form with the FP8 variant's constants
(``params.sparse`` key ``d{D}_b{B}_fp8``), plus the quantization pass over their q, k and v,
``launch + bytes / bandwidth`` (``params.quantize``; the bytes it moves, K and V counted per query
head: :func:`quantize_bytes`). Native and FP8 heads of one layer run as two launches, each paying its
launch cost; :meth:`CostModel.layer_ms` costs a layer plan's head groups so. In the additive form an
FP8 head adds its kernel share (``head_work_ms(..., "fp8")``) and its quantization share
(:meth:`CostModel.quantize_head_ms`); a layer with FP8 heads adds the FP8 launch and the pass's
fixed part once. Every FP8 figure raises HardwareError on a table calibrated without FP8
(:meth:`CostModel.supports` says which precisions a table costs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..runtime.backends import HopperBackend
from ..layer_plan import PRECISIONS
from ..runtime.schedule import item_lengths
from .table import DENSE_TILE, HardwareError, HardwareTable, load_hardware, variant_key

#: How calls are run: "eager" (each call dispatched by the host: latency max(device, host)) or
#: "graph" (CUDA graphs / compiled with reduce-overhead: device time alone).
EXECUTIONS = ("eager", "graph")


def quantize_bytes(batch, heads, num_tokens, head_dim: int, dtype_bytes: int = 2) -> np.ndarray:
    """Bytes the FP8 quantization pass (``runtime/quantize.py``'s kernels) moves for ``heads``
    query heads, each with its own K/V head: it reads q and k once and v twice (its channel maxima,
    then its quantization: a channel's scale needs the max over every token) in the input dtype, and
    writes e4m3 q, k and v (v's channel rows padded to 16 tokens; to 32 in the "wgmma" key order,
    a difference the fit absorbs). The scales (4 bytes a block of q and of k, a channel of v) are
    left out: under 0.1% at any head_dim ≥ 64. Under GQA the kernels move a K/V head shared by
    listed heads once, so this is an upper bound there."""
    n = np.asarray(num_tokens, dtype=np.float64)
    per_head = n * head_dim * (4 * dtype_bytes + 2) + np.ceil(n / 16) * 16 * head_dim
    return batch * np.asarray(heads, dtype=np.float64) * per_head


def resolve_execution(table: HardwareTable, execution: str | None) -> str:
    """``execution`` (one of EXECUTIONS) if ``table`` can cost it, HardwareError naming why not;
    None: "graph" (device time: what a plan's kernels cost wherever the host keeps ahead)."""
    if execution is None:
        return "graph"
    if execution not in EXECUTIONS:
        raise HardwareError(f"execution: must be one of {', '.join(EXECUTIONS)}, got {execution!r}")
    if execution == "eager" and table.host is None:
        raise HardwareError(f"{table.source or table.device}: no host dispatch costs measured, so eager calls cannot "
                            "be costed; re-run `attnsearch calibrate`, or cost device time alone with execution "
                            "\"graph\"")
    return execution


@dataclass(frozen=True, eq=False)
class LayerFeatures:
    """What the latency of one layer plan depends on (per batch element)."""

    num_tokens: int
    num_heads: int
    block_size: int
    num_blocks: int
    all_dense: bool
    skip_heads: int
    counts: np.ndarray = field(repr=False)   # int [computed heads, nb]
    #: The precision of each computed head (a row of ``counts``); empty: every one native.
    precisions: tuple[str, ...] = ()

    @property
    def computed_heads(self) -> int:
        return int(self.counts.shape[0])

    def counts_of(self, precision: str) -> np.ndarray:
        """The rows of ``counts`` of the heads that run in ``precision``."""
        if not self.precisions:
            return self.counts if precision == "native" else self.counts[:0]
        return self.counts[np.array([p == precision for p in self.precisions], dtype=bool)]

    @property
    def items(self) -> int:
        return self.computed_heads * self.num_blocks

    @property
    def tiles(self) -> int:
        return int(self.counts.sum())

    @property
    def max_row(self) -> int:
        return int(self.counts.max()) if self.counts.size else 0


def layer_features(layer_plan) -> LayerFeatures:
    """Exact features of a LayerPlan from its block masks."""
    masks = layer_plan.block_masks()
    computed = list(layer_plan.computed_heads)
    counts = masks[computed].sum(-1).numpy().astype(np.int64) if computed else np.zeros((0, layer_plan.num_blocks),
                                                                                        dtype=np.int64)
    return LayerFeatures(
        num_tokens=layer_plan.geometry.num_tokens, num_heads=layer_plan.num_heads,
        block_size=layer_plan.block_size, num_blocks=layer_plan.num_blocks,
        all_dense=layer_plan.is_dense,
        skip_heads=len(layer_plan.skip_heads), counts=counts,
        precisions=tuple(layer_plan.head_precisions[h] for h in computed))


# --- the cost model ---------------------------------------------------------------------------------


class CostModel:
    """Latency predictions (ms) for attention calls of one head_dim, batch and dtype width."""

    def __init__(self, table: HardwareTable | str | os.PathLike | None = None, *, head_dim: int = 128,
                 batch: int = 1, dtype_bytes: int = 2, execution: str | None = None) -> None:
        """``execution``: one of EXECUTIONS; None: "graph" (device time alone)."""
        self.table = load_hardware(table)
        self.execution = resolve_execution(self.table, execution)
        if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 1:
            raise HardwareError(f"head_dim must be a positive integer, got {head_dim!r}")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise HardwareError(f"batch must be a positive integer, got {batch!r}")
        self.head_dim, self.batch, self.dtype_bytes = head_dim, batch, dtype_bytes
        self.table.dense_params(head_dim)  # fail early on an uncalibrated head_dim
        self._layer_cache: dict[Any, float] = {}

    def describe(self) -> dict[str, Any]:
        t = self.table
        return {"device": t.device, "calibration": t.name, "source": t.source, "note": t.note,
                "measured": t.measured, "head_dim": self.head_dim, "batch": self.batch,
                "precisions": list(t.precisions), "execution": self.execution}

    def supports(self, precision: str, block_size: int) -> bool:
        """Whether the table costs sparse launches of this head_dim and block size in ``precision``:
        native where that variant is calibrated; fp8 where its FP8 variant and the quantization
        pass are."""
        calibrated = variant_key(self.head_dim, block_size, precision) in self.table.sparse
        return calibrated and (precision == "native" or self.table.quantize is not None)

    @property
    def sm_count(self) -> int:
        return self.table.sm_count

    # -- the three kernels ----------------------------------------------------------------------------

    def dense_ms(self, num_tokens, num_heads) -> np.ndarray:
        """cuDNN SDPA over [batch, heads, N, head_dim] (vectorised over N and heads); eager: at least
        the call's host dispatch time."""
        nq = np.ceil(np.asarray(num_tokens, dtype=np.float64) / DENSE_TILE)
        items = self.batch * np.asarray(num_heads, dtype=np.float64) * nq
        device = self.table.dense_params(self.head_dim).uniform_ms(items, nq, self.sm_count, num_tokens)
        if self.execution == "graph":
            return device
        return np.maximum(device, self.table.host.dense_us(self.head_dim, self.table.source) * 1e-3)

    def host_ms(self, block_size: int, parts) -> float:
        """Host dispatch time of one eager sparse call with ``parts`` (``table.HOST_PARTS``: the
        precisions of its launches, "fill" for skip heads); 0 under execution "graph"."""
        if self.execution == "graph":
            return 0.0
        return self.table.host.sparse_us(self.head_dim, block_size, parts, self.table.source) * 1e-3

    def dense_on_kernel(self, block_size: int) -> bool:
        """Whether the runtime runs an all-dense layer on the block-sparse kernel with every key block
        kept (``runtime.dense``): where ``HopperBackend`` supports a call of the table's device and
        this head_dim, block size and dtype width, and that kernel is calibrated; elsewhere cuDNN."""
        capability = tuple(self.table.software.get("capability") or (0, 0))
        dtype = torch.bfloat16 if self.dtype_bytes == 2 else torch.float32
        reasons = HopperBackend.not_supported_reasons(device="cuda", capability=capability, dtype=dtype,
                                                      head_dim=self.head_dim, block_size=block_size)
        return not reasons and variant_key(self.head_dim, block_size) in self.table.sparse

    def dense_layer_ms(self, num_tokens: int, num_heads: int, block_size: int) -> float:
        """What an all-dense layer of a plan costs at run time: the sparse kernel with every key
        block kept where :meth:`dense_on_kernel`, else cuDNN (:meth:`dense_ms`, also the plans'
        dense baseline)."""
        if not self.dense_on_kernel(block_size):
            return float(self.dense_ms(num_tokens, num_heads))
        nb = -(-int(num_tokens) // block_size)
        return self.call_ms({"native": np.full((int(num_heads), nb), nb)}, 0, block_size, num_tokens)

    def sparse_ms(self, counts: np.ndarray, block_size: int, num_tokens: int, precision: str = "native") -> float:
        """One fused sparse launch over heads with kept-block counts [heads, nb] (full model) on a
        sequence of ``num_tokens``, its products in ``precision`` (fp8: the kernel alone,
        :meth:`quantize_ms` is apart)."""
        p = self.table.sparse_params(self.head_dim, block_size, precision)
        return p.ms(item_lengths(counts, self.table.order, self.batch), self.sm_count, num_tokens)

    def fill_ms(self, skip_heads, num_tokens) -> np.ndarray:
        nbytes = self.batch * np.asarray(skip_heads, dtype=np.float64) * num_tokens * self.head_dim * self.dtype_bytes
        return self.table.fill.ms(nbytes)

    def quantize_ms(self, heads, num_tokens) -> np.ndarray:
        """The FP8 quantization pass over the q, k and v of ``heads`` query heads (vectorised):
        launch + :func:`quantize_bytes` (the bytes it moves) / bandwidth; 0 for no heads."""
        params = self.table.quantize_params()
        return params.ms(quantize_bytes(self.batch, heads, num_tokens, self.head_dim, self.dtype_bytes))

    # -- layers and plans -------------------------------------------------------------------------------

    def call_ms(self, counts_by_precision: dict[str, np.ndarray], skip_heads: int, block_size: int,
                num_tokens: int) -> float:
        """One sparse call (full model): a launch per precision over its heads' kept-block counts
        [heads, nb], the FP8 heads' quantization pass, the skip heads' zero fill; eager: at least
        the call's host dispatch time (:meth:`host_ms`)."""
        t, parts = 0.0, []
        for precision in PRECISIONS:  # one launch per precision; FP8 heads also pay the quantization pass
            counts = counts_by_precision.get(precision)
            if counts is not None and counts.shape[0]:
                parts.append(precision)
                t += self.sparse_ms(counts, block_size, num_tokens, precision)
                if precision == "fp8":
                    t += float(self.quantize_ms(counts.shape[0], num_tokens))
        if skip_heads:
            parts.append("fill")
            t += float(self.fill_ms(skip_heads, num_tokens))
        return max(t, self.host_ms(block_size, parts))

    def features_ms(self, f: LayerFeatures) -> float:
        if f.all_dense:
            return self.dense_layer_ms(f.num_tokens, f.num_heads, f.block_size)
        return self.call_ms({p: f.counts_of(p) for p in PRECISIONS}, f.skip_heads, f.block_size, f.num_tokens)

    def layer_ms(self, layer_plan) -> float:
        """Predicted latency of one attention call run by ``layer_plan`` (full model: a launch per
        precision of its computed heads, the FP8 heads' quantization pass, the skip heads' fill; eager: at
        least its host dispatch time)."""
        key = layer_plan.key
        if key not in self._layer_cache:
            self._layer_cache[key] = self.features_ms(layer_features(layer_plan))
        return self._layer_cache[key]

    def residual_pass_ms(self, num_heads: int, num_tokens: int) -> float:
        """One elementwise pass over the output of ``num_heads`` heads that reuse a residual (exact −
        planned at an entry's exact step, planned + residual at the others): it reads two outputs and
        writes one, priced at the zero fill's measured bandwidth (the same kind of memory-bound pass)."""
        nbytes = 3 * self.batch * num_heads * num_tokens * self.head_dim * self.dtype_bytes
        return float(self.table.fill.ms(nbytes))

    def plan_ms(self, plan) -> float:
        """Σ over steps and layers of :meth:`layer_ms` (each distinct layer plan costed once), plus
        what reusing residuals costs (:meth:`residual_ms`)."""
        total = 0.0
        n = plan.geometry.num_tokens
        for e in plan.schedule:
            steps = e.stop - e.start
            if e.layers is None:
                total += steps * plan.num_layers * self.dense_layer_ms(n, plan.num_heads, plan.block_size)
            else:
                total += steps * sum(self.layer_ms(lp) for lp in e.layers)
        return total + self.residual_ms(plan)

    def residual_ms(self, plan, heads: int | None = None) -> float:
        """What ``plan``'s residual entries add to its layer plans' time: each layer's reusing heads
        (``LayerPlan.reuse_heads``) pay an exact call at the entry's exact step (what an all-dense
        layer of that many heads costs, :meth:`dense_layer_ms`) and :meth:`residual_pass_ms` at every
        step of the entry. ``heads``: the heads one call carries (one rank's under context
        parallelism: its share of the reusing heads, rounded up; default the plan's)."""
        heads = plan.num_heads if heads is None else heads
        n = plan.geometry.num_tokens
        total = 0.0
        for e in plan.schedule:
            if not e.residual:
                continue
            for lp in e.layers:
                k = -(-len(lp.reuse_heads) * heads // plan.num_heads)
                if k:
                    total += (self.dense_layer_ms(n, k, plan.block_size)
                              + (e.stop - e.start) * self.residual_pass_ms(k, n))
        return total

    def dense_plan_ms(self, plan) -> float:
        """The dense baseline of ``plan``'s shape: every call cuDNN SDPA."""
        calls = plan.num_steps * plan.num_layers
        return calls * float(self.dense_ms(plan.geometry.num_tokens, plan.num_heads))

    # -- the additive form the search solves ----------------------------------------------------------

    def head_work_ms(self, tiles, num_blocks: int, block_size: int, num_tokens: int,
                     precision: str = "native") -> np.ndarray:
        """A computed head's additive share of a fused launch over a sequence of ``num_tokens``: its
        tiles and items at full throughput of the ``precision`` kernel (fp8: the kernel alone,
        :meth:`quantize_head_ms` is apart)."""
        p = self.table.sparse_params(self.head_dim, block_size, precision)
        return p.throughput_ms(self.batch * np.asarray(tiles, dtype=np.float64), self.batch * num_blocks,
                               self.sm_count, num_tokens)

    def launch_overhead_ms(self, block_size: int, precision: str = "native") -> float:
        """The fixed cost of one sparse launch of the ``precision`` kernel."""
        return self.table.sparse_params(self.head_dim, block_size, precision).launch_us * 1e-3

    def fill_head_ms(self, num_tokens: int) -> float:
        """Bandwidth share of one skip head's zero fill (the fill's launch is a per-layer overhead)."""
        return self.batch * num_tokens * self.head_dim * self.dtype_bytes / (self.table.fill.gbps * 1e6)

    def fill_overhead_ms(self) -> float:
        return self.table.fill.launch_us * 1e-3

    def quantize_head_ms(self, num_tokens: int) -> float:
        """Bandwidth share of one FP8 head's quantization (the pass's fixed part is
        :meth:`quantize_overhead_ms`, once per layer with FP8 heads)."""
        gbps = self.table.quantize_params().gbps
        return float(quantize_bytes(self.batch, 1, num_tokens, self.head_dim, self.dtype_bytes)) / (gbps * 1e6)

    def quantize_overhead_ms(self) -> float:
        """The fixed part of the FP8 quantization pass (its launches)."""
        return self.table.quantize_params().launch_us * 1e-3


__all__ = ["EXECUTIONS", "CostModel", "LayerFeatures", "layer_features", "quantize_bytes", "resolve_execution"]
