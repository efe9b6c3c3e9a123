"""Search: profile → optimize end to end, the plan it writes, the Pareto choice, and bad inputs."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from attnsearch import classify, load_plan
from attnsearch.costmodel import CostModel, HardwareError
from attnsearch.patterns import block_mask
from attnsearch.profiling.profile_io import ProfileError
from attnsearch.search import BudgetError, SearchError, optimize
from attnsearch.search.problem import Knobs, Problem
from attnsearch.search.space import build_space
from attnsearch.search.choose import choose

import synthetic


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    return synthetic.small_profile(tmp_path_factory.mktemp("prof"))


# --- end to end on toy-vdit -----------------------------------------------------------------------------


@pytest.mark.slow
def test_toy_vdit_profile_to_plan_within_measured_error(tmp_path):
    """End to end on toy-vdit: the plan chosen under a 2 % budget of measured model-output error
    really is within it (re-measured here through apply), and is the fastest such Pareto plan.

    At toy size (N = 2048, 8 heads) one attention call costs ~23 µs on an H100, launch-bound, so no
    plan reaching 3× predicted stays within 2 %: asked for both, the search must say so and name the
    best it found (checked below) rather than ship a worse plan."""
    from attnsearch import apply
    from attnsearch.metrics import rel_l2
    from attnsearch.models import load_model
    from attnsearch.profiling.profile_io import ProfileSettings
    from attnsearch.profiling.profiler import profile_model

    spec = load_model("toy-vdit", steps=2)
    prof = profile_model(spec, settings=ProfileSettings(queries=64, block_size=64))
    prof.save(tmp_path / "toy.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optimize(tmp_path / "toy.parquet", hardware="nvidia-h100-80gb-hbm3", model=spec, validate=1,
                       max_error=0.02, trials=8, out=tmp_path / "toy.json")
        with pytest.raises(BudgetError, match=r"the best achievable is [0-9.]+× at measured output error"):
            optimize(tmp_path / "toy.parquet", hardware="nvidia-h100-80gb-hbm3", model=spec, validate=1,
                     max_error=0.02, target_speedup=3.0, trials=0, out=tmp_path / "toy.json")
    measured = res.plan.search["validation"]
    assert measured["rel_l2"] <= 0.02 and measured["inputs"] == 1
    assert res.figures["speedup"] >= 1.0  # the dense plan is always on the front, so never worse
    plan = load_plan(res.path)
    dense = spec.run(1)
    with apply(spec.model, plan, backend="torch"):
        sparse = spec.run(1)
    assert float(rel_l2(sparse, dense)) == pytest.approx(measured["rel_l2"], rel=1e-3, abs=1e-6)
    # PSNR: 10·log10(range² / MSE), range = the dense output's max − min (computed here in numpy).
    ref, out = dense.double().numpy(), sparse.double().numpy()
    mse = float(np.mean((out - ref) ** 2))
    expected = np.inf if mse == 0 else 10 * np.log10((ref.max() - ref.min()) ** 2 / mse)
    assert measured["psnr_db"] == pytest.approx(expected, rel=1e-3)
    from attnsearch.costmodel import CostModel

    assert plan.hardware == {"device": "NVIDIA H100 80GB HBM3", "calibration": "nvidia-h100-80gb-hbm3",
                             "execution": CostModel("nvidia-h100-80gb-hbm3").execution}
    assert set(plan.predicted) >= {"attention_ms", "dense_attention_ms", "speedup", "rel_err"}
    assert plan.search["trial"] == res.trial and plan.search["study"] == res.study_name and res.reason
    for lp in plan.layer_plans():  # head fusion: one group per pattern family in a layer
        pats = [g.pattern for g in lp.groups]
        assert len(pats) == len(set(pats)) and sum(len(g.heads) for g in lp.groups) == 8
    # The search's figure is the cost model's own prediction for the plan it wrote (full model).
    cm = CostModel("nvidia-h100-80gb-hbm3", head_dim=64)
    assert cm.plan_ms(plan) == pytest.approx(plan.predicted["attention_ms"], rel=1e-6)
    assert cm.dense_plan_ms(plan) == pytest.approx(plan.predicted["dense_attention_ms"], rel=1e-6)


# --- the problem -------------------------------------------------------------------------------------------


def test_stripe_union_density_is_exact(small_profile):
    _, prof = small_profile
    sp = build_space(prof)
    for c in sp.stripe_cols[:4]:
        steps = range(0, 3)
        dens = sp.stripe_density(c, steps)
        for layer in range(2):
            for head in range(4):
                params = sp.candidate_params(c, steps, layer, head)
                mask = block_mask("vertical_stripe", params, prof.geometry, 64)
                assert dens[layer, head] == pytest.approx(mask.double().mean().item(), abs=1e-12)
                assert (sp.counts(c, steps, layer, head) == mask.sum(-1).numpy()).all()


def test_tau_restricts_to_the_classified_family(small_profile):
    _, prof = small_profile
    pb = Problem(build_space(prof), CostModel("nvidia-h100-80gb-hbm3", head_dim=128))
    allowed = pb.allowed(0.9, 0, 3)                        # three one-step ranges
    labels = classify(prof, tau=0.9)
    for r in labels.itertuples():
        ok = {pb.space.families[c] for c in np.flatnonzero(allowed[r.step, r.layer, r.head])}
        assert ok == ({r.pattern, "dense", "skip"} if r.pattern != "dense" else {"dense", "skip"})


def test_an_error_beyond_float32_stays_the_largest_error(small_profile):
    """A finite rel_err whose square overflows float32 (a broken or adversarial profile) becomes the
    largest float32 error, with no overflow warning, and the solver never prefers it."""
    _, prof = small_profile
    space = build_space(prof)
    space.rel_err[..., 1] = 1e20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pb = Problem(space, CostModel("nvidia-h100-80gb-hbm3", head_dim=128))
    assert np.isfinite(pb.err2).all() and (pb.err2[..., 1] == np.finfo(np.float32).max).all()
    a = pb.solve(Knobs(lam=0.05, warmup=0, ranges=1, dense_layers=0, block_size=64))
    assert (a.choice != 1).all()


def test_plan_covers_every_site_and_matches_the_solution(small_profile):
    _, prof = small_profile
    pb = Problem(build_space(prof), CostModel("nvidia-h100-80gb-hbm3", head_dim=128))
    a = pb.solve(Knobs(lam=0.05, warmup=1, ranges=2, dense_layers=0, block_size=64))
    plan = pb.plan(a)
    assert plan.schedule[0].start == 0 and plan.schedule[0].layers is None  # warm-up dense
    for i, r in enumerate(a.ranges):
        for layer in range(2):
            lp = plan.layer_plan(r.start, layer)
            if a.dense_unit[i, layer]:
                assert all(g.pattern == "dense" for g in lp.groups)
                continue
            for h, (pattern, params) in enumerate(lp.head_specs):
                assert pattern == pb.space.families[a.choice[i, layer, h]]


# --- choosing from the front -------------------------------------------------------------------------------


def _trial(n, ms, err, speed):
    return SimpleNamespace(number=n, values=(ms, err), user_attrs={"speedup": speed}, params={})


FRONT = [_trial(0, 1.0, 0.30, 4.0), _trial(1, 2.0, 0.10, 2.0), _trial(2, 3.0, 0.02, 1.3), _trial(3, 4.0, 0.0, 1.0)]


def test_choose_follows_the_request():
    assert choose(FRONT, 0.1, None)[0].number == 1              # fastest within the budget
    assert choose(FRONT, None, 1.5)[0].number == 1              # least error reaching the speedup
    assert choose(FRONT, 0.05, 1.2)[0].number == 2              # both
    t, reason = choose(FRONT, None, None)
    assert t.number == 1 and "knee" in reason
    with pytest.raises(BudgetError, match=r"reaches 5× .* best achievable is 4.00×"):
        choose(FRONT, None, 5.0)
    with pytest.raises(BudgetError, match=r"reaches 3× within error 0.05: the best achievable is 1.30×"):
        choose(FRONT, 0.05, 3.0)


# --- the study: storage, continuation, bad inputs ------------------------------------------------------------


def test_rerun_continues_the_study(small_profile, tmp_path):
    path, _ = small_profile
    out = tmp_path / "p.json"
    r1 = optimize(path, trials=6, out=out, head_dim=128)
    r2 = optimize(path, trials=3, out=out, head_dim=128)
    assert r1.study_name == r2.study_name and r2.storage.endswith("p.json.optuna.db")
    assert r2.plan.search["settings"]["trials_total"] == 9
    assert load_plan(out).search["study"] == r2.study_name


def test_budgeted_plans_stay_within_the_budget(small_profile, tmp_path):
    path, _ = small_profile
    res = optimize(path, trials=5, out=tmp_path / "b.json", head_dim=128, max_error=0.15)
    assert res.figures["rel_err"] <= 0.15 + 1e-9 and "within error ≤ 0.15" in res.reason


def test_bad_inputs_give_clear_errors(small_profile, tmp_path):
    path, _ = small_profile
    # A profile of another schema version.
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"attnsearch"])
    meta["version"] = 99
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"attnsearch": json.dumps(meta).encode()}),
                   tmp_path / "v99.parquet")
    with pytest.raises(ProfileError, match="profile schema version 99 is not supported"):
        optimize(tmp_path / "v99.parquet", trials=1, out=tmp_path / "x.json")
    # A hardware table of another format.
    (tmp_path / "hw.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(HardwareError, match="format 'other' version 1 is not a hardware table"):
        optimize(path, hardware=str(tmp_path / "hw.json"), trials=1, out=tmp_path / "x.json")
    # A target no plan meets: the message names the best achievable.
    with pytest.raises(BudgetError, match=r"no plan found reaches 1000× predicted speedup: the best achievable is"):
        optimize(path, target_speedup=1000.0, trials=3, out=tmp_path / "t.json", head_dim=128)
    # A storage that cannot be reached.
    with pytest.raises(SearchError, match=r"storage 'postgresql://nobody@127.0.0.1:1/none' cannot be reached"):
        optimize(path, storage="postgresql://nobody@127.0.0.1:1/none", trials=1, out=tmp_path / "s.json", head_dim=128)
    with pytest.raises(SearchError, match="validate needs the model"):
        optimize(path, validate=1, trials=1, out=tmp_path / "v.json", head_dim=128)


def test_head_dim_comes_from_the_profile(small_profile, tmp_path):
    """The profile records head_dim (32 here); a table without it is a clear error, not a silent 128."""
    path, prof = small_profile
    assert prof.attention["head_dim"] == 32
    with pytest.raises(HardwareError, match="no dense \\(cuDNN\\) calibration for head_dim 32"):
        optimize(path, trials=1, out=tmp_path / "x.json")
