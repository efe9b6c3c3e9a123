"""The end-to-end demo on the embedded toy video DiT: profile → classify → optimize (validated)
→ report, plus a GPU benchmark of the plan (:func:`attnsearch.bench.bench_plan`) when CUDA is
present. ``attnsearch demo`` prints the headline; :func:`run_demo` returns it as a dict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .atomic_io import write_json_atomic
from .jsondata import nonfinite_to_null


def check_demo(out_dir: Path, *, steps: int, queries: int, trials: int, validate: int, max_error: float,
               seed: int, hardware: str | None) -> None:
    """ValueError naming the option unless every setting of :func:`run_demo` means something; run
    before any work (the hardware table is loaded, the outputs checked)."""
    import math

    from .atomic_io import OutputError, check_outputs
    from .costmodel import CostModel

    for name, value, low in (("steps", steps, 1), ("queries", queries, 1), ("trials", trials, 1),
                             ("validate", validate, 0), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"demo: {name} must be an integer ≥ {low}, got {value!r}")
    if not (isinstance(max_error, (int, float)) and math.isfinite(max_error) and max_error > 0):
        raise ValueError(f"demo: max_error must be a finite number > 0, got {max_error!r}")
    CostModel(hardware, head_dim=64)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    check_outputs([out_dir / "toy-vdit.parquet", out_dir / "plan.json", out_dir / "bench.json",
                   out_dir / "report" / "index.html"])


def run_demo(out_dir: Path, *, steps: int = 4, queries: int = 128, trials: int = 30, validate: int = 2,
             max_error: float = 0.02, seed: int = 0, hardware: str | None = None,
             on_stage: Callable[[str], None] | None = None,
             on_progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run the whole pipeline on toy-vdit into ``out_dir``; return the headline figures.

    on_stage(name) announces each stage; on_progress(stage, done, total) reports within one."""
    import torch

    from .models import load_model
    from .profiling.classify import classify
    from .profiling.profile_io import ProfileSettings
    from .profiling.profiler import profile_model
    from .report import write_report
    from .search import optimize

    stage = on_stage or (lambda name: None)
    progress = on_progress or (lambda *a: None)
    out_dir = Path(out_dir)
    check_demo(out_dir, steps=steps, queries=queries, trials=trials, validate=validate, max_error=max_error,
               seed=seed, hardware=hardware)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    head: dict[str, Any] = {}

    stage("profile toy-vdit")
    spec = load_model("toy-vdit", steps=steps, seed=seed)
    calls = {"n": 0}

    def on_call(step: int, layer: int) -> None:
        calls["n"] += 1
        progress("profile", calls["n"], steps * 6)

    prof = profile_model(spec, settings=ProfileSettings(queries=queries, seed=seed, block_size=64), on_call=on_call)
    prof_path = out_dir / "toy-vdit.parquet"
    prof.save(prof_path)

    stage("classify")
    labels = classify(prof, over_steps=True)
    truth = spec.ground_truth[["layer", "head", "pattern"]]
    agree = labels.merge(truth, on=["layer", "head"], suffixes=("", "_true"))
    head["classes"] = labels["pattern"].value_counts().to_dict()
    head["heads"] = len(labels)
    head["match_planted"] = int((agree["pattern"] == agree["pattern_true"]).sum())

    stage("optimize (validated on the model)")
    done = {"n": 0}

    def on_trial(p: dict) -> None:  # a rerun continues the study: count this run's trials only
        done["n"] += 1
        progress("optimize", done["n"], trials)

    res = optimize(prof_path, hardware=hardware, max_error=max_error, trials=trials, validate=validate,
                   model=spec, out=out_dir / "plan.json", seed=seed, progress=on_trial)
    plan = res.plan
    head["plan"] = str(res.path)
    head["plan_density"] = plan.mean_density
    head["predicted_speedup"] = res.figures["speedup"]
    head["hardware"] = res.hardware["device"]
    validation = plan.search.get("validation") or {}
    head["measured_rel_l2"] = validation.get("rel_l2")
    head["measured_psnr_db"] = validation.get("psnr_db")
    head["reason"] = res.reason

    inputs = [prof_path, res.path]
    if torch.cuda.is_available():
        stage("benchmark the plan on this GPU")
        from .bench import bench_plan
        from .costmodel import CostModel

        result = bench_plan(plan, head_dim=64, dtype=torch.float16)
        cost = CostModel(hardware, head_dim=64)
        for row, lp in zip(result["layer_plans"], plan.layer_plans()):
            row["predicted_ms"] = cost.layer_ms(lp)
        result["format"] = "attnsearch-bench"
        bench_path = write_json_atomic(out_dir / "bench.json", nonfinite_to_null(result))
        head["measured_speedup"] = result.get("speedup_vs_cudnn")
        head["gpu"] = result["card"]
        inputs.append(bench_path)

    stage("report")
    page = write_report(inputs, out_dir / "report", title="attnsearch demo: toy-vdit")
    head["report"] = str(page)
    head["seconds"] = time.perf_counter() - started
    return head
