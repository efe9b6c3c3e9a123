"""One trial's problem: knobs → units for the inner solver → an assignment → its plan and figures.

Knobs (what the outer study samples): λ (relative: × one head's dense attention time per step,
so λ = 1 trades an error² of 1 on one head-step against that head-step's dense cost) or an error
budget; τ (restrict each head to the family the classifier's rule names at that threshold,
:func:`attnsearch.profiling.classify.pick_class` over the range's mean recall, density and error,
plus dense and skip; 0 = no restriction); warm-up steps run dense; the ``dense_layers`` hardest layers
(highest least-error at ≤ 30 % density) run dense; the number of step ranges the plan may vary
over; the block size (one SearchSpace per profiled block size). Under ``residual_steps="profiled"``
(:mod:`attnsearch.search.study`) the set of exact steps is a knob too: one Problem per profiled
(block size, set), each trial solving the one it took.

Precision is a per-head choice like the candidate: a profile that measured FP8 kept blocks has an
FP8 twin of every computed candidate (:mod:`attnsearch.search.space`), priced by the FP8 kernel's
rate plus the head's share of the quantization pass, with the FP8 launch and the pass's fixed cost
paid once per layer that has an FP8 head (:data:`attnsearch.search.inner.CLASSES`).

Costs come from the cost model's additive form plus per-unit launch and fill overheads (see
:mod:`attnsearch.search.inner`). Units too small for that form (a fused launch of under eight
waves) are re-costed with the full model after the solve, and turned dense where that is cheaper.
So are units whose additive cost is under a call's host dispatch time when the cost model costs
eager execution (``CostModel.execution``): the host may bound them, and where it does, FP8 heads
whose native twins cost no more run native (lower error, no extra launches).
Final figures (``Assignment.figures``) always use the full model.

Error weights (``weights`` [S, L, H], mean 1, e.g. :meth:`attnsearch.search.sensitivity.Sensitivity.weights`):
each site's squared error counts ``weights[s, l, h]`` times, so the search spends kept blocks where
the model's output needs them; the error figure is then the weighted RMS.

Context parallelism (``ulysses`` K > 1): each of K ranks runs the contiguous H/K heads Ulysses
gives it (``runtime.parallel``), in parallel, so a unit costs its slowest rank: every solved unit is
re-costed with the full model per rank's heads and the maximum taken; the dense baseline is one
rank's H/K heads. The inner solve stays additive (it minimises the ranks' total); the outer study,
which sees these figures, steers towards plans whose ranks are balanced.

Residual reuse (``residual_steps``, the exact steps): step ranges are cut at the exact steps (one mask
per span, what reuse needs; warm-up steps end at one, ``study``), every plan is split there by
:func:`attnsearch.plan.residual_entries` (the steps after an exact one add its residual), and its
cost and density count the exact steps (``CostModel.residual_ms``, ``Plan.mean_density``). In the
error figure an exact step whose span holds two steps or more counts 0 (it is exact); the steps after
it count the profile's error under reuse (``rel_err_reuse``, the drift of the mask's residual) where
the profile measured reuse at these exact steps, else their mask's own error (a profile without
reuse: it ranks masks by what they miss, not how that drifts; ``reuse_errors`` in the settings says
which). A validated search (``validate``) measures the plans as they run.

With ``residual_heads="searched"`` whether a head reuses is a per-head choice like its candidate (by
default, "all", every inexact head reuses, and reuse's cost is added to the solved plan's): in a
span that reuses, every inexact column has a twin that runs its mask alone (``reuse: false`` in the
plan), with the mask's own error at every step of the span, its exact step included, and no extra
cost. The reusing column pays for the exact call at the span's exact step and the residual pass at
every step of the span, in the affine form of their cost over k reusing heads (exact at one head and
at all of them): a part per reusing head on the column, and a fixed part the inner solver's *reuse*
item charges once per unit whose heads reuse (:data:`attnsearch.search.inner.REUSE`). So the solver
keeps reuse where the error it saves is worth what it costs; the final figures cost the plan with
``CostModel.residual_ms``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..costmodel import HOST_PARTS, CostModel
from ..patterns import SPARSE_FAMILIES
from ..layer_plan import PRECISIONS
from ..plan import LayerPlan, Plan, PlanError, ScheduleEntry, check_residual_steps, residual_entries
from ..profiling.classify import DENSITY_CAP, pick_class
from .inner import CLASSES, DENSE, Units, solve_budget, solve_lagrangian
from .space import SearchError, SearchSpace, step_ranges

#: A fused launch with fewer items than this many waves is costed with the full model.
SMALL_WAVES = 8
#: Which inexact heads of a residual entry reuse: "all" of them, or those the solver picks ("searched").
RESIDUAL_HEADS = ("all", "searched")


@dataclass(frozen=True)
class Knobs:
    lam: float | None = 1.0          # relative λ (None: budgeted)
    budget: float | None = None      # RMS rel_err budget of the budgeted form
    tau: float = 0.0                 # 0: every candidate allowed
    warmup: int = 0
    dense_layers: int = 0
    ranges: int = 1
    block_size: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Assignment:
    """A solved trial: per range and layer, −1 (cuDNN dense layer) or a candidate per head."""

    knobs: Knobs
    ranges: list[range]
    choice: np.ndarray          # int [R, L, H]; −1 everywhere in a dense layer
    dense_unit: np.ndarray      # bool [R, L]
    cost_ms: float              # search-time latency (additive form; full model on small units)
    err_sum: float              # Σ rel_err² over every (step, layer, head)
    sites: int
    lam: float
    budget_result: Any = None
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def rel_err(self) -> float:
        """RMS rel_err over every (step, layer, head): the plan's error figure (weighted by the
        problem's error weights, where it has them)."""
        return math.sqrt(self.err_sum / self.sites)


