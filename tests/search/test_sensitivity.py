"""Output sensitivity: gains measured by probing whole trajectories, and the search weighing by them.

Ground truth is planted: one head's output is multiplied by zero weights in its block's output
projection, so no error of it can reach the frames — its gain must be exactly 0 and a weighted
search must spend nothing on it. Gains are checked against an independent recomputation (a probe
plan built here by hand, run through the validator, over the profile table's own errors).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnsearch.costmodel import CostModel
from attnsearch.layer_plan import LayerPlan
from attnsearch.models import ModelSpec
from attnsearch.patterns import SPARSE_FAMILIES
from attnsearch.plan import Plan, ScheduleEntry
from attnsearch.profiling import ProfileSettings, profile_model
from attnsearch.search import SearchError, optimize
from attnsearch.search.inner import solve_lagrangian
from attnsearch.search.problem import Knobs, Problem
from attnsearch.search.sensitivity import (Sensitivity, SensitivityError, measure_sensitivity, probe_candidates,
                                           resolve_sensitivity)
from attnsearch.search.space import build_space
from attnsearch.search.validate import Validator
from tiny_models import tiny_mini_vdit

SIZE = (4, 32, 32)   # 4 × 8 × 8 = 256 tokens, 4 blocks of 64
STEPS = 2
BLOCK = 64
#: The planted head the output ignores: (layer, head).
IGNORED = (1, 0)
HARDWARE = "nvidia-h100-80gb-hbm3"


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return tiny_mini_vdit(SIZE, STEPS, silenced=IGNORED)


@pytest.fixture(scope="module")
def profile(spec):
    return profile_model(spec, settings=ProfileSettings(block_size=BLOCK, queries=64))


@pytest.fixture(scope="module")
def sens(spec, profile) -> Sensitivity:
    return measure_sensitivity(profile, spec, density=0.5, trajectories=2, backend="torch")


def test_probes_are_the_least_error_sparse_candidates_within_the_density(profile):
    """Brute force over the profile table: per head, mean over steps of density and rel_err, the
    least-error sparse candidate at ≤ 0.5."""
    space = build_space(profile)
    got = probe_candidates(space, 0.5)
    t = profile.table
    t = t[t["pattern"].isin(SPARSE_FAMILIES)]
    means = t.groupby(["layer", "head", "candidate"])[["density", "rel_err"]].mean().reset_index()
    for (layer, head), g in means.groupby(["layer", "head"]):
        within = g[g["density"] <= 0.5]
        assert not within.empty
        best = within.loc[within["rel_err"].idxmin()]
        assert space.names[got[layer, head]] == best["candidate"]
        assert np.nanmean(space.rel_err[:, layer, head, got[layer, head]]) == pytest.approx(best["rel_err"])


def test_a_head_the_output_ignores_has_no_gain_and_every_other_site_has_some(sens):
    """Zero up to rounding: a probed layer runs every head through the runtime, whose summation
    order differs from SDPA's (~1e-14 here), against ≥ 1e-6 for every head the output reads."""
    assert sens.shape == (STEPS, 2, 2)
    others = np.delete(sens.head_gain.reshape(-1), IGNORED[0] * 2 + IGNORED[1])
    assert (others > 0).all() and (sens.step_gain > 0).all()
    assert sens.head_gain[IGNORED] < 1e-6 * others.min()
    w = sens.weights()
    assert w.mean() == pytest.approx(1.0) and (w[:, IGNORED[0], IGNORED[1]] < 1e-6).all()


def test_a_gain_is_the_probes_output_change_over_their_profiled_error(spec, profile, sens):
    """Step 1's gain, recomputed: a plan probing every head at step 1 only, built here, run by the
    validator; its mean squared change of the frames over Σ rel_err² of the probes at step 1 as the
    profile table records them."""
    space = build_space(profile)
    probes = probe_candidates(space, 0.5)
    g, H, L = spec.geometry, 2, 2
    layers = tuple(LayerPlan.from_heads([(space.families[probes[l_, h]],
                                          space.candidate_params(int(probes[l_, h]), range(1, 2), l_, h))
                                         for h in range(H)], g, BLOCK) for l_ in range(L))
    plan = Plan(g, BLOCK, STEPS, L, H, (ScheduleEntry(0, 1, None), ScheduleEntry(1, 2, layers)))
    v = Validator(spec, 2, backend="torch", mode="trajectory")
    out = v._run(plan)
    mse = float((out - v.reference).double().pow(2).mean())
    t = profile.table
    err2 = sum(float(t[(t["step"] == 1) & (t["layer"] == l_) & (t["head"] == h) &
                       (t["candidate"] == space.names[probes[l_, h]])]["rel_err"].iloc[0]) ** 2
               for l_ in range(L) for h in range(H))
    assert mse > 0
    assert sens.step_response[1] == pytest.approx(mse, rel=1e-9)
    assert sens.step_gain[1] == pytest.approx(mse / err2, rel=1e-6)


