"""Where the exact steps go as a knob of the search: one profile per set of exact steps
(``residual_steps="profiled"``), each trial solving the problem of the set it took."""

from __future__ import annotations

import pytest

from attnsearch import load_plan
from attnsearch.costmodel import CostModel
from attnsearch.costmodel.table import DEFAULT_TABLE
from attnsearch.search import SearchError, optimize

import synthetic

SETS = ((), (0, 2), (0, 1, 3))


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    """The same random trajectory (4 steps × 2 layers × 4 heads) profiled without reuse and with
    reuse at two sets of exact steps."""
    out = []
    for i, steps in enumerate(SETS):
        folder = tmp_path_factory.mktemp(f"set{i}")
        out.append(synthetic.large_profile(folder, steps=4, seed=2, fingerprint="sets", residual_steps=steps)[0])
    return out


def _trials(res):
    import optuna

    study = optuna.load_study(study_name=res.study_name, storage=res.plan.search["storage"])
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_each_trial_solves_the_problem_of_the_set_it_took(profiles, tmp_path):
    """A trial's stored objectives are those of a search at its set alone (an independent Problem
    built from that set's profile), and the front holds plans of more than one set."""
    from attnsearch.profiling.profile_io import Profile
    from attnsearch.search.problem import Knobs, Problem
    from attnsearch.search.space import build_space

    res = optimize([str(p) for p in profiles], hardware=DEFAULT_TABLE, head_dim=128, trials=30, max_density=0.8,
                   residual_steps="profiled", out=tmp_path / "r.json")
    settings = res.plan.search["settings"]
    assert settings["residual_steps"] == "profiled" and settings["exact_step_sets"] == ["none", "0,1,3", "0,2"]
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    alone = {steps or None: Problem(build_space(Profile.load(p)), cm, residual_steps=steps or None)
             for p, steps in zip(profiles, SETS)}
    taken = set()
    for t in _trials(res):
        size, label = t.params["variant"].split(":")
        steps = None if label == "none" else tuple(int(s) for s in label.split(","))
        taken.add(steps)
        at = f"@{label}"
        k = Knobs(lam=t.params["lam"], tau=t.params["tau"], warmup=t.params[f"warmup{at}"],
                  dense_layers=t.params["dense_layers"], ranges=t.params[f"ranges{at}"], block_size=int(size))
        a = alone[steps].solve(k)
        assert t.values == pytest.approx((a.cost_ms, a.rel_err), rel=1e-6)
        plan = alone[steps].plan(a)
        assert set(plan.residual_steps) <= set(steps or ())  # a plan reuses at its set's steps only
    assert taken == {None, (0, 2), (0, 1, 3)}
    first = sorted(_trials(res), key=lambda t: t.number)[:3]  # the seeds: every set at the first λ
    assert len({t.params["variant"] for t in first}) == 3 and len({t.params["lam"] for t in first}) == 1
    chosen = load_plan(res.path)
    assert chosen.mean_density <= 0.8
    assert cm.plan_ms(chosen) == pytest.approx(chosen.predicted["attention_ms"], rel=0.01)


def test_the_choice_per_cap_is_the_least_error_over_every_set(profiles, tmp_path):
    """At a density cap the chosen plan has the least error among every trial's plan under it,
    whichever set each trial took (computed here from the stored trials and rebuilt plans)."""
    from attnsearch.search.study import _Search, _load_profiles

    res = optimize([str(p) for p in profiles], hardware=DEFAULT_TABLE, head_dim=128, trials=25, max_density=0.5,
                   residual_steps="profiled", out=tmp_path / "c.json")
    search = _Search.build(_load_profiles([str(p) for p in profiles], "profiled"), CostModel(DEFAULT_TABLE, head_dim=128),
                           max_error=None, validate=0, spec=None, backend="auto", residual_steps="profiled")
    under = []
    for t in _trials(res):
        pb = search.problem_of(t.params)
        plan = pb.plan(pb.solve(search.knobs_of(t.params)))
        if plan.mean_density <= 0.5:
            under.append((t.values[1], t.number, plan))
    best = min(under, key=lambda u: u[:2])
    assert res.trial == best[1]
    assert res.plan.residual_steps == best[2].residual_steps


def test_sets_of_exact_steps_are_refused_where_they_cannot_be_chosen(profiles, tmp_path):
    with pytest.raises(SearchError, match="none of the profiles measured residual reuse"):
        optimize([str(profiles[0])], hardware=DEFAULT_TABLE, head_dim=128, trials=1, residual_steps="profiled",
                 out=tmp_path / "a.json")
    with pytest.raises(SearchError, match="two profiles at block size 64 with exact steps 0,2"):
        optimize([str(profiles[1]), str(profiles[1])], hardware=DEFAULT_TABLE, head_dim=128, trials=1,
                 residual_steps="profiled", out=tmp_path / "b.json")
    with pytest.raises(SearchError, match=r"several sets of exact steps: residual_steps='profiled'"):
        optimize([str(p) for p in profiles[1:]], hardware=DEFAULT_TABLE, head_dim=128, trials=1,
                 out=tmp_path / "c.json")
    with pytest.raises(SearchError, match="residual_steps must be exact steps or 'profiled', got 'auto'"):
        optimize([str(profiles[1])], hardware=DEFAULT_TABLE, head_dim=128, trials=1, residual_steps="auto",
                 out=tmp_path / "d.json")
    assert not any(tmp_path.iterdir())  # nothing written
