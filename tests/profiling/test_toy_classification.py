"""The profiler + classifier recover toy-vdit's planted head families (≥ 98%)."""

from __future__ import annotations

import pytest

from attnsearch import classify
from attnsearch.models import load_model
from attnsearch.profiling.profile_io import ProfileSettings
from attnsearch.profiling.profiler import profile_model


@pytest.fixture(scope="module")
def toy_profile():
    spec = load_model("toy-vdit", steps=2)
    prof = profile_model(spec, settings=ProfileSettings(queries=128, block_size=64))
    return spec, prof


@pytest.mark.slow
def test_classifier_matches_planted_ground_truth(toy_profile):
    spec, prof = toy_profile
    truth = spec.ground_truth[["layer", "head", "pattern"]]
    assert prof.num_layers * prof.num_heads == len(truth)
    for labels in (classify(prof, tau=0.95, over_steps=True),
                   classify(prof, tau=0.95)[lambda t: t["step"] == 0]):
        merged = labels.merge(truth, on=["layer", "head"], suffixes=("", "_true"))
        agree = (merged["pattern"] == merged["pattern_true"]).mean()
        wrong = merged[merged["pattern"] != merged["pattern_true"]]
        assert agree >= 0.98, f"{agree:.1%} agreement; misclassified:\n{wrong.to_string()}"
    assert set(truth["pattern"]) == {"diagonal", "multi_diagonal", "vertical_stripe", "energy_decay", "dense"}


@pytest.mark.slow
def test_planted_stripes_are_found_exactly(toy_profile):
    import json

    spec, prof = toy_profile
    labels = classify(prof, over_steps=True).merge(spec.ground_truth, on=["layer", "head"], suffixes=("", "_true"))
    stripes = labels[labels["pattern_true"] == "vertical_stripe"]
    assert len(stripes)
    for r in stripes.itertuples():
        planted = set(json.loads(r.params_true)["key_blocks"])
        found = set(json.loads(r.params)["key_blocks"])
        assert planted <= found, (r.layer, r.head, planted, found)
