"""The search space of one profile: every (step, layer, head) × candidate as dense arrays.

A profile is long format (one row per site and candidate). The search needs, per trial, costs and
errors summed over step ranges, so the table is pivoted once into arrays [steps, layers, heads, C]
(C = the profile's step-free candidate names plus ``dense`` and ``skip``) and everything after that
is array arithmetic. vertical_stripe candidates are named by their count of key blocks; which
blocks they keep moves between steps, so a range of several steps keeps the union of its steps'
blocks, and its density is recounted exactly from the union (:meth:`SearchSpace.stripe_density`).

A profile that measured FP8 kept blocks (its ``rel_err_fp8`` column) gives every computed
candidate an FP8 twin column: the same pattern, parameters, density and recall, the FP8 error as
its error, and ``precisions[c]`` = "fp8" (the search then chooses precision per head like any other
candidate; the cost model prices the twin with the FP8 kernel).

A profile that measured residual reuse (its ``rel_err_reuse`` column, at exact steps
``reuse_steps``) gives every candidate its error under that reuse too (``reuse_err``), which a search
reusing residuals at those steps takes instead of ``rel_err`` (:mod:`attnsearch.search.problem`).

Per-head error is rel_err² (summed over a range's steps): the plan's error is the root mean square
of rel_err over every (step, layer, head) — the relative Frobenius error of all attention outputs
stacked, when heads carry equal output norm; being a sum, it keeps the inner problem a knapsack;
being squared, one skipped head (rel_err 1) weighs as much as a hundred heads at 10 %. For a
range's stripe union the per-step rel_err of the step's own top-k is used (the union keeps a
superset of its blocks, so its error is no larger in practice).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np

from ..experts import boundaries, experts_of
from ..geometry import Geometry
from ..patterns import SPARSE_FAMILIES, block_mask
from ..profiling.candidates import stripe_base, stripe_gain
from ..profiling.profile_io import FP8_COLUMN, REUSE_COLUMN


_KEY_BLOCKS = re.compile(r'"key_blocks":\s*\[([^\]]*)\]')


class SearchError(ValueError):
    """The search cannot run or cannot meet what was asked; the message says what and why."""


#: Appended to a candidate's name for its FP8 twin ("diagonal(rows=2) fp8").
FP8_SUFFIX = " fp8"


@dataclass
class SearchSpace:
    geometry: Geometry
    block_size: int
    names: list[str]                  # candidate names (step-free), dense and skip included
    families: list[str]               # per candidate
    params: list[str | None]          # canonical JSON per candidate (None: vertical_stripe, per site)
    stripe_rows: list[float | None]   # vertical_stripe band per candidate
    density: np.ndarray               # float64 [S, L, H, C], nan = not measured
    rel_err: np.ndarray               # float64 [S, L, H, C]
    recall: np.ndarray                # float64 [S, L, H, C]
    stripe_params: dict[int, np.ndarray] = field(default_factory=dict)  # c → object [S, L, H] JSON
    #: Steps where the profiled pipeline hands over to its next expert (Wan2.2): no step range spans one.
    boundaries: tuple[int, ...] = ()
    #: Per candidate: the precision its kept blocks run in (None: all native).
    precisions: list[str] | None = None
    #: Exact steps of residual reuse the profile measured (``rel_err_reuse``), and those errors
    #: [S, L, H, C] (FP8 twins: their own FP8 error; reuse was measured for native kept blocks).
    reuse_steps: tuple[int, ...] = ()
    reuse_err: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.precisions is None:
            self.precisions = ["native"] * len(self.names)

    @cached_property
    def measured_precisions(self) -> tuple[str, ...]:
        """The precisions some candidate of the space runs in, native first."""
        return tuple(p for p in ("native", "fp8") if p in self.precisions)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.density.shape

    @property
    def num_blocks(self) -> int:
        return self.geometry.num_blocks(self.block_size)

    @cached_property
    def dense_col(self) -> int:
        return self.names.index("dense")

    @cached_property
    def skip_col(self) -> int:
        return self.names.index("skip")

    @cached_property
    def stripe_cols(self) -> list[int]:
        return [c for c, f in enumerate(self.families) if f == "vertical_stripe"]

    # -- stripes ------------------------------------------------------------------------------------

    @cached_property
    def _stripe_blocks(self) -> dict[int, np.ndarray]:
        """c → int [S, L, H, k] key blocks (−1 padded), parsed once (one regex over all params)."""
        out = {}
        for c, arr in self.stripe_params.items():
            flat = arr.reshape(-1)
            text = [p if isinstance(p, str) else '{"key_blocks":[]}' for p in flat]
            inner = _KEY_BLOCKS.findall("\n".join(text))
            if len(inner) != len(text):
                raise SearchError(f"profile: vertical_stripe params of {self.names[c]} lack key_blocks")
            counts = np.array([x.count(",") + 1 if x.strip() else 0 for x in inner])
            values = np.array([int(v) for x in inner if x.strip() for v in x.split(",")], dtype=np.int32)
            k = max(int(counts.max()) if len(counts) else 0, 1)
            blocks = np.full((len(inner), k), -1, dtype=np.int32)
            rows = np.repeat(np.arange(len(inner)), counts)
            cols = np.arange(len(values)) - np.repeat(np.cumsum(counts) - counts, counts)
            blocks[rows, cols] = values
            out[c] = blocks.reshape(*arr.shape, k)
        return out

    def _stripe_base_mask(self, rows: float) -> np.ndarray:
        cache = self.__dict__.setdefault("_base_mask_cache", {})
        if rows not in cache:
            cache[rows] = stripe_base(self.geometry, self.block_size, rows).numpy().astype(np.int64)
        return cache[rows]

    def stripe_union(self, c: int, steps: range) -> tuple[np.ndarray, np.ndarray]:
        """For stripe candidate ``c`` over ``steps``: (density [L, H] of the union of each site's key
        blocks, union membership bool [L, H, nb])."""
        blocks = self._stripe_blocks[c][steps.start:steps.stop]          # [s, L, H, k]
        s, L, H, k = blocks.shape
        nb = self.num_blocks
        member = np.zeros((L * H, nb + 1), dtype=bool)
        flat = blocks.transpose(1, 2, 0, 3).reshape(L * H, s * k)
        member[np.arange(L * H)[:, None], np.where(flat < 0, nb, flat)] = True
        member = member[:, :nb]
        base_kept, add = stripe_gain(self.geometry, self.block_size, self.stripe_rows[c])
        density = (base_kept + member.astype(np.float64) @ add) / nb**2
        return density.reshape(L, H), member.reshape(L, H, nb)

    def stripe_density(self, c: int, steps: range) -> np.ndarray:
        cache = self.__dict__.setdefault("_union_cache", {})
        key = (c, steps.start, steps.stop)
        if key not in cache:
            cache[key] = self.stripe_union(c, steps)[0]
        return cache[key]

    def candidate_params(self, c: int, steps: range, layer: int, head: int) -> dict:
        """The params a plan writes for candidate ``c`` at (layer, head) over ``steps``."""
        if self.families[c] != "vertical_stripe":
            return json.loads(self.params[c])
        blocks = self._stripe_blocks[c][steps.start:steps.stop, layer, head].reshape(-1)
        return {"key_blocks": sorted({int(b) for b in blocks if b >= 0}), "rows": self.stripe_rows[c]}

    # -- row counts (the full cost model needs each head's kept blocks per query block) ----------------

    def counts(self, c: int, steps: range, layer: int, head: int) -> np.ndarray:
        """Kept key blocks per query block, int [nb], of candidate ``c`` at one site over ``steps``."""
        cache = self.__dict__.setdefault("_count_cache", {})
        fam = self.families[c]
        if fam == "skip":
            return np.zeros(self.num_blocks, dtype=np.int64)
        if fam != "vertical_stripe":
            if c not in cache:
                cache[c] = block_mask(fam, json.loads(self.params[c]), self.geometry,
                                      self.block_size).sum(-1).numpy().astype(np.int64)
            return cache[c]
        base = self._stripe_base_mask(self.stripe_rows[c])
        keys = self.candidate_params(c, steps, layer, head)["key_blocks"]
        # The stripes add their columns to every row that does not already keep them.
        return base.sum(1) + len(keys) - base[:, keys].sum(1)

    # -- classification (the τ knob) ----------------------------------------------------------------------

    @property
    def native_columns(self) -> np.ndarray:
        """Per column: its native twin's column (an FP8 candidate's native one; a native column itself)."""
        return np.array([self.names.index(n.removesuffix(FP8_SUFFIX)) if p == "fp8" else c
                         for c, (n, p) in enumerate(zip(self.names, self.precisions))])

    def family_codes(self) -> np.ndarray:
        """Per candidate: index into SPARSE_FAMILIES, −1 for dense/skip."""
        return np.array([SPARSE_FAMILIES.index(f) if f in SPARSE_FAMILIES else -1 for f in self.families])


def build_space(profile) -> SearchSpace:
    """Pivot a Profile into a SearchSpace (adds ``dense`` and ``skip`` where the profile lacks them)."""
    t = profile.table
    if not len(t):
        raise SearchError("profile: the table is empty")
    S, L, H = (int(t[c].max()) + 1 for c in ("step", "layer", "head"))
    cat = t["candidate"].astype("category")
    names = list(cat.cat.categories)
    codes = cat.cat.codes.to_numpy()
    first = t.drop_duplicates("candidate").set_index("candidate")
    extra = [n for n in ("dense", "skip") if n not in names]
    names_all = names + extra
    C = len(names_all)
    density = np.full((S, L, H, C), np.nan)
    rel_err = np.full((S, L, H, C), np.nan)
    recall = np.full((S, L, H, C), np.nan)
    idx = (t["step"].to_numpy(), t["layer"].to_numpy(), t["head"].to_numpy(), codes)
    density[idx] = t["density"].to_numpy()
    rel_err[idx] = t["rel_err"].to_numpy()
    recall[idx] = t["recall"].to_numpy()
    families, params, rows = [], [], []
    for n in names_all:
        fam = first.loc[n, "pattern"] if n in first.index else n
        families.append(fam)
        if fam == "vertical_stripe":
            params.append(None)
            rows.append(float(json.loads(first.loc[n, "params"])["rows"]))
        else:
            params.append(first.loc[n, "params"] if n in first.index else "{}")
            rows.append(None)
    for n, (d, e, r) in (("dense", (1.0, 0.0, 1.0)), ("skip", (0.0, 1.0, 0.0))):
        c = names_all.index(n)
        miss = np.isnan(density[..., c])
        density[..., c][miss], rel_err[..., c][miss], recall[..., c][miss] = d, e, r
    reuse_err = None
    if REUSE_COLUMN in t.columns:  # unmeasured (dense, skip added above): their own error
        reuse_err = np.full((S, L, H, C), np.nan)
        reuse_err[idx] = t[REUSE_COLUMN].to_numpy()
        reuse_err = np.where(np.isnan(reuse_err), rel_err, reuse_err)
    precisions = ["native"] * C
    if FP8_COLUMN in t.columns:  # FP8 twins of every computed candidate the profile measured in FP8
        err8 = np.full((S, L, H, C), np.nan)
        err8[idx] = t[FP8_COLUMN].to_numpy()
        twins = [c for c in range(C) if families[c] != "skip" and not np.isnan(err8[..., c]).all()]
        names_all += [f"{names_all[c]}{FP8_SUFFIX}" for c in twins]
        families += [families[c] for c in twins]
        params += [params[c] for c in twins]
        rows += [rows[c] for c in twins]
        precisions += ["fp8"] * len(twins)
        twin_density = np.where(np.isnan(err8[..., twins]), np.nan, density[..., twins])   # unmeasured: unavailable
        density = np.concatenate([density, twin_density], -1)
        recall = np.concatenate([recall, recall[..., twins]], -1)
        rel_err = np.concatenate([rel_err, err8[..., twins]], -1)
        if reuse_err is not None:
            reuse_err = np.concatenate([reuse_err, err8[..., twins]], -1)
        fp8_of = dict(zip(twins, range(C, C + len(twins))))
    else:
        fp8_of = {}
    stripe_params = {}
    stripe_codes = [c for c, fam in enumerate(families) if fam == "vertical_stripe"]
    if stripe_codes:
        rows_sel = np.isin(codes, stripe_codes)
        sel_params = t["params"][rows_sel].to_numpy(dtype=object)
        sel_codes, sel_idx = codes[rows_sel], tuple(i[rows_sel] for i in idx[:3])
        for c in stripe_codes:
            arr = np.full((S, L, H), None, dtype=object)
            sel = sel_codes == c
            arr[sel_idx[0][sel], sel_idx[1][sel], sel_idx[2][sel]] = sel_params[sel]
            stripe_params[c] = arr
            if c in fp8_of:
                stripe_params[fp8_of[c]] = arr
    missing_sites = np.isnan(density).all(-1)
    if missing_sites.any():
        s, l, h = (int(x[0]) for x in np.nonzero(missing_sites))
        raise SearchError(f"profile: step {s}, layer {l}, head {h} has no measured candidate (incomplete profile)")
    handovers = tuple(b for b in boundaries(experts_of(profile.model, "profile model")) if b < S)
    return SearchSpace(profile.geometry, profile.settings.block_size, names_all, families, params, rows,
                       density, rel_err, recall, stripe_params, handovers, precisions,
                       tuple(profile.settings.residual_steps) if reuse_err is not None else (), reuse_err)


def step_ranges(num_steps: int, warmup: int, ranges: int, boundaries: Sequence[int] = ()) -> list[range]:
    """[warmup, num_steps) split into ``ranges`` contiguous ranges of near-equal length, each range
    that spans one of ``boundaries`` (an expert hand-over step) split there."""
    if not 0 <= warmup < num_steps:
        raise SearchError(f"warm-up steps must be in [0, {num_steps}), got {warmup}")
    n = num_steps - warmup
    ranges = max(1, min(ranges, n))
    edges = [warmup + math.floor(i * n / ranges) for i in range(ranges + 1)]
    edges = sorted(set(edges) | {b for b in boundaries if warmup < b < num_steps})
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]


__all__ = ["SearchError", "SearchSpace", "build_space", "step_ranges"]
