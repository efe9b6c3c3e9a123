"""Head classification: the cheapest structured candidate that keeps enough attention mass.

The rule (docs/design.md): among diagonal, multi_diagonal, vertical_stripe and energy_decay, the
candidate of lowest density with recall ≥ τ names the head's class (ties: higher recall, then lower
error, then the first); if none reaches τ at a density ≤ the cap, the head is ``dense``.
:func:`pick_class` is that rule on arrays, the one implementation the profile's labels and the
search's τ restriction share. Applied per step, and over steps to each candidate's mean recall and
density (a candidate must serve every step to label the head), with ``stability`` = the share of
steps whose own label has the aggregate's family, and, for a profile of several prompts,
``prompt_stability`` = the share of prompts whose own label over steps (the same rule on that
prompt's statistics alone) has the aggregate's family (NaN for a profile without prompts).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from ..patterns import SPARSE_FAMILIES, params_key
from .candidates import stripe_gain
from .profile_io import Profile

#: Recall a class must reach, and the density above which a head is dense (the defaults).
TAU = 0.95
DENSITY_CAP = 0.75
SITE = ["layer", "head"]
STEP_SITE = ["step", "layer", "head"]
#: Columns of a per-step label table (docs/design.md's, plus the candidate's step-free name and error).
LABEL_COLUMNS = ["step", "layer", "head", "pattern", "params", "candidate", "density", "recall", "rel_err"]
AGGREGATE_COLUMNS = ["layer", "head", "pattern", "params", "candidate", "density", "recall", "rel_err",
                     "stability", "steps", "prompt_stability"]


def pick_class(sparse: np.ndarray, density: np.ndarray, recall: np.ndarray, tau: float, density_cap: float, *,
               rel_err: np.ndarray | None = None, usable: np.ndarray | None = None) -> np.ndarray:
    """The classifying candidate of every site, by the rule of the module docstring.

    Arrays broadcast to [..., C] with the candidates on the last axis: ``sparse`` marks candidates
    of the four structured families, ``usable`` (optional) any further condition a candidate must
    meet; NaN recall or density is never eligible. Returns int [...]: the index of the chosen
    candidate, −1 where none is eligible (the site is dense)."""
    ok = np.asarray(sparse, dtype=bool) & (recall >= tau) & (density <= density_cap)
    if usable is not None:
        ok = ok & usable
    d = np.where(ok, density, np.inf)
    tie = ok & (d == d.min(-1, keepdims=True))
    r = np.where(tie, recall, -np.inf)
    tie &= r == r.max(-1, keepdims=True)
    if rel_err is not None:
        e = np.where(tie & ~np.isnan(rel_err), rel_err, np.inf)  # a NaN error loses a tie
        tie &= e == e.min(-1, keepdims=True)
    return np.where(ok.any(-1), tie.argmax(-1), -1)


def _pick(rows: pd.DataFrame, keys: list[str], tau: float, density_cap: float) -> pd.DataFrame:
    """Per group of ``keys``: the row :func:`pick_class` chooses (no row where the group is dense)."""
    if rows.empty:
        return rows
    groups = rows.groupby(keys, sort=False)
    g, pos = groups.ngroup().to_numpy(), groups.cumcount().to_numpy()
    shape = (int(g.max()) + 1, int(pos.max()) + 1)

    def grid(values: np.ndarray, fill) -> np.ndarray:
        out = np.full(shape, fill, dtype=values.dtype)
        out[g, pos] = values
        return out

    sparse = grid(rows["pattern"].isin(SPARSE_FAMILIES).to_numpy(), False)
    density = grid(rows["density"].to_numpy(np.float64), np.nan)
    recall = grid(rows["recall"].to_numpy(np.float64), np.nan)
    rel_err = grid(rows["rel_err"].to_numpy(np.float64), np.nan)
    chosen = pick_class(sparse, density, recall, tau, density_cap, rel_err=rel_err)
    return rows[pos == chosen[g]]


def _fill_dense(chosen: pd.DataFrame, sites: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = sites.merge(chosen, on=keys, how="left")
    dense = out["pattern"].isna()
    for col, value in (("pattern", "dense"), ("params", "{}"), ("candidate", "dense")):
        out[col] = out[col].astype(object).where(~dense, value)
    for col, value in (("density", 1.0), ("recall", 1.0), ("rel_err", 0.0)):
        out[col] = out[col].astype("float64").where(~dense, value)
    return out


def classify(profile: Profile | pd.DataFrame, tau: float = TAU, density_cap: float = DENSITY_CAP, *,
             over_steps: bool = False) -> pd.DataFrame:
    """Label every head of a profile.

    Per step (default): one row per (step, layer, head) with LABEL_COLUMNS. With ``over_steps``:
    one row per (layer, head) with AGGREGATE_COLUMNS.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if not 0.0 < density_cap <= 1.0:
        raise ValueError(f"density_cap must be in (0, 1], got {density_cap}")
    table = profile.table if isinstance(profile, Profile) else profile
    sites = table[STEP_SITE].drop_duplicates().sort_values(STEP_SITE, ignore_index=True)
    per_step = _fill_dense(_pick(table, STEP_SITE, tau, density_cap), sites, STEP_SITE)[LABEL_COLUMNS]
    if not over_steps:
        return per_step.astype({"step": "int32", "layer": "int32", "head": "int32"})
    prof = profile if isinstance(profile, Profile) else None
    out = _aggregate(table, per_step, tau, density_cap, prof)
    out["prompt_stability"] = np.nan
    if prof is not None and prof.num_prompts:
        agree = np.zeros(len(out))
        for i in range(prof.num_prompts):
            own = replace(prof, table=prof.prompt_table(i), prompts=())
            labels = classify(own, tau, density_cap, over_steps=True)
            same = out[SITE + ["pattern"]].merge(labels[SITE + ["pattern"]], on=SITE, suffixes=("", "_own"), how="left")
            agree += (same["pattern"] == same["pattern_own"]).to_numpy()
        out["prompt_stability"] = agree / prof.num_prompts
    return out[AGGREGATE_COLUMNS]