def test_the_weighted_search_spends_nothing_on_the_ignored_head(profile, sens):
    """With every layer solved per head (no dense unit), at a λ where the unweighted solve keeps the
    ignored head accurate, the weighted one gives it its cheapest candidate of the classes its unit
    uses; the weighted error is Σ weight · rel_err², recomputed here from the profile's errors."""
    space = build_space(profile)
    cm = CostModel(HARDWARE, head_dim=64)
    k = Knobs(lam=1000.0, ranges=STEPS, block_size=BLOCK)
    layer, head = IGNORED
    solved = {}
    for name, problem in (("plain", Problem(space, cm)), ("weighted", Problem(space, cm, weights=sens.weights()))):
        rs, units = problem.units(k)
        units.dense = np.full_like(units.dense, np.inf)      # per-head choices in every unit
        sol = solve_lagrangian(units, problem.lam_abs(k))
        solved[name] = (problem, rs, sol.choice.reshape(len(rs), 2, 2), units.cost.reshape(len(rs), 2, 2, -1), sol)
    plain, rs, c_plain, _, _ = solved["plain"]
    weighted, _, c_weighted, cost, sol = solved["weighted"]
    for i, r in enumerate(rs):
        assert space.rel_err[r.start, layer, head, c_plain[i, layer, head]] < 0.05     # accurate when unweighted
        c = c_weighted[i, layer, head]
        same_class = np.isfinite(cost[i, layer, head]) & (weighted.col_class == weighted.col_class[c])
        assert cost[i, layer, head, c] == cost[i, layer, head][same_class].min()
        assert c != c_plain[i, layer, head]
    w = sens.weights()
    want = sum(w[s, l_, h] * space.rel_err[s, l_, h, c_weighted[i, l_, h]] ** 2
               for i, r in enumerate(rs) for s in r for l_ in range(2) for h in range(2))
    assert float(sol.err.sum()) == pytest.approx(want, rel=1e-4)


def test_optimize_records_the_weights_and_keeps_weighted_trials_apart(profile, sens, tmp_path):
    path = tmp_path / "p.parquet"
    profile.save(path)
    sens.save(tmp_path / "s.json")
    storage = f"sqlite:///{tmp_path}/study.db"
    plain = optimize(path, hardware=HARDWARE, trials=6, storage=storage, out=tmp_path / "a.json", max_density=0.9)
    weighted = optimize(path, hardware=HARDWARE, trials=6, storage=storage, out=tmp_path / "b.json",
                        max_density=0.9, sensitivity=tmp_path / "s.json")
    assert plain.study_name != weighted.study_name
    assert plain.plan.search["error_weights"] is None
    rec = weighted.plan.search["error_weights"]
    assert rec["digest"] == sens.digest() and rec["density"] == 0.5
    assert "weighted" in weighted.plan.search["objectives"]["error_metric"]
    assert json.loads((tmp_path / "b.json").read_text())["search"]["error_weights"]["digest"] == sens.digest()


def test_a_saved_record_loads_back_and_bad_ones_name_their_problem(sens, profile, tmp_path):
    sens.save(tmp_path / "s.json")
    back = resolve_sensitivity(tmp_path / "s.json")
    assert np.array_equal(back.weights(), sens.weights()) and back.probes == sens.probes
    data = sens.to_dict()
    bad = [({**data, "format": "x"}, "not an attnsearch sensitivity record"),
           ({**data, "version": 2}, "version 2 is not 1"),
           ({**data, "step_gain": [-1.0] * STEPS}, "step_gain must be finite and ≥ 0"),
           ({**data, "head_gain": [[0.0, 0.0], [0.0, 0.0]]}, "every gain is 0"),
           ({**data, "step_gain": [1.0]}, "disagree in shape"),
           ({k: v for k, v in data.items() if k != "probes"}, "malformed sensitivity record")]
    for record, message in bad:
        with pytest.raises(SensitivityError, match=message):
            Sensitivity.from_dict(record)
    (tmp_path / "cut.json").write_text(json.dumps(data)[:50])
    with pytest.raises(SensitivityError, match="not valid JSON"):
        Sensitivity.load(tmp_path / "cut.json")


