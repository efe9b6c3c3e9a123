"""The CLI end to end on a tiny user model, and its one-line errors on bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnsearch import load_plan
from attnsearch.cli import app
from attnsearch.profiling.profile_io import Profile
from synthetic import native_only_table

runner = CliRunner()
TINY = "tests/tiny_models.py:tiny"


def test_profile_then_classify(tmp_path):
    out = tmp_path / "tiny.parquet"
    res = runner.invoke(app, ["profile", "--model", TINY, "--queries", "16", "--out", str(out), "-o", "steps=3"])
    assert res.exit_code == 0, res.output
    assert "classes per layer" in res.output
    prof = Profile.load(out)
    assert prof.num_steps == 3 and prof.num_layers == 2 and prof.num_heads == 2
    assert prof.model["name"] == TINY and prof.model["fingerprint"]
    assert prof.settings.queries == 16 and prof.settings.block_size == 64

    csv, js = tmp_path / "labels.csv", tmp_path / "labels.json"
    res = runner.invoke(app, ["classify", str(out), "--csv", str(csv), "--json", str(js)])
    assert res.exit_code == 0, res.output
    labels = pd.read_csv(csv)
    assert len(labels) == 4 and set(labels.columns) >= {"layer", "head", "pattern", "density", "recall", "stability"}
    assert len(json.loads(js.read_text())) == 4


def test_profile_fp8_adds_the_fp8_error(tmp_path):
    out = tmp_path / "tiny.parquet"
    res = runner.invoke(app, ["profile", "--model", TINY, "--queries", "16", "--fp8", "--out", str(out),
                              "-o", "steps=1"])
    assert res.exit_code == 0, res.output
    prof = Profile.load(out)
    assert prof.settings.precisions == ("native", "fp8")
    dense = prof.table[prof.table["pattern"] == "dense"]
    assert (dense["rel_err_fp8"] > dense["rel_err"]).all()


def test_optimize_names_a_precision_it_cannot_search(tmp_path):
    out = tmp_path / "tiny.parquet"
    assert runner.invoke(app, ["profile", "--model", TINY, "--queries", "16", "--fp8", "--out", str(out),
                               "-o", "steps=1"]).exit_code == 0
    res = runner.invoke(app, ["optimize", str(out), "--precisions", "native,int4", "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "--precisions must be one of native, fp8, got 'int4'" in res.output
    # a table without FP8 kernels: the search says so instead of dropping FP8 silently
    res = runner.invoke(app, ["optimize", str(out), "--trials", "1", "--head-dim", "64", "--out", str(tmp_path / "p.json"),
                              "--hardware", native_only_table(tmp_path)])
    assert res.exit_code == 2 and "has no fp8 kernel" in res.output and "--precisions native" in res.output
    assert not (tmp_path / "p.json").exists()
    res = runner.invoke(app, ["optimize", str(out), "--trials", "1", "--precisions", "native", "--head-dim", "64",
                              "--hardware", native_only_table(tmp_path),
                              "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "FP8 kept blocks" not in res.output                      # native only: nothing to say
    # the shipped H100 table prices FP8: the search may give heads FP8 and says how many it did
    res = runner.invoke(app, ["optimize", str(out), "--trials", "3", "--head-dim", "64", "--out", str(tmp_path / "q.json")])
    assert res.exit_code == 0, res.output
    plan = load_plan(tmp_path / "q.json")
    assert f"FP8 kept blocks on {plan.precision_share('fp8'):.0%} of the computed head-steps" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "q.json")])
    assert res.exit_code == 0 and ("FP8 kept blocks" in res.output) == (plan.precision_share("fp8") > 0)


def test_optimize_prices_the_batch_it_is_given(tmp_path):
    """--batch is the batch the cost model prices (CFG batched: 2); the plan records it, and its
    predicted figures are the cost model's at that batch."""
    from attnsearch.costmodel import CostModel

    out = tmp_path / "tiny.parquet"
    assert runner.invoke(app, ["profile", "--model", TINY, "--queries", "16", "--out", str(out),
                               "-o", "steps=1"]).exit_code == 0
    res = runner.invoke(app, ["optimize", str(out), "--batch", "0", "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "--batch" in res.output and not (tmp_path / "p.json").exists()
    for batch in (1, 2):
        res = runner.invoke(app, ["optimize", str(out), "--trials", "2", "--head-dim", "64", "--batch", str(batch),
                                  "--out", str(tmp_path / f"b{batch}.json")])
        assert res.exit_code == 0, res.output
        plan = load_plan(tmp_path / f"b{batch}.json")
        assert plan.search["settings"]["batch"] == batch and plan.costed_call() == (64, batch)
        cm = CostModel(None, head_dim=64, batch=batch)
        assert plan.predicted["dense_attention_ms"] == pytest.approx(cm.dense_plan_ms(plan))


def test_steps_beyond_inputs_is_an_error(tmp_path):
    res = runner.invoke(app, ["profile", "--model", TINY, "--steps", "5", "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2
    assert "--steps 5 exceeds" in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    res = runner.invoke(app, ["classify", str(tmp_path / "missing.parquet")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["profile", "--model", "no-such-model"])
    assert res.exit_code == 2 and "no-such-model" in res.output
    res = runner.invoke(app, ["profile", "--model", TINY, "--block-size", "96", "--out", str(tmp_path / "y.parquet")])
    assert res.exit_code == 2 and "--block-size" in res.output
    assert "Traceback" not in res.output


def test_bench_rejects_an_unknown_timing_mode_before_anything_runs(tmp_path):
    out = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench", "--timing", "wallclock", "--out", str(out)])
    assert res.exit_code == 2 and "--timing must be one of queued, synced, sustained" in res.output
    assert "Traceback" not in res.output and not out.exists()
    res = runner.invoke(app, ["bench", "--precision", "int8", "--out", str(out)])
    assert res.exit_code == 2 and "--precision must be one of native, fp8, got 'int8'" in res.output
    res = runner.invoke(app, ["bench", "--precision", "fp8", "--plan", str(tmp_path / "p.json"), "--out", str(out)])
    assert res.exit_code == 2 and "a plan's head groups name their own precision" in res.output


def test_validate_names_the_fp8_share_of_a_plan(tmp_path):
    from attnsearch import Geometry
    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry, write_plan

    geom = Geometry(3, 8, 8)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("energy_decay", {"decay": 0.5})], geom, 64,
                              precisions=["fp8", "native"])
    path = write_plan(Plan(geom, 64, 4, 1, 2, (ScheduleEntry(0, 1, None), ScheduleEntry(1, 4, (lp,)))),
                      tmp_path / "p.json")
    res = runner.invoke(app, ["validate", str(path)])
    # steps 1-3: one of two heads FP8; step 0 dense (two native heads): 3 of 8 head-steps
    assert res.exit_code == 0 and "FP8 kept blocks: 38% of the computed head-steps" in res.output


MINI = ["-o", "frames=4", "-o", "height=32", "-o", "width=32", "-o", "steps=2", "-o", "conditions=1"]


def test_sensitivity_then_a_weighted_search(tmp_path):
    """profile → sensitivity → optimize --sensitivity on the shipped mini-vdit at 256 tokens: the
    record covers every step and head, and the plan names the weights its search used."""
    from attnsearch.search.sensitivity import Sensitivity

    prof, sens, plan = tmp_path / "p.parquet", tmp_path / "s.json", tmp_path / "plan.json"
    res = runner.invoke(app, ["profile", "--model", "mini-vdit", *MINI, "--out", str(prof)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sensitivity", str(prof), *MINI, "--out", str(sens)])
    assert res.exit_code == 0, res.output
    assert "steps differ up to" in res.output
    record = Sensitivity.load(sens)
    assert record.shape == (2, 6, 4) and record.trajectories == 1 and (record.head_gain > 0).all()
    res = runner.invoke(app, ["optimize", str(prof), "--sensitivity", str(sens), "--trials", "8", "--max-density",
                              "0.6", "--out", str(plan)])
    assert res.exit_code == 0, res.output
    assert "weighted rel_err" in res.output and "errors weighted by" in res.output
    assert load_plan(plan).search["error_weights"]["digest"] == record.digest()
    res = runner.invoke(app, ["sensitivity", str(prof), *MINI, "--per-layer", "--out", str(tmp_path / "l.json")])
    assert res.exit_code == 0, res.output
    layers = Sensitivity.load(tmp_path / "l.json")
    assert layers.sites == "layers" and (layers.head_gain == layers.head_gain[:, :1]).all()


def test_validate_names_a_plans_exact_steps(tmp_path):
    from attnsearch import Geometry
    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry, write_plan

    geom = Geometry(3, 8, 8)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("energy_decay", {"decay": 0.5})], geom, 64)
    plan = Plan(geom, 64, 6, 1, 2, (ScheduleEntry(0, 6, (lp,)),)).with_residual([0, 3])
    res = runner.invoke(app, ["validate", str(write_plan(plan, tmp_path / "p.json"))])
    assert res.exit_code == 0 and "residual reuse: exact steps 0, 3" in res.output
    text = " ".join(res.output.split())
    assert f"mean density {plan.mean_density:.3f} with them" in text
    # 2 inexact heads × 192 tokens × head_dim 128 × bf16, one layer
    assert plan.residual_bytes() == 2 * 192 * 128 * 2
    assert "the residuals hold 96.0 KiB during a run in bf16 (49.5 KiB in FP8) at head_dim 128, batch 1" in text
    assert plan.residual_bytes(precision="fp8") == 2 * 192 * (128 + 4)  # a byte per value, a float32 scale per row
    assert "reusing heads" not in text  # every inexact head reuses
    opted = Plan(geom, 64, 6, 1, 2, (ScheduleEntry(0, 6, (lp.with_reuse([False, True]),)),)).with_residual([0, 3])
    assert opted.reuse_counts() == (2, 4)  # one of two heads, in each of the two residual entries
    res = runner.invoke(app, ["validate", str(write_plan(opted, tmp_path / "o.json"))])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "reusing heads: 2 of 4 inexact head-layers of the residual entries reuse" in text
    assert "the residuals hold 48.0 KiB" in text  # one head's


def test_byte_sizes_read_in_mib_below_a_gib_and_in_gib_above():
    from attnsearch.cli.common import byte_size

    assert byte_size(1536) == "1.5 KiB" and byte_size(3 << 19) == "1.5 MiB" and byte_size((1 << 30) - 1) == "1,024.0 MiB"
    assert byte_size(int(57.68 * 2**30)) == "57.68 GiB"