def _aggregate(table: pd.DataFrame, per_step: pd.DataFrame, tau: float, density_cap: float,
               profile: Profile | None) -> pd.DataFrame:
    num_steps = table.groupby(SITE)["step"].nunique().rename("steps").reset_index()
    mean = (table.groupby(SITE + ["pattern", "candidate"], sort=False)
            .agg(density=("density", "mean"), recall=("recall", "mean"), rel_err=("rel_err", "mean"),
                 params=("params", "first"), seen=("step", "nunique"))
            .reset_index()
            .merge(num_steps, on=SITE))
    mean = mean[mean["seen"] == mean["steps"]]  # a candidate missing at some step cannot serve it
    # One params for all steps: stripes take the union of each step's key blocks (a superset keeps
    # every step's recall) and are judged at the union's density, before picking.
    is_vs = mean["pattern"] == "vertical_stripe"
    if is_vs.any():
        vs = table[table["pattern"] == "vertical_stripe"]
        union = vs.groupby(SITE + ["candidate"])["params"].agg(_union_params).rename("union").reset_index()
        mean = mean.merge(union, on=SITE + ["candidate"], how="left")
        is_vs = mean["pattern"] == "vertical_stripe"
        mean.loc[is_vs, "params"] = mean.loc[is_vs, "union"]
        if profile is not None:
            mean.loc[is_vs, "density"] = [stripe_density(profile, p) for p in mean.loc[is_vs, "params"]]
        mean = mean.drop(columns=["union"])
    chosen = _pick(mean, SITE, tau, density_cap).drop(columns=["seen", "steps"])
    out = _fill_dense(chosen, num_steps[SITE], SITE).merge(num_steps, on=SITE)
    agree = per_step.merge(out[SITE + ["pattern"]], on=SITE, suffixes=("", "_agg"))
    agree["same"] = agree["pattern"] == agree["pattern_agg"]
    out = out.merge(agree.groupby(SITE)["same"].mean().rename("stability").reset_index(), on=SITE)
    return out[AGGREGATE_COLUMNS[:-1]].astype({"layer": "int32", "head": "int32"})


def _union_params(params: pd.Series) -> str:
    parsed = [json.loads(p) for p in params]
    blocks = sorted({b for p in parsed for b in p["key_blocks"]})
    return params_key({"key_blocks": blocks, "rows": parsed[0]["rows"]})


def stripe_density(profile: Profile, params: str) -> float:
    """Exact density of a vertical_stripe params string, without building its mask
    (:func:`attnsearch.profiling.candidates.stripe_gain`)."""
    p = json.loads(params)
    kept, gain = stripe_gain(profile.geometry, profile.settings.block_size, float(p["rows"]))
    return (kept + float(gain[p["key_blocks"]].sum())) / len(gain) ** 2


def class_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Heads per class for each layer: rows = layer, columns = pattern (all five always present)."""
    order = ["diagonal", "multi_diagonal", "vertical_stripe", "energy_decay", "dense"]
    counts = labels.groupby(["layer", "pattern"]).size().unstack(fill_value=0)
    return counts.reindex(columns=order, fill_value=0)


__all__ = ["AGGREGATE_COLUMNS", "DENSITY_CAP", "LABEL_COLUMNS", "TAU", "class_counts", "classify", "pick_class",
           "stripe_density"]