def resolve_precisions(space: SearchSpace, cost_model: CostModel, precisions=None) -> tuple[str, ...]:
    """The precisions the search may give heads: ``precisions`` (None: every one the profile
    measured), each measured by the profile and priced by the hardware table; SearchError naming
    what is missing otherwise."""
    wanted = space.measured_precisions if precisions is None else tuple(dict.fromkeys(precisions))
    for p in wanted:
        if p not in PRECISIONS:
            raise SearchError(f"precisions: {p!r} is not one of {', '.join(PRECISIONS)}")
        if p not in space.measured_precisions:
            raise SearchError(f"precisions: the profile did not measure {p} kept blocks (profile with --fp8)")
        if not cost_model.supports(p, space.block_size):
            raise SearchError(f"precisions: the hardware table {cost_model.table.name} has no {p} kernel at "
                              f"head_dim {cost_model.head_dim}, block size {space.block_size} (calibrate on a GPU "
                              f"with FP8 tensor cores, or search --precisions native)")
    if "native" not in wanted:
        raise SearchError("precisions: must include native (dense layers and the baseline run in it)")
    return wanted


class Problem:
    """Precomputed costs of one SearchSpace under one CostModel; solves trials.

    ``precisions``: what the search may give heads (:func:`resolve_precisions`; None: every precision
    the profile measured). ``weights``: [S, L, H] finite, ≥ 0 weights of the sites' squared errors
    (None: all 1)."""

    def __init__(self, space: SearchSpace, cost_model: CostModel, *, ulysses: int = 1,
                 precisions: tuple[str, ...] | None = None, weights: np.ndarray | None = None,
                 residual_steps: tuple[int, ...] | None = None, residual_heads: str = "all") -> None:
        self.space, self.cm = space, cost_model
        if residual_heads not in RESIDUAL_HEADS:
            raise SearchError(f"residual_heads: must be one of {', '.join(RESIDUAL_HEADS)}, got {residual_heads!r}")
        searched = residual_steps is not None and residual_heads == "searched"
        self.residual_heads = residual_heads
        if residual_steps is not None:
            try:
                residual_steps = check_residual_steps(residual_steps, space.shape[0])
            except PlanError as err:
                raise SearchError(str(err)) from None
            if space.reuse_steps and space.reuse_steps != residual_steps:
                raise SearchError(f"residual_steps: the profile measured reuse at exact steps "
                                  f"{', '.join(map(str, space.reuse_steps))}, not {', '.join(map(str, residual_steps))} "
                                  "(search with its steps, or profile with --residual-steps "
                                  f"{','.join(map(str, residual_steps))})")
        self.residual_steps = residual_steps
        #: Where step ranges are cut: expert hand-overs, and the exact steps under residual reuse.
        self.boundaries = tuple(sorted({*space.boundaries, *(residual_steps or ())}))
        S, L, H, C = space.shape
        if not isinstance(ulysses, int) or isinstance(ulysses, bool) or ulysses < 1 or H % ulysses:
            raise SearchError(f"ulysses: the degree must be a positive divisor of the profile's {H} heads, "
                              f"got {ulysses!r}")
        self.ulysses = ulysses
        self.precisions = resolve_precisions(space, cost_model, precisions)
        g, B, nb = space.geometry, space.block_size, space.num_blocks
        self.N = g.num_tokens
        # Columns: the space's candidates; with the reusing heads searched, each once more as its twin
        # that runs the mask alone.
        self.col_space = np.tile(np.arange(C), 2) if searched else np.arange(C)
        self.col_reuse = np.arange(len(self.col_space)) < C
        self.col_precision = np.array(space.precisions)[self.col_space]
        cost = np.full(space.shape, np.inf)
        for p in self.precisions:
            cols = self.col_precision[:C] == p
            cost[..., cols] = self._work_ms(space.density[..., cols] * nb * nb, p)
        cost[..., space.skip_col] = cost_model.fill_head_ms(self.N)
        cost = np.where(np.isnan(space.density), np.inf, cost)
        # An error too large for float32 stays the largest float32, not an overflow to inf.
        own = np.where(np.isnan(space.rel_err), 0.0, space.rel_err) ** 2
        err2 = own.copy()
        # Per step, what reuse adds (0 outside spans that reuse), in the affine form of the exact call
        # and the pass over k reusing heads (exact at k = 1 and k = H): a fixed part, paid once per
        # unit whose heads reuse (the inner solver's reuse item), and a part per reusing head.
        self.reuse_fixed = np.zeros(S)
        self.reuse_head = np.zeros(S)
        if residual_steps is not None:  # a span from an exact step: exact there, its drift after
            if searched:
                one, every = cost_model.dense_layer_ms(self.N, 1, B), cost_model.dense_layer_ms(self.N, H, B)
                exact_head = (every - one) / (H - 1) if H > 1 else 0.0
                pass_head = cost_model.residual_pass_ms(2, self.N) - cost_model.residual_pass_ms(1, self.N)
                pass_fixed = cost_model.residual_pass_ms(1, self.N) - pass_head
            reusing = np.zeros(S, dtype=bool)
            cuts = [*self.boundaries, S]
            for a, b in zip(cuts, cuts[1:]):
                if a in residual_steps and b - a >= 2:
                    reusing[a:b] = True
                    if searched:  # (every head reusing: solve adds reuse's cost to the solved plan's)
                        self.reuse_fixed[a] += one - exact_head
                        self.reuse_head[a] += exact_head
                        self.reuse_fixed[a:b] += pass_fixed
                        self.reuse_head[a:b] += pass_head
                    err2[a] = 0.0
                    if space.reuse_err is not None:
                        err2[a + 1:b] = np.where(np.isnan(space.reuse_err[a + 1:b]), 0.0, space.reuse_err[a + 1:b]) ** 2
            if searched:
                # The twin runs the mask alone: its own error and cost, where a span reuses and the
                # column is inexact (a native dense column is exact; elsewhere both would be one choice).
                exact_col = np.array([f == "dense" and p == "native" for f, p in zip(space.families, space.precisions)])
                twin_cost = np.where(reusing[:, None, None, None] & ~exact_col, cost, np.inf)
                cost = np.concatenate([cost, twin_cost], axis=-1)
                err2 = np.concatenate([err2, own], axis=-1)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (S, L, H) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise SearchError(f"error weights: must be finite, ≥ 0 and of shape {(S, L, H)} (steps, layers, "
                                  f"heads), got shape {weights.shape}")
            err2 = err2 * weights[..., None]
        # float32: the trial loop is memory-bound over [steps, layers, heads, candidates].
        self.cost = cost.astype(np.float32)
        self.err2 = np.minimum(err2, np.finfo(np.float32).max).astype(np.float32)
        #: Inexact columns that reuse: they pay ``reuse_head`` (:meth:`aggregate` adds it per range) and
        #: need the inner solver's reuse item (``reuse_fixed``).
        self.col_pays = searched & self.col_reuse & np.array(
            [not (space.families[c] == "dense" and space.precisions[c] == "native") for c in self.col_space])
        # Columns of a precision not searched are unavailable (inf cost); classed native, they add no
        # class set for the inner solver to try.
        self.col_class = np.array([CLASSES.index("skip") if c == space.skip_col
                                   else CLASSES.index(space.precisions[c] if space.precisions[c] in self.precisions
                                                      else "native")
                                   for c in self.col_space])
        # Fixed costs per step of each class (inner.CLASSES order): the native launch; the FP8 launch
        # and its quantization pass; the zero fill.
        self.fixed = np.zeros(len(CLASSES))
        self.fixed[CLASSES.index("native")] = cost_model.launch_overhead_ms(B)
        if "fp8" in self.precisions:
            self.fixed[CLASSES.index("fp8")] = cost_model.launch_overhead_ms(B, "fp8") + \
                cost_model.quantize_overhead_ms()
        self.fixed[CLASSES.index("skip")] = cost_model.fill_overhead_ms()
        # A dense layer of the plan (a dense unit, a warm-up step) costs what the runtime runs it with
        # (the Hopper kernel, all blocks kept, where it can); the baseline the speedup is measured
        # against, and λ's scale, stay cuDNN's dense attention.
        self.dense_layer_ms = cost_model.dense_layer_ms(self.N, H, B)
        self.baseline_layer_ms = float(cost_model.dense_ms(self.N, H))
        if ulysses > 1:  # what one rank runs: H/K heads
            self.rank_dense_layer_ms = cost_model.dense_layer_ms(self.N, H // ulysses, B)
            self.rank_baseline_layer_ms = float(cost_model.dense_ms(self.N, H // ulysses))
        self.head_dense_ms = self.baseline_layer_ms / H
        self.slots = cost_model.table.sparse_params(cost_model.head_dim, B).slots(cost_model.sm_count)
        self.small = H * nb * cost_model.batch <= SMALL_WAVES * self.slots
        # The longest host dispatch of a call (0 under execution "graph"), and each column's native
        # twin (an FP8 candidate's native column; a native column itself).
        self.host_max_ms = cost_model.host_ms(B, HOST_PARTS)
        self.native_col = space.native_columns[self.col_space] + np.where(self.col_reuse, 0, C)
        self._agg: dict[tuple, tuple] = {}
        self._labels: dict[tuple, np.ndarray] = {}
        self._lam_hint: dict[int, float] = {}
        # Layers ranked hardest first: the least error any candidate reaches at ≤ 30 % density.
        sparse = np.array([f in SPARSE_FAMILIES for f in space.families])
        cheap = np.where(sparse & (space.density <= 0.3), space.rel_err, np.nan)
        least = np.nanmin(np.where(np.isnan(cheap), 1.0, cheap), axis=-1)           # [S, L, H]
        self.hardest_layers = list(np.argsort(-least.mean(axis=(0, 2)), kind="stable"))

    def _work_ms(self, tiles, precision: str):
        """Additive cost of computed heads keeping ``tiles`` blocks in ``precision`` (FP8 heads also
        carry their share of the quantization pass)."""
        sp = self.space
        work = self.cm.head_work_ms(tiles, sp.num_blocks, sp.block_size, self.N, precision)
        return work + self.cm.quantize_head_ms(self.N) if precision == "fp8" else work

    @property
    def num_steps(self) -> int:
        return self.space.shape[0]

    # -- aggregation over step ranges ------------------------------------------------------------------

    def aggregate(self, warmup: int, ranges: int) -> tuple[list[range], np.ndarray, np.ndarray, np.ndarray]:
        """(ranges, cost [R, L, H, C], err [R, L, H, C], mean recall [R, L, H, C]) — cached."""
        key = (warmup, ranges)
        if key not in self._agg:
            rs = step_ranges(self.num_steps, warmup, ranges, self.boundaries)
            cost = np.stack([self.cost[r.start:r.stop].sum(0, dtype=np.float64) for r in rs])
            err = np.stack([self.err2[r.start:r.stop].sum(0, dtype=np.float64) for r in rs]).astype(np.float32)
            recall = np.stack([np.nanmean(self.space.recall[r.start:r.stop], 0) for r in rs])
            nb, B = self.space.num_blocks, self.space.block_size
            stripes = set(self.space.stripe_cols)
            for c, sc in enumerate(self.col_space):  # a multi-step range keeps the union of its steps' stripes
                if sc not in stripes or self.col_precision[c] not in self.precisions:
                    continue                  # a precision not searched: unavailable at every range
                for i, r in enumerate(rs):
                    if len(r) > 1:
                        dens = self.space.stripe_density(int(sc), r)
                        ok = np.isfinite(cost[i, ..., c])
                        work = self._work_ms(dens * nb * nb, self.col_precision[c])
                        cost[i, ..., c] = np.where(ok, len(r) * work, np.inf)
            cost[..., self.col_pays] += self.range_sum(self.reuse_head, rs)[:, None, None, None]
            self._agg[key] = (rs, cost.astype(np.float32), err, recall)
        return self._agg[key]

    @staticmethod
    def range_sum(per_step: np.ndarray, rs: list[range]) -> np.ndarray:
        """[R]: ``per_step`` summed over each range."""
        return np.array([per_step[r.start:r.stop].sum() for r in rs])

    def allowed(self, tau: float, warmup: int, ranges: int) -> np.ndarray | None:
        """bool [R, L, H, C]: the classified family's candidates plus dense and skip (None: all).

        The class of a head in a range is the classifier's rule (τ, the classifier's density cap)
        applied to its candidates' mean recall, density and error over the range's steps."""
        if not tau:
            return None
        key = (tau, warmup, ranges)
        if key not in self._labels:
            rs, cost, _, recall = self.aggregate(warmup, ranges)
            fam = self.space.family_codes()
            dens = np.stack([np.nanmean(self.space.density[r.start:r.stop], 0) for r in rs])
            err = np.stack([np.nanmean(self.space.rel_err[r.start:r.stop], 0) for r in rs])
            pick = pick_class(fam >= 0, dens, recall, tau, DENSITY_CAP, rel_err=err,
                              usable=np.isfinite(cost[..., : len(fam)]))
            self._labels[key] = np.where(pick >= 0, fam[np.maximum(pick, 0)], -1)      # [R, L, H]
        label = self._labels[key]
        codes = self.space.family_codes()[self.col_space]
        allowed = (codes[None, None, None, :] == label[..., None]) & (label[..., None] >= 0)
        allowed[..., [self.space.families[c] in ("dense", "skip") for c in self.col_space]] = True
        return allowed

    # -- one trial -------------------------------------------------------------------------------------------

    def units(self, k: Knobs) -> tuple[list[range], Units]:
        rs, cost, err, _ = self.aggregate(k.warmup, k.ranges)
        allowed = self.allowed(k.tau, k.warmup, k.ranges)
        if allowed is not None:
            cost = np.where(allowed, cost, np.inf)
        R, L, H, C = cost.shape
        steps = np.array([len(r) for r in rs], dtype=np.float64)[:, None].repeat(L, 1)
        force = np.zeros((R, L), dtype=bool)
        force[:, self.hardest_layers[: k.dense_layers]] = True
        fixed = steps.reshape(-1, 1) * self.fixed
        reuse = None
        if self.residual_steps is not None:
            fixed = np.concatenate([fixed, self.range_sum(self.reuse_fixed, rs).repeat(L)[:, None]], 1)
            reuse = self.col_pays
        u = Units(cost.reshape(R * L, H, C), err.reshape(R * L, H, C), self.col_class, fixed,
                  (steps * self.dense_layer_ms).reshape(-1), force.reshape(-1), col_reuse=reuse)
        return rs, u

    def lam_abs(self, k: Knobs) -> float:
        return float(k.lam) * self.head_dense_ms

    def solve(self, k: Knobs) -> Assignment:
        if k.block_size != self.space.block_size:
            raise SearchError(f"block size {k.block_size} is not this space's {self.space.block_size}")
        rs, u = self.units(k)
        S, L, H, C = self.space.shape
        sites = S * L * H
        budget_result = None
        if k.budget is not None:
            budget_result = solve_budget(u, k.budget ** 2 * sites, hint=self._lam_hint.get(k.block_size))
            sol = budget_result.solution
            if sol.lam > 0:
                self._lam_hint[k.block_size] = sol.lam
        else:
            sol = solve_lagrangian(u, self.lam_abs(k))
        choice = sol.choice.reshape(len(rs), L, H)
        dense_unit = (sol.option == DENSE).reshape(len(rs), L)
        unit_cost = sol.cost.reshape(len(rs), L).copy()
        if self.residual_steps is not None:  # the layer plans' own cost: residual_ms adds reuse's below
            pays = np.where(dense_unit[..., None], False, self.col_pays[np.maximum(choice, 0)])
            unit_cost -= (pays.sum(-1) * self.range_sum(self.reuse_head, rs)[:, None]
                          + pays.any(-1) * self.range_sum(self.reuse_fixed, rs)[:, None])
        self._recost(rs, choice, dense_unit, unit_cost)
        err = np.where(dense_unit[..., None], 0.0,
                       np.take_along_axis(self.aggregate(k.warmup, k.ranges)[2],
                                          np.maximum(choice, 0)[..., None], -1)[..., 0]).sum()
        warm_ms = k.warmup * L * self.dense_layer_ms
        if self.ulysses > 1:
            unit_cost = self._slowest_rank_costs(rs, choice, dense_unit)
            warm_ms = k.warmup * L * self.rank_dense_layer_ms
        a = Assignment(k, rs, choice, dense_unit, float(unit_cost.sum() + warm_ms), float(err), sites,
                       sol.lam, budget_result)
        if self.residual_steps is not None:
            a.cost_ms += self.cm.residual_ms(self.plan(a), heads=H // self.ulysses)
        return a

    def _slowest_rank_costs(self, rs, choice, dense_unit) -> np.ndarray:
        """[R, L]: per unit, the full-model latency of its slowest rank (each rank its H/K heads)."""
        H = choice.shape[2]
        per = H // self.ulysses
        cost = np.empty(dense_unit.shape)
        for i, r in enumerate(rs):
            for layer in range(choice.shape[1]):
                if dense_unit[i, layer]:
                    cost[i, layer] = self.rank_dense_layer_ms * len(r)
                else:
                    cost[i, layer] = max(self._unit_full_ms(r, layer, choice[i, layer], range(h0, h0 + per))
                                         for h0 in range(0, H, per))
        return cost

    def _unit_full_ms(self, r: range, layer: int, choice: np.ndarray, heads: range | None = None) -> float:
        """Full-model latency of one unit over its steps (``CostModel.call_ms``: a fused launch per
        precision by list scheduling, the FP8 heads' quantization pass, the zero fill; eager: at
        least the call's host dispatch), of the layer's ``heads`` (default: all)."""
        sp = self.space
        heads = range(len(choice)) if heads is None else heads
        cols = self.col_space[choice]
        comp = [h for h in heads if cols[h] != sp.skip_col]
        counts = {}
        for p in self.precisions:
            mine = [h for h in comp if self.col_precision[choice[h]] == p]
            if mine:
                counts[p] = np.stack([sp.counts(int(cols[h]), r, layer, h) for h in mine])
        return self.cm.call_ms(counts, len(heads) - len(comp), sp.block_size, self.N) * len(r)

    def _recost(self, rs, choice, dense_unit, unit_cost) -> None:
        """Full model on the units the additive form may misprice: every unit of a small layer, and
        units whose additive cost is under the host dispatch time of a call (eager execution: the
        host may bound them). Where the host bounds a unit with FP8 heads and the same masks all in
        native precision cost no more, they run native: FP8's extra launches only add host time
        there, and native precision's error is the lower. A unit that would not beat its dense layer
        becomes dense (error 0)."""
        if not (self.small or self.host_max_ms):
            return  # device time of a layer of many waves: the additive form is the full model's
        for i, r in enumerate(rs):
            for layer in range(choice.shape[1]):
                if dense_unit[i, layer] or not (self.small or unit_cost[i, layer] < self.host_max_ms * len(r)):
                    continue
                full = self._unit_full_ms(r, layer, choice[i, layer])
                if self.host_max_ms and (self.col_precision[choice[i, layer]] == "fp8").any():
                    native = self.native_col[choice[i, layer]]
                    alt = self._unit_full_ms(r, layer, native)
                    if alt <= full:
                        choice[i, layer], full = native, alt
                dense = self.dense_layer_ms * len(r)
                if full >= dense:
                    dense_unit[i, layer], choice[i, layer], unit_cost[i, layer] = True, -1, dense
                else:
                    unit_cost[i, layer] = full

    # -- the plan and its figures -------------------------------------------------------------------------

    def figures(self, a: Assignment) -> dict[str, float]:
        """Predicted latency of the whole plan vs all-dense cuDNN, and the error figure.

        Small units were costed with the full model in :meth:`solve`; on units of ≥ SMALL_WAVES waves
        the list schedule's makespan equals the throughput form to well under 1 % (the tail is one
        short item), so the assignment's cost is the full model's to that precision."""
        dense = self.dense_baseline_ms
        a.figures = {"attention_ms": a.cost_ms, "dense_attention_ms": dense, "speedup": dense / a.cost_ms,
                     "rel_err": a.rel_err}
        return a.figures

    @property
    def dense_baseline_ms(self) -> float:
        """All-dense cuDNN attention of the searched calls (one rank's heads under Ulysses)."""
        S, L = self.space.shape[:2]
        return S * L * (self.rank_baseline_layer_ms if self.ulysses > 1 else self.baseline_layer_ms)

    def plan(self, a: Assignment, **meta: Any) -> Plan:
        """The Plan of an assignment: warm-up steps dense, then one schedule entry per step range
        (split for residual reuse when the problem reuses residuals)."""
        sp = self.space
        S, L, H, _ = sp.shape
        entries = []
        if a.knobs.warmup:
            entries.append(ScheduleEntry(0, a.knobs.warmup, None))
        dense_lp = LayerPlan.dense(sp.geometry, H, sp.block_size)
        for i, r in enumerate(a.ranges):
            if a.dense_unit[i].all():
                entries.append(ScheduleEntry(r.start, r.stop, None))
                continue
            layers = []
            for layer in range(L):
                if a.dense_unit[i, layer]:
                    layers.append(dense_lp)
                    continue
                cols = self.col_space[a.choice[i, layer]]
                heads = [(sp.families[c], sp.candidate_params(int(c), r, layer, h)) for h, c in enumerate(cols)]
                layers.append(LayerPlan.from_heads(heads, sp.geometry, sp.block_size,
                                                   precisions=[sp.precisions[c] for c in cols],
                                                   reuse=list(self.col_reuse[a.choice[i, layer]])))
            entries.append(ScheduleEntry(r.start, r.stop, tuple(layers)))
        schedule = tuple(_merge(entries, self.boundaries))
        if self.residual_steps is not None:
            schedule = residual_entries(schedule, self.residual_steps)
        return Plan(sp.geometry, sp.block_size, S, L, H, schedule, **meta)


def _merge(entries: list[ScheduleEntry], boundaries: tuple[int, ...] = ()) -> list[ScheduleEntry]:
    """Adjacent entries with the same content become one (e.g. dense warm-up + a dense range);
    sparse entries stay apart at an expert hand-over step (their layers are different experts')."""
    out: list[ScheduleEntry] = []
    for e in entries:
        if (out and out[-1].layers == e.layers and out[-1].stop == e.start
                and (e.layers is None or e.start not in boundaries)):
            out[-1] = ScheduleEntry(out[-1].start, e.stop, e.layers)
        else:
            out.append(e)
    return out


__all__ = ["Assignment", "Knobs", "Problem", "RESIDUAL_HEADS", "SMALL_WAVES", "resolve_precisions"]
