"""Every command refuses bad input before any work: one line, exit 2, nothing written or changed;
user text is printed as given (never read as markup)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cli_inputs import cli, one_error, tree


@pytest.fixture
def folder(tmp_path, random_profile) -> Path:
    random_profile(tmp_path / "good.parquet")
    return tmp_path


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_optimize_never_replaces_a_device(folder):
    before = tree(folder)
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", "/dev/null", "--trials", "1"))
    assert "/dev/null" in line and "character device" in line
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and not Path("/dev/null.optuna.db").exists()
    assert tree(folder) == before


def test_optimize_and_classify_never_replace_their_input(folder):
    before = tree(folder)
    good = folder / "good.parquet"
    assert "is also an input" in one_error(*cli("optimize", good, "--out", good, "--trials", "1"))
    assert "is also an input" in one_error(*cli("classify", good, "--csv", good))
    assert "is also an input" in one_error(*cli("classify", good, "--json", folder / "." / "good.parquet"))
    assert "is also an input" in one_error(*cli("merge", good, "--out", good))
    assert tree(folder) == before


def test_a_failed_optimize_leaves_no_study_file(folder):
    before = tree(folder)
    # --trials 0 on a new study: nothing to choose from, after the study was opened
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", folder / "plans" / "p.json",
                          "--trials", "0"), alone=False)
    assert "no completed trial" in line
    assert tree(folder) == before


def test_a_sqlite_storage_in_a_missing_folder_is_refused(folder, tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", folder / "p.json", "--trials", "1",
                          "--storage", f"sqlite:///{missing}/x.db"))
    assert "does not exist" in line and not (tmp_path / "nonexistent").exists()


def test_seed_and_trial_counts_are_checked_as_options(folder):
    before = tree(folder)
    assert "--seed must be ≥ 0, got -5" in one_error(*cli("optimize", folder / "good.parquet", "--seed", "-5",
                                                          "--out", folder / "p.json"))
    assert "--trials" in one_error(*cli("optimize", folder / "good.parquet", "--trials", "-1",
                                        "--out", folder / "p.json"))
    assert tree(folder) == before


def test_a_failed_report_leaves_no_folder(folder):
    (folder / "bad.json").write_text("{not json")
    before = tree(folder)
    line = one_error(*cli("report", folder / "bad.json", "--out", folder / "new" / "report"))
    assert str(folder / "bad.json") in line and "not valid JSON" in line
    assert tree(folder) == before
    (folder / "latin.json").write_bytes(b'{"a": "\xe9"}')
    assert "not UTF-8" in one_error(*cli("report", folder / "latin.json", "--out", folder / "r"))
    assert "not UTF-8" in one_error(*cli("validate", folder / "latin.json"))


def test_a_folder_is_not_called_missing(folder):
    assert "is a directory" in one_error(*cli("classify", folder))
    assert "is a directory" in one_error(*cli("validate", folder))
    assert "does not exist" in one_error(*cli("classify", folder / "nope.parquet"))


@pytest.mark.parametrize("args, words", [
    (["--tau", "1.5"], "--tau must be in [0, 1]"),
    (["--density-cap", "5"], "--density-cap must be in (0, 1]"),
    (["--steps", "0"], "--steps must be ≥ 1"),
    (["--steps", "-1"], "--steps must be ≥ 1"),
    (["--block-size", "0"], "--block-size must be one of 64, 128"),
    (["--queries", "0"], "--queries must be ≥ 1"),
    (["--seed", "-5"], "--seed must be ≥ 0"),
])
def test_profile_options_are_checked_before_profiling(tmp_path, args, words):
    out = tmp_path / "p.parquet"
    assert words in one_error(*cli("profile", "--model", "toy-vdit", "--out", out, *args))
    assert list(tmp_path.iterdir()) == []


def test_profile_refuses_an_existing_folder_as_output(tmp_path):
    (tmp_path / "out").mkdir()
    assert "a directory" in one_error(*cli("profile", "--model", "toy-vdit", "--out", tmp_path / "out"))
    assert tree(tmp_path) == {"out": None}


def test_profile_refuses_what_cannot_fit_before_building_the_model(tmp_path):
    line = one_error(*cli("profile", "-o", "height=100000", "-o", "width=100000", "--out", tmp_path / "p.parquet"))
    assert "needs at least" in line and "GB of memory" in line
    assert list(tmp_path.iterdir()) == []


def test_profile_warns_when_slow_on_cpu(capsys):
    import torch

    from attnsearch import Geometry
    from attnsearch.cli.profile import check_size

    if torch.cuda.is_available():
        pytest.skip("the warning is for CPU runs")
    check_size(Geometry(16, 64, 64), 128, 256, 4)  # N = 65,536: the dense attention alone takes minutes
    err = capsys.readouterr().err
    assert "warning: profiling N = 65,536 tokens on the CPU takes at least" in err
    check_size(Geometry(2, 4, 8), 64, 256, 4)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("grid, words", [
    ("[1, 2]", "grid must be a JSON object, got a list"),
    ('{"vertical_stripe": {"top_k": [1e300]}}', "top_k must hold integers in [1, 4096]"),
    ('{"vertical_stripe": {"rows": [1e300]}}', "rows must hold numbers in"),
    ('{"families": "diagonal"}', "grid.families must be a list"),
    ("{bad", "not valid JSON"),
])
def test_profile_grid_files_are_checked(tmp_path, grid, words):
    path = tmp_path / "grid.json"
    path.write_text(grid)
    assert words in one_error(*cli("profile", "--grid", path, "--out", tmp_path / "p.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.json"]


USER_MODELS = '''
import torch

class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("forward failed")

def raises():
    raise KeyError("no weights")

def forward_raises():
    from attnsearch import Geometry
    return Broken(), [torch.zeros(1)], Geometry(2, 4, 8)
'''


@pytest.mark.parametrize("fn, words", [("raises", "the factory raised KeyError"),
                                       ("forward_raises", "the forward raised RuntimeError: forward failed")])
def test_a_user_model_that_raises_is_one_line(tmp_path, fn, words):
    (tmp_path / "m.py").write_text(USER_MODELS)
    line = one_error(*cli("profile", "--model", f"{tmp_path / 'm.py'}:{fn}", "--out", tmp_path / "p.parquet"),
                     alone=False)
    assert words in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


@pytest.mark.parametrize("args, words", [
    (["--trials", "0"], "trials must be an integer ≥ 1"),
    (["--validate", "-1"], "validate must be an integer ≥ 0"),
    (["--max-error", "-1"], "max_error must be a finite number > 0"),
    (["--hardware", "no-such-gpu"], "no-such-gpu"),
    (["--max-density", "0"], "max_density must be in (0, 1]"),
    (["--model", "no-such-model"], "model must be one of mini-vdit, toy-vdit"),
])
def test_demo_checks_options_before_profiling(tmp_path, args, words):
    assert words in one_error(*cli("demo", "--out", tmp_path / "demo", *args))
    assert list(tmp_path.iterdir()) == []


def test_brackets_in_user_text_are_printed_as_given(folder):
    assert "x[postgres].parquet" in one_error(*cli("classify", folder / "x[postgres].parquet"))
    assert "a[/]b.parquet" in one_error(*cli("classify", folder / "a[/]b.parquet"))
    csv = folder / "res[abc]" / "o.csv"
    code, out = cli("classify", folder / "good.parquet", "--csv", csv)
    assert code == 0 and f"wrote {csv}" in out.replace("\n", "") and csv.exists()
    odd = folder / "odd[/]" / "p.json"
    code, out = cli("optimize", folder / "good.parquet", "--out", odd, "--trials", "2")
    assert code == 0 and str(odd) in out.replace("\n", ""), out


def test_the_postgres_hint_keeps_its_extra(folder):
    line = one_error(*cli("optimize", folder / "good.parquet", "--workers", "2", "--out", folder / "p.json"))
    assert "pip install 'attnsearch[postgres]'" in line


def test_version_and_usage_errors():
    from attnsearch import __version__

    code, out = cli("--version")
    assert code == 0 and out.strip() == f"attnsearch {__version__}"
    for args in (["profile", "--steps", "x"], ["bogus"], ["classify"], ["optimize", "p", "--no-such"]):
        line = one_error(*cli(*args))
        assert "(see --help)" in line


def test_a_resumed_run_progress_ends_at_its_target(folder):
    from attnsearch.search import optimize

    out = folder / "p.json"

    def interrupt(p):
        if p["trial"] >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(str(folder / "good.parquet"), out=out, trials=6, progress=interrupt)
    code, output = cli("optimize", folder / "good.parquet", "--out", out, "--trials", "6")
    assert code == 0, output
    assert "4/4" in output and "/6" not in output, output


def test_evaluate_never_writes_over_its_plan(folder):
    plan = folder / "evaluation.json"
    plan.write_text("{}")
    before = tree(folder)
    line = one_error(*cli("evaluate", plan, "--model", "mini-vdit", "--out", folder))
    assert "is also an input" in line
    assert tree(folder) == before


def test_merge_refuses_shards_that_leave_a_step_out(tmp_path, random_profile):
    import pyarrow.parquet as pq

    whole = random_profile(tmp_path / "whole.parquet", steps=3)
    table = pq.read_table(whole)
    for name, step in (("a.parquet", 0), ("c.parquet", 2)):  # the shard of step 1 is missing
        part = table.filter(pq.ParquetFile(whole).read().column("step").to_pandas().eq(step).to_numpy())
        pq.write_table(part, tmp_path / name)
    before = tree(tmp_path)
    line = one_error(*cli("merge", tmp_path / "a.parquet", tmp_path / "c.parquet", "--out", tmp_path / "m.parquet"))
    assert "lacks step(s) 1 of 0–2" in line
    assert tree(tmp_path) == before


def test_profile_prints_bracketed_output_paths_as_given(tmp_path):
    out = tmp_path / "res[abc]" / "o.parquet"
    code, output = cli("profile", "--model", "tests/tiny_models.py:tiny", "--queries", "16", "--out", out)
    assert code == 0 and out.exists(), output
    assert str(out) in output.replace("\n", "")


def test_optimize_names_a_validate_mode_it_does_not_know(folder, tmp_path):
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--validate", "1",
                          "--validate-mode", "frames"))
    assert "--validate-mode must be one of steps, trajectory, got 'frames'" in line
    assert not (tmp_path / "p.json").exists()


def test_optimize_names_an_execution_it_does_not_know_and_one_the_table_cannot_cost(folder, tmp_path):
    from synthetic import table_without_host

    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--execution", "compiled"))
    assert "--execution must be one of eager, graph, got 'compiled'" in line
    table = table_without_host(tmp_path)  # a table calibrated before host costs were measured
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--execution", "eager",
                          "--hardware", table))
    assert "no host dispatch costs measured" in line and "re-run `attnsearch calibrate`" in line
    assert not (tmp_path / "p.json").exists()


def test_sensitivity_inputs_are_checked_before_any_probe(folder):
    good = folder / "good.parquet"
    before = tree(folder)
    assert "--density must be" in one_error(*cli("sensitivity", good, "--density", "0", "--out", folder / "s.json"))
    assert "--trajectories must be ≥ 1" in one_error(*cli("sensitivity", good, "--trajectories", "0",
                                                          "--out", folder / "s.json"))
    assert "is also an input" in one_error(*cli("sensitivity", good, "--out", good))
    assert "missing.parquet" in one_error(*cli("sensitivity", folder / "missing.parquet", "--out", folder / "s.json"))
    assert tree(folder) == before
    (folder / "bad.json").write_text('{"format": "attnsearch-sensitivity", "version": 1}')
    before = tree(folder)
    line = one_error(*cli("optimize", good, "--sensitivity", folder / "bad.json", "--out", folder / "p.json"))
    assert "bad.json: malformed sensitivity record" in line
    assert "cannot read sensitivity record" in one_error(*cli("optimize", good, "--sensitivity",
                                                              folder / "none.json", "--out", folder / "p.json"))
    assert tree(folder) == before


def test_optimize_names_residual_steps_it_cannot_use(folder, tmp_path):
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--residual-steps", "0,a"))
    assert "--residual-steps must be comma-separated integers or profiled, got '0,a'" in line
    code, output = cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--residual-steps", "0,99")
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert code == 2 and "Traceback" not in output and len(errors) == 1, output
    assert "residual_steps: step 99 is outside the plan's steps" in errors[0]
    assert not (tmp_path / "p.json").exists()
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--residual-steps", "0",
                          "--residual-heads", "some"))
    assert "--residual-heads must be one of all, searched, got 'some'" in line
    line = one_error(*cli("optimize", folder / "good.parquet", "--out", tmp_path / "p.json", "--residual-heads",
                          "searched"))
    assert "--residual-heads searched: give --residual-steps too" in line
    assert not (tmp_path / "p.json").exists()


def test_optimize_chooses_among_profiled_sets_of_exact_steps(tmp_path):
    """``--residual-steps profiled``: the plan reuses at one of the profiles' sets and says so; with
    no profile of reuse it is one error line, exit 2, no plan."""
    import synthetic

    paths = []
    for i, steps in enumerate(((), (0, 2))):
        (tmp_path / f"s{i}").mkdir()
        paths.append(synthetic.large_profile(tmp_path / f"s{i}", steps=4, seed=3, fingerprint="cli",
                                             residual_steps=steps)[0])
    code, output = cli("optimize", *paths, "--out", tmp_path / "p.json", "--residual-steps", "profiled",
                       "--trials", "12", "--hardware", "nvidia-h100-80gb-hbm3", "--head-dim", "128", "--max-density", "0.9")
    assert code == 0, output
    from attnsearch import load_plan

    plan = load_plan(tmp_path / "p.json")
    assert plan.search["settings"]["exact_step_sets"] == ["none", "0,2"]
    assert set(plan.residual_steps) <= {0, 2}
    line = one_error(*cli("optimize", paths[0], "--out", tmp_path / "q.json", "--residual-steps", "profiled"), alone=False)
    assert "none of the profiles measured residual reuse" in line
    assert not (tmp_path / "q.json").exists()
    # the heads that reuse chosen per head, through the command: the plan's settings say so
    code, output = cli("optimize", paths[1], "--out", tmp_path / "h.json", "--residual-steps", "0,2",
                       "--residual-heads", "searched", "--trials", "4", "--hardware", "nvidia-h100-80gb-hbm3",
                       "--head-dim", "128")
    assert code == 0, output
    assert load_plan(tmp_path / "h.json").search["settings"]["residual_heads"] == "searched"
    # an exact step whose span is one step (the next is exact too) reuses nothing: the command says so
    code, output = cli("optimize", paths[0], "--out", tmp_path / "c.json", "--residual-steps", "0,1",
                       "--trials", "4", "--hardware", "nvidia-h100-80gb-hbm3", "--head-dim", "128")
    assert code == 0, output
    reused = load_plan(tmp_path / "c.json").residual_steps
    assert 0 not in reused
    assert f"reuses residuals from exact steps {', '.join(map(str, reused)) or 'none'}; 0" in " ".join(output.split())

