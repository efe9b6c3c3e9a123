"""The end-to-end demo: profile → classify → (sensitivity) → optimize → evaluate → report, plus a
GPU benchmark of the plan (:func:`attnsearch.bench.bench_plan`) when CUDA is present.

On ``mini-vdit`` (the default: the project's trained video DiT, at 8 × 32 × 32 so that it runs on
a CPU) the output's sensitivity is measured per step and per layer
(:mod:`attnsearch.search.sensitivity`), the search weighs the profile's errors by it, the plan is
the lowest-error one within ``max_density``, and ``evaluate`` generates held-out videos dense,
under the plan and under the global-mask baselines at its density. On ``toy-vdit`` (planted heads)
the classes are checked against the planted truth and the plan is the fastest within ``max_error``
of output error measured on the model. ``attnsearch demo`` prints the headline; :func:`run_demo`
returns it as a dict."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .atomic_io import write_json_atomic
from .jsondata import nonfinite_to_null


def check_demo(out_dir: Path, *, model: str, steps: int, queries: int, trials: int | None, validate: int | None,
               max_error: float, max_density: float, seed: int, hardware: str | None) -> None:
    """ValueError naming the option unless every setting of :func:`run_demo` means something; run
    before any work (the hardware table is loaded, the outputs checked)."""
    import math

    from .atomic_io import OutputError, check_outputs
    from .costmodel import CostModel

    if model not in MODELS:
        raise ValueError(f"demo: model must be one of {', '.join(MODELS)}, got {model!r}")
    counts = (("steps", steps, 1), ("queries", queries, 1), ("trials", 1 if trials is None else trials, 1),
              ("validate", 0 if validate is None else validate, 0), ("seed", seed, 0))
    for name, value, low in counts:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"demo: {name} must be an integer ≥ {low}, got {value!r}")
    if not (isinstance(max_error, (int, float)) and math.isfinite(max_error) and max_error > 0):
        raise ValueError(f"demo: max_error must be a finite number > 0, got {max_error!r}")
    if not (isinstance(max_density, (int, float)) and 0 < max_density <= 1):
        raise ValueError(f"demo: max_density must be in (0, 1], got {max_density!r}")
    CostModel(hardware, head_dim=64)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    check_outputs([out_dir / f"{model}.parquet", out_dir / "plan.json", out_dir / "bench.json",
                   out_dir / "sensitivity.json", out_dir / "report" / "index.html",
                   out_dir / "evaluate" / "evaluation.json"])


#: The demo's models and what each is built with (mini-vdit at a size a CPU generates in seconds).
MODELS = {
    "mini-vdit": {"conditions": 2, "frames": 8, "height": 32, "width": 32},
    "toy-vdit": {},
}
#: Held-out videos the mini-vdit demo evaluates, and the baselines beside the plan.
EVAL_SEEDS = 2
BASELINES = ("energy_decay", "window")
#: Search trials unless told: a trial validated on the model costs its forwards, one weighted by
#: the sensitivity only an exact solve.
TRIALS = {"validated": 15, "weighted": 100}


def run_demo(out_dir: Path, *, model: str = "mini-vdit", steps: int = 8, queries: int = 128, trials: int | None = None,
             validate: int | None = None, max_error: float = 0.02, max_density: float = 0.3, seed: int = 0,
             hardware: str | None = None, on_stage: Callable[[str], None] | None = None,
             on_progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run the whole pipeline on ``model`` (a key of :data:`MODELS`) into ``out_dir``; return the
    headline figures.

    ``validate``: model inputs (steps, from the first) each trial's plan is run on; None: 0 on
    mini-vdit (its errors are weighed by the measured sensitivity instead), 2 on toy-vdit.
    ``trials``: None: :data:`TRIALS` for the search's kind. on_stage(name) announces each stage;
    on_progress(stage, done, total) reports within one."""
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
    check_demo(out_dir, model=model, steps=steps, queries=queries, trials=trials, validate=validate,
               max_error=max_error, max_density=max_density, seed=seed, hardware=hardware)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    head: dict[str, Any] = {}

    stage(f"profile {model}")
    spec = load_model(model, steps=steps, seed=seed, **MODELS[model])
    head["model"], head["geometry"] = model, str(spec.geometry)
    calls = {"n": 0}

    def on_call(step: int, layer: int) -> None:
        calls["n"] += 1
        progress("profile", calls["n"], None)

    prof = profile_model(spec, settings=ProfileSettings(queries=queries, seed=seed, block_size=64), on_call=on_call)
    prof_path = out_dir / f"{model}.parquet"
    prof.save(prof_path)

    stage("classify")
    labels = classify(prof, over_steps=True)
    head["classes"] = labels["pattern"].value_counts().to_dict()
    head["heads"] = len(labels)
    if spec.ground_truth is not None:
        truth = spec.ground_truth[["layer", "head", "pattern"]]
        agree = labels.merge(truth, on=["layer", "head"], suffixes=("", "_true"))
        head["match_planted"] = int((agree["pattern"] == agree["pattern_true"]).sum())

    generates = model == "mini-vdit"
    if validate is None:
        validate = 0 if generates else 2
    if trials is None:
        trials = TRIALS["validated" if validate else "weighted"]
    inputs = [prof_path]
    sensitivity = None
    if generates:
        stage("sensitivity (each step's and each layer's attention error, probed on whole trajectories)")
        from .search.sensitivity import measure_sensitivity

        sensitivity = measure_sensitivity(prof, spec, sites="layers",
                                          progress=lambda d: progress("sensitivity", d["done"], d["total"]))
        sensitivity.save(out_dir / "sensitivity.json")
        inputs.append(out_dir / "sensitivity.json")
        head["sensitivity"] = {"path": str(out_dir / "sensitivity.json"), **sensitivity.summary()}
    stage("optimize (validated on the model)" if validate else "optimize (errors weighted by the sensitivity)")
    done = {"n": 0}

    def on_trial(p: dict) -> None:  # a rerun continues the study: count this run's trials only
        done["n"] += 1
        progress("optimize", done["n"], trials)

    budget = {"max_density": max_density} if generates else {"max_error": max_error}
    res = optimize(prof_path, hardware=hardware, trials=trials, validate=validate, model=spec if validate else None,
                   out=out_dir / "plan.json", seed=seed, progress=on_trial, sensitivity=sensitivity, **budget)
    plan = res.plan
    head["plan"] = str(res.path)
    head["plan_density"] = plan.mean_density
    head["predicted_speedup"] = res.figures["speedup"]
    head["hardware"] = res.hardware["device"]
    validation = plan.search.get("validation") or {}
    head["measured_rel_l2"] = validation.get("rel_l2")
    head["validated_steps"] = validate
    head["measured_psnr_db"] = validation.get("psnr_db")
    head["reason"] = res.reason

    inputs.append(res.path)
    if generates:
        stage(f"evaluate on {EVAL_SEEDS} held-out videos (dense vs plan vs global masks)")
        from .evaluate import evaluate, load_generator, write_outputs

        size = MODELS[model]
        generator = load_generator(model, frames=size["frames"], height=size["height"], width=size["width"])
        ev = evaluate(plan, generator, seeds=EVAL_SEEDS, baselines=BASELINES, labels=["plan"],
                      hardware=hardware, progress=lambda d: progress("evaluate", d["done"], d["total"]))
        made = write_outputs(ev, out_dir / "evaluate", figure_videos=EVAL_SEEDS)
        head["evaluation"] = str(made["index"])
        head["quality"] = {r.label: {k: r.overall[k] for k in ("psnr_db", "ssim")} | {"density": r.density}
                           for r in ev.runs}
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
    page = write_report(inputs, out_dir / "report", title=f"attnsearch demo: {model}")
    head["report"] = str(page)
    head["seconds"] = time.perf_counter() - started
    return head