def test_weights_of_another_model_or_shape_are_refused(spec, profile, sens, tmp_path):
    path = tmp_path / "p.parquet"
    profile.save(path)
    other = Sensitivity.from_dict({**sens.to_dict(), "model": {"name": "x", "fingerprint": "other"}})
    with pytest.raises(SensitivityError, match="measured on model fingerprint other"):
        optimize(path, hardware=HARDWARE, trials=1, out=tmp_path / "a.json", sensitivity=other)
    data = sens.to_dict()
    short = Sensitivity.from_dict({**data, "step_gain": data["step_gain"][:1],
                                   "step_response": data["step_response"][:1]})
    with pytest.raises(SensitivityError, match=r"measured over \(1, 2, 2\)"):
        optimize(path, hardware=HARDWARE, trials=1, out=tmp_path / "a.json", sensitivity=short)
    with pytest.raises(SearchError, match="error weights: must be finite"):
        Problem(build_space(profile), CostModel(HARDWARE, head_dim=64), weights=np.ones((1, 2, 2)))
    with pytest.raises(SensitivityError, match="trajectories must be an integer in \\[1, 2\\]"):
        measure_sensitivity(profile, spec, trajectories=3)
    with pytest.raises(SensitivityError, match="density must be in"):
        measure_sensitivity(profile, spec, density=0.0)
    plain = ModelSpec(name="plain", model=spec.model, geometry=spec.geometry, inputs=spec.inputs, fingerprint="planted")
    with pytest.raises(SensitivityError, match="has no sampler"):
        measure_sensitivity(profile, plain)


def test_per_layer_sites_probe_each_layer_once_and_give_its_heads_its_gain(spec, profile):
    """S + L runs; layer 0's gain recomputed: every head of layer 0 probed at every step, run by the
    validator, over the probes' Σ rel_err² in layer 0 from the profile table."""
    sites = []
    sens = measure_sensitivity(profile, spec, density=0.5, trajectories=2, sites="layers", backend="torch",
                               progress=lambda d: sites.append(d["site"]))
    assert sites == [f"step {s}" for s in range(STEPS)] + ["layer 0", "layer 1"] and sens.sites == "layers"
    assert (sens.head_gain == sens.head_gain[:, :1]).all()
    space = build_space(profile)
    probes = probe_candidates(space, 0.5)
    g, H, L = spec.geometry, 2, 2
    dense = LayerPlan.dense(g, H, BLOCK)
    entries = tuple(ScheduleEntry(s, s + 1, (LayerPlan.from_heads(
        [(space.families[probes[0, h]], space.candidate_params(int(probes[0, h]), range(s, s + 1), 0, h))
         for h in range(H)], g, BLOCK), dense)) for s in range(STEPS))
    v = Validator(spec, 2, backend="torch", mode="trajectory")
    mse = float((v._run(Plan(g, BLOCK, STEPS, L, H, entries)) - v.reference).double().pow(2).mean())
    t = profile.table
    err2 = sum(float(t[(t["step"] == s) & (t["layer"] == 0) & (t["head"] == h) &
                       (t["candidate"] == space.names[probes[0, h]])]["rel_err"].iloc[0]) ** 2
               for s in range(STEPS) for h in range(H))
    assert sens.head_gain[0, 0] == pytest.approx(mse / err2, rel=1e-6)
    assert Sensitivity.from_dict(sens.to_dict()).sites == "layers"
    with pytest.raises(SensitivityError, match="sites must be one of heads, layers"):
        measure_sensitivity(profile, spec, sites="blocks")


def test_resampled_gains_follow_the_grid_position_and_keep_the_heads(sens, tmp_path):
    """A gain linear in the grid position is read back exactly at every new step inside the measured
    middles, held at the ends; head gains, probes and the record's round trip are unchanged."""
    S = 4
    data = sens.to_dict()
    middles = [(s + 0.5) / S for s in range(S)]
    planted = Sensitivity.from_dict({**data, "step_gain": [1.0 + 8.0 * u for u in middles],
                                     "step_response": [2.0] * S, "shape": [S, 2, 2]})
    assert planted.resampled(S) is planted
    ten = planted.resampled(10)
    for s, gain in enumerate(ten.step_gain):
        u = min(max((s + 0.5) / 10, middles[0]), middles[-1])
        assert gain == pytest.approx(1.0 + 8.0 * u, rel=1e-12)
    assert np.array_equal(ten.head_gain, planted.head_gain) and ten.probes == planted.probes
    assert ten.measured_steps == S and ten.resampled(3).measured_steps == S
    assert ten.summary()["measured_steps"] == S and ten.shape == (10, 2, 2)
    ten.save(tmp_path / "r.json")
    back = Sensitivity.load(tmp_path / "r.json")
    assert back.measured_steps == S and np.array_equal(back.weights(), ten.weights())
    assert "measured_steps" not in planted.to_dict()
    with pytest.raises(SensitivityError, match="integer ≥ 1, got 0"):
        planted.resampled(0)
