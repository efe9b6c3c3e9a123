"""classify() applies the class rule of docs/design.md exactly, per step and over steps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attnsearch import classify
from attnsearch.profiling.classify import class_counts, pick_class


def row(step, layer, head, pattern, params, density, recall, rel_err=0.1):
    cand = pattern if not params else f"{pattern}{json.dumps(params, sort_keys=True)}"
    if pattern == "vertical_stripe":
        cand = f"vertical_stripe(top_k={len(params['key_blocks'])}, rows=0)"
    return dict(step=step, layer=layer, head=head, pattern=pattern, params=json.dumps(params, sort_keys=True),
                candidate=cand, density=density, recall=recall, rel_err=rel_err)


def table(rows):
    return pd.DataFrame(rows)


def test_lowest_density_above_tau_wins_and_dense_is_never_a_class():
    t = table([
        row(0, 0, 0, "dense", {}, 1.0, 1.0, 0.0),
        row(0, 0, 0, "diagonal", {"rows": 1}, 0.10, 0.90),       # below τ
        row(0, 0, 0, "diagonal", {"rows": 2}, 0.20, 0.96),
        row(0, 0, 0, "energy_decay", {"decay": 0.5}, 0.15, 0.97),  # cheaper and above τ: wins
        row(0, 0, 0, "multi_diagonal", {"rows": 1}, 0.15, 0.99),   # same density, higher recall: wins tie
        row(0, 0, 1, "diagonal", {"rows": 8}, 0.80, 0.99),       # above the density cap
        row(0, 0, 1, "skip", {}, 0.0, 0.0, 1.0),
    ])
    labels = classify(t, tau=0.95)
    assert list(labels["pattern"]) == ["multi_diagonal", "dense"]
    assert labels.iloc[0]["density"] == 0.15 and labels.iloc[1]["density"] == 1.0
    assert list(classify(t, tau=0.95, density_cap=0.9)["pattern"]) == ["multi_diagonal", "diagonal"]
    assert list(classify(t, tau=0.999)["pattern"]) == ["dense", "dense"]
    assert list(classify(t, tau=0.9)["params"])[0] == json.dumps({"rows": 1}, sort_keys=True)


def test_over_steps_uses_mean_recall_and_reports_stability():
    rows = []
    for step, (r_diag, r_md) in enumerate([(0.97, 0.99), (0.97, 0.99), (0.90, 0.99), (0.96, 0.99)]):
        rows += [row(step, 0, 0, "diagonal", {"rows": 1}, 0.1, r_diag),
                 row(step, 0, 0, "multi_diagonal", {"rows": 1}, 0.3, r_md)]
    per_step = classify(table(rows), tau=0.95)
    assert list(per_step["pattern"]) == ["diagonal", "diagonal", "multi_diagonal", "diagonal"]
    agg = classify(table(rows), tau=0.95, over_steps=True)
    # mean diagonal recall = 0.95 ≥ τ: diagonal, agreeing with 3 of 4 steps.
    assert agg.iloc[0]["pattern"] == "diagonal"
    assert agg.iloc[0]["stability"] == pytest.approx(0.75)
    assert agg.iloc[0]["recall"] == pytest.approx(0.95)
    agg = classify(table(rows), tau=0.96, over_steps=True)
    assert agg.iloc[0]["pattern"] == "multi_diagonal" and agg.iloc[0]["stability"] == pytest.approx(0.25)


def test_stripes_merge_their_blocks_over_steps():
    rows = [row(0, 1, 0, "vertical_stripe", {"key_blocks": [0, 4], "rows": 0.0}, 0.2, 0.99),
            row(1, 1, 0, "vertical_stripe", {"key_blocks": [0, 5], "rows": 0.0}, 0.2, 0.99)]
    agg = classify(table(rows), over_steps=True)
    assert json.loads(agg.iloc[0]["params"])["key_blocks"] == [0, 4, 5]


def test_class_counts_has_every_class_column():
    labels = classify(table([row(0, 0, 0, "diagonal", {"rows": 1}, 0.1, 0.99),
                             row(0, 0, 1, "diagonal", {"rows": 1}, 0.1, 0.5)]))
    counts = class_counts(labels)
    assert counts.loc[0, "diagonal"] == 1 and counts.loc[0, "dense"] == 1 and counts.loc[0, "energy_decay"] == 0


def test_bad_thresholds():
    with pytest.raises(ValueError, match="tau"):
        classify(table([row(0, 0, 0, "dense", {}, 1, 1)]), tau=0)


def test_stripe_density_formula_matches_the_mask():
    import torch

    from attnsearch import Geometry, block_mask
    from attnsearch.profiling.classify import stripe_density
    from attnsearch.profiling.profile_io import Profile, ProfileSettings

    geom = Geometry(3, 10, 12, 30, "suffix")
    prof = Profile(pd.DataFrame(), geom, ProfileSettings(block_size=64))
    for blocks, rows in (([0, 3], 0.0), ([1, 2, 5], 1.0), ([], 2.0)):
        params = {"key_blocks": blocks, "rows": rows}
        want = block_mask("vertical_stripe", params, geom, 64).float().mean().item()
        assert stripe_density(prof, json.dumps(params)) == pytest.approx(want)
    assert torch.is_tensor(block_mask("dense", {}, geom, 64))


def test_pick_class_is_the_rule_on_arrays():
    """The vectorised rule against a plain loop over each site's candidates, on values drawn from a
    few levels so that ties in density, recall and error are common; NaN is never eligible."""
    rng = np.random.default_rng(0)
    shape = (40, 3, 9)
    density = rng.choice([0.1, 0.2, 0.5, 0.8, np.nan], shape)
    recall = rng.choice([0.9, 0.96, 0.99, np.nan], shape)
    rel_err = rng.choice([0.01, 0.02, np.nan], shape)
    sparse = rng.random(shape[-1]) < 0.7
    usable = rng.random(shape) < 0.9
    got = pick_class(sparse, density, recall, 0.95, 0.75, rel_err=rel_err, usable=usable)
    for site in np.ndindex(shape[:-1]):
        best, best_key = -1, None
        for c in range(shape[-1]):
            d, r, e = density[site][c], recall[site][c], rel_err[site][c]
            if not (sparse[c] and usable[site][c] and r >= 0.95 and d <= 0.75):
                continue
            key = (d, -r, np.inf if np.isnan(e) else e)   # lowest density, then recall, then error
            if best_key is None or key < best_key:
                best, best_key = c, key
        assert got[site] == best, site
