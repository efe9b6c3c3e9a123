"""``attnsearch optimize``: search the fastest plan under an accuracy budget and write it as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import (UsageError, check_at_least, check_choice, check_range, console, parse_options, progress_bar,
                     run, shown)


def optimize(
    profiles: list[Path] = typer.Argument(..., metavar="PROFILE...",
                                          help="Profile(s) of one model; several = several block sizes (or "
                                               "sets of exact steps, with --residual-steps profiled)."),
    out: Path = typer.Option(Path("plans/plan.json"), help="Plan JSON to write."),
    hardware: Optional[str] = typer.Option(None, help="Hardware table (path, GPU name or slug); default: this "
                                                      "GPU's, else the shipped H100 table."),
    max_error: Optional[float] = typer.Option(None, help="Error budget: fastest plan within it."),
    target_speedup: Optional[float] = typer.Option(None, help="Predicted attention speedup to reach."),
    max_density: Optional[float] = typer.Option(None, help="Mean kept-block density to stay within: the "
                                                           "lowest-error plan at or below it (a density sweep)."),
    trials: int = typer.Option(100, help="Optuna trials to run now (a rerun continues the study)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL; default SQLite beside the plan."),
    workers: int = typer.Option(1, help="Worker processes on the study (> 1: a shared storage, e.g. postgresql://; "
                                        "the same command on several machines shares the run)."),
    validate: int = typer.Option(0, help="Run the model on N inputs (or N trajectories) per trial; measured output "
                                         "error is the objective."),
    validate_mode: str = typer.Option("steps", help="steps: N recorded inputs, teacher-forced (N forwards a trial); "
                                                    "trajectory: N whole denoising trajectories, final outputs "
                                                    "compared (N × steps forwards a trial)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model for --validate (default: the profile's)."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the model factory (with --validate)."),
    head_dim: Optional[int] = typer.Option(None, help="Attention head_dim (default: from the profile/model, else 128)."),
    batch: int = typer.Option(1, help="Batch of the attention calls the plan will run, which the cost model prices "
                                      "(2 where classifier-free guidance batches both branches, as evaluate runs "
                                      "mini-vdit)."),
    seed: int = typer.Option(0, help="Sampler seed."),
    ulysses: int = typer.Option(1, help="Ulysses context-parallel degree the plan runs under (K GPUs, H/K heads "
                                        "each): plans are costed by their slowest rank."),
    non_portable: bool = typer.Option(False, "--non-portable", help="Mark the plan as valid at the profiled "
                                      "geometry only: apply and retarget then refuse every other geometry."),
    precisions: Optional[str] = typer.Option(None, help="Precisions heads may run in, comma-separated: native, fp8 "
                                                        "(default: those the profile measured; fp8 needs profile "
                                                        "--fp8 and an FP8-calibrated hardware table)."),
    sensitivity: Optional[Path] = typer.Option(None, help="Weigh each (step, layer, head) error by how much it moves "
                                                          "the output: a file from `attnsearch sensitivity`."),
    execution: Optional[str] = typer.Option(None, help="How the plan's calls will run: eager (a call costs at least "
                                                       "its host dispatch) or graph (CUDA graphs, compiled with "
                                                       "reduce-overhead: device time; the default)."),
    residual_steps: Optional[str] = typer.Option(None, help="Reuse residuals across steps: these steps "
                                                            "(comma-separated, e.g. 0,2,5,10) run exact attention and "
                                                            "the steps after each add what their masks missed there "
                                                            "(costed and counted in the density); profiled: each "
                                                            "profile's own (profile --residual-steps), the search "
                                                            "choosing among them."),
    residual_heads: str = typer.Option("all", help="With --residual-steps, which inexact heads reuse: all, or "
                                                   "searched (the solver decides per head; the others run their "
                                                   "masks alone and keep no residual: less memory)."),
) -> None:
    """Search the fastest plan under an accuracy budget and write it as JSON."""
    from ..costmodel import EXECUTIONS, load_hardware
    from .common import parse_int_list
    from ..costmodel.model import resolve_execution
    from ..search import optimize as run_search
    from ..search.problem import RESIDUAL_HEADS
    from ..search.study import PROFILED, check_outputs_of
    from ..layer_plan import PRECISIONS
    from ..search.sensitivity import resolve_sensitivity
    from ..search.validate import VALIDATE_MODES

    def work():
        check_range("--max-error", max_error, low=0)
        check_range("--target-speedup", target_speedup, low=0, low_open=True)
        check_range("--max-density", max_density, low=0, high=1, low_open=True)
        check_at_least("--trials", trials, 0, " (0: choose from the stored study)")
        for option_name, value, low in (("--validate", validate, 0), ("--seed", seed, 0), ("--head-dim", head_dim, 1),
                                        ("--ulysses", ulysses, 1), ("--batch", batch, 1)):
            check_at_least(option_name, value, low)
        check_choice("--validate-mode", validate_mode, VALIDATE_MODES)
        check_choice("--residual-heads", residual_heads, RESIDUAL_HEADS)
        if residual_heads != "all" and residual_steps is None:
            raise UsageError(f"--residual-heads {residual_heads}: give --residual-steps too (without reuse no head "
                             "reuses)")
        if execution is not None:
            check_choice("--execution", execution, EXECUTIONS)
            resolve_execution(load_hardware(hardware), execution)  # a table without host costs: said before any work
        exact_steps = None if residual_steps is None else parse_int_list("--residual-steps", residual_steps, PROFILED)
        wanted = None
        if precisions is not None:
            wanted = [p.strip() for p in precisions.split(",") if p.strip()]
            for p in wanted:
                check_choice("--precisions", p, PRECISIONS)
        check_outputs_of([str(p) for p in profiles], out, storage, workers)
        spec = None
        if validate:
            from ..models import load_model
            from ..profiling.profile_io import Profile

            name = model or Profile.load(profiles[0]).model["name"]
            spec = load_model(name, **parse_options(option))
        weights = resolve_sensitivity(sensitivity) if sensitivity is not None else None
        with progress_bar() as bar:
            task = bar.add_task("searching", total=trials)

            def progress(p: dict) -> None:  # advance per trial of this command (a rerun continues the study)
                bar.update(task, advance=1, total=p["trials"], description=f"trial {p['trial']}: {p['speedup']:.2f}× err "
                                                        f"{p['error']:.3g} (front {p['front']})")

            res = run_search([str(p) for p in profiles] if len(profiles) > 1 else str(profiles[0]),
                             hardware=hardware, max_error=max_error, target_speedup=target_speedup,
                             max_density=max_density, trials=trials,
                             storage=storage, validate=validate, validate_mode=validate_mode, out=out, model=spec,
                             head_dim=head_dim, batch=batch, seed=seed, progress=progress, workers=workers,
                             ulysses=ulysses,
                             portable=not non_portable, precisions=wanted, sensitivity=weights,
                             execution=execution, residual_steps=exact_steps, residual_heads=residual_heads)
        print_front(res)
        f = res.figures
        console.print(f"cost model: {shown(res.plan.search.get('hardware_note', res.hardware['device']))}, "
                      f"{res.hardware['execution']} calls")
        if weights is not None:
            w = weights.summary()
            console.print(f"errors weighted by {shown(sensitivity)}: steps {w['step_gain_ratio'] or 1:.3g}× apart, "
                          f"{weights.sites} {w['head_gain_ratio'] or 1:.3g}× apart")
        console.print(f"chose trial {res.trial}: {shown(res.reason)}")
        if exact_steps is not None:
            reused = res.plan.residual_steps
            idle = [] if exact_steps == PROFILED else sorted(set(exact_steps) - set(reused))
            console.print(f"reuses residuals from exact steps {', '.join(map(str, reused)) or 'none'}" + (
                f"; {', '.join(map(str, idle))} asked but not: an exact step reuses only where it starts a span of "
                "two steps or more outside dense steps" if idle else ""))
        console.print(f"predicted attention {f['attention_ms']:.2f} ms vs dense {f['dense_attention_ms']:.2f} ms: "
                      f"[bold]{f['speedup']:.2f}×[/], {'weighted ' if sensitivity else ''}rel_err {f['rel_err']:.4g}")
        if res.plan.search.get("settings", {}).get("precisions"):
            console.print(f"FP8 kept blocks on {res.plan.precision_share('fp8'):.0%} of the computed head-steps")
        console.print(f"plan → [bold]{shown(res.path)}[/] (study {shown(res.study_name)} in "
                      f"{shown(res.plan.search['storage'])})")

    run(work)


def print_front(res) -> None:
    """The Pareto front of a search (its first 15 plans), the chosen one starred."""
    front = res.pareto
    table = Table(title=f"Pareto front ({len(front)} plans; * = chosen)")
    cols = [c for c in ("attention_ms", "speedup", "error", "rel_l2", "psnr_db") if c in front and front[c].notna().any()]
    table.add_column("trial", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for r in front.head(15).itertuples():
        mark = "*" if r.trial == res.trial else ""
        table.add_row(f"{mark}{r.trial}", *[f"{getattr(r, c):.4g}" for c in cols])
    console.print(table)
