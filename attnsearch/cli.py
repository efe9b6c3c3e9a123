"""The ``attnsearch`` command line: the I/O edge of the pipeline.

Every command turns bad input into one clear line on stderr and a non-zero exit; library errors
carry the field they are about, so the CLI only has to print them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .atomic_io import write_text_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Profile, search and run the sparse attention of video diffusion transformers.")
console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _run(fn):
    """Call ``fn`` and turn the library's input errors into one line and exit code 2."""
    from .geometry import GeometryError
    from .patterns import PatternError
    from .profiler import ProfileError

    try:
        return fn()
    except (UsageError, GeometryError, PatternError, ProfileError, FileNotFoundError, OSError) as exc:
        fail(str(exc))
    except ValueError as exc:  # model adapters and plan validation raise ValueError subclasses
        fail(str(exc))


def _parse_options(options: list[str]) -> dict:
    """``-o key=value`` pairs; values are JSON when they parse as JSON, else strings."""
    out = {}
    for item in options:
        if "=" not in item:
            raise UsageError(f"--option {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _auto_block_size(num_tokens: int) -> int:
    # Short sequences need the finer tiling to show any structure; long ones run faster at 128.
    return 64 if num_tokens <= 8192 else 128


def _print_class_table(labels, title: str) -> None:
    from .classifier import class_counts

    counts = class_counts(labels)
    table = Table(title=title, show_lines=False)
    table.add_column("layer", justify="right")
    short = {"diagonal": "diag", "multi_diagonal": "multi-diag", "vertical_stripe": "stripe",
             "energy_decay": "decay", "dense": "dense"}
    for name in counts.columns:
        table.add_column(short.get(name, name), justify="right")
    if "stability" in labels:
        table.add_column("stability", justify="right")
        stability = labels.groupby("layer")["stability"].mean()
    for layer, row in counts.iterrows():
        cells = [str(layer)] + [str(int(x)) if x else "·" for x in row]
        if "stability" in labels:
            cells.append(f"{stability[layer]:.2f}")
        table.add_row(*cells)
    total = counts.sum()
    table.add_row("all", *[str(int(x)) for x in total], *([""] if "stability" in labels else []), style="bold")
    console.print(table)


@app.command()
def profile(
    model: str = typer.Option("toy-vdit", "--model", "-m",
                              help="Registered name (toy-vdit, minilm) or module:function / file.py:function "
                                   "returning (model, inputs, geometry)."),
    steps: Optional[int] = typer.Option(None, help="Model forwards (denoising steps) to profile; default: all inputs."),
    queries: int = typer.Option(256, help="Sampled query rows per call (exact softmax rows)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    block_size: Optional[int] = typer.Option(None, "--block-size", "-b",
                                             help="64 or 128; default 64 for N ≤ 8192, else 128."),
    grid: Optional[Path] = typer.Option(None, help="JSON file overriding the candidate grid."),
    map_size: int = typer.Option(64, help="Side of the stored block-level attention maps."),
    tau: float = typer.Option(0.95, help="Recall a class must reach (summary only; the profile keeps all)."),
    density_cap: float = typer.Option(0.75, help="Above this density a head is dense (summary only)."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value passed to the model factory."),
    out: Optional[Path] = typer.Option(None, help="Output Parquet file; default profiles/<model>.parquet."),
) -> None:
    """Record per-head attention statistics of a model and classify every head."""
    from .candidates import CandidateGrid
    from .classifier import classify
    from .distributed import is_distributed, profile_sharded, shard_steps, world
    from .models import load_model
    from .profiler import ProfileSettings, profile_model

    def work():
        opts = _parse_options(option)
        spec = load_model(model, **opts)
        bs = block_size or _auto_block_size(spec.geometry.num_tokens)
        grid_obj = CandidateGrid.from_dict(json.loads(grid.read_text())) if grid else CandidateGrid()
        settings = ProfileSettings(queries=queries, seed=seed, block_size=bs, map_size=map_size, grid=grid_obj)
        n_steps = min(steps, len(spec.inputs)) if steps else len(spec.inputs)
        if steps is not None and steps > len(spec.inputs):
            raise UsageError(f"--steps {steps} exceeds the {len(spec.inputs)} inputs model {spec.name!r} provides")
        target = out or Path("profiles") / f"{spec.name.replace('/', '_').replace(':', '_')}.parquet"
        console.print(f"[bold]{spec.name}[/]: geometry {spec.geometry}, block size {bs}, "
                      f"{n_steps} step(s), {queries} sampled queries per call")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as bar:
            task = bar.add_task("profiling", total=n_steps)
            last = {"step": -1}

            def on_call(step: int, layer: int) -> None:
                if step != last["step"]:
                    if last["step"] >= 0:
                        bar.advance(task)
                    last["step"] = step
                bar.update(task, description=f"step {step} layer {layer}")

            started = time.perf_counter()
            if is_distributed():
                rank, size = world()
                bar.update(task, total=len(shard_steps(n_steps, rank, size)))
                prof = profile_sharded(spec, n_steps, settings, target, on_call)
            else:
                prof = profile_model(spec, steps=n_steps, settings=settings, on_call=on_call)
            bar.update(task, completed=bar.tasks[0].total, description="profiled")
        if prof is None:  # a rank other than 0 under torchrun: its shard is written, rank 0 merges
            return
        prof.save(target)
        labels = classify(prof, tau=tau, density_cap=density_cap, over_steps=True)
        _print_class_table(labels, f"classes per layer (τ={tau}, density cap {density_cap})")
        console.print(f"{prof.num_layers} layers × {prof.num_heads} heads × {prof.num_steps} steps in "
                      f"{time.perf_counter() - started:.1f} s → [bold]{target}[/]")

    _run(work)


@app.command("classify")
def classify_cmd(
    profile_path: Path = typer.Argument(..., metavar="PROFILE", help="A profile written by `attnsearch profile`."),
    tau: float = typer.Option(0.95, help="Recall a class must reach."),
    density_cap: float = typer.Option(0.75, help="Above this density a head is dense."),
    per_step: bool = typer.Option(False, "--per-step", help="One label per (step, layer, head)."),
    csv: Optional[Path] = typer.Option(None, help="Also write the labels as CSV."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the labels as JSON records."),
) -> None:
    """Print the class of every head of a profile (and export it)."""
    from .classifier import classify
    from .profiler import Profile

    def work():
        prof = Profile.load(profile_path)
        labels = classify(prof, tau=tau, density_cap=density_cap, over_steps=not per_step)
        if per_step:
            _print_class_table(labels[labels["step"] == labels["step"].max()], f"classes at step {labels['step'].max()}")
        else:
            _print_class_table(labels, f"classes per layer over {prof.num_steps} step(s) (τ={tau})")
        table = Table(show_lines=False)
        for col in ["layer", "head", "pattern", "candidate", "density", "recall"] + (["stability"] if not per_step else []):
            table.add_column(col)
        for r in labels.itertuples():
            cells = [str(r.layer), str(r.head), r.pattern, r.candidate, f"{r.density:.3f}", f"{r.recall:.3f}"]
            if not per_step:
                cells.append(f"{r.stability:.2f}")
            table.add_row(*cells)
        if not per_step:
            console.print(table)
        if csv:
            _atomic_write(csv, labels.to_csv(index=False))
        if json_out:
            _atomic_write(json_out, labels.to_json(orient="records", indent=1))

    _run(work)


@app.command()
def optimize(
    profiles: list[Path] = typer.Argument(..., metavar="PROFILE...",
                                          help="Profile(s) of one model; several = several block sizes."),
    out: Path = typer.Option(Path("plans/plan.json"), help="Plan JSON to write."),
    hardware: Optional[str] = typer.Option(None, help="Hardware table (path, GPU name or slug); default: this "
                                                      "GPU's, else the shipped H100 table."),
    max_error: Optional[float] = typer.Option(None, help="Error budget: fastest plan within it."),
    target_speedup: Optional[float] = typer.Option(None, help="Predicted attention speedup to reach."),
    trials: int = typer.Option(100, help="Optuna trials to run now (a rerun continues the study)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL; default SQLite beside the plan."),
    workers: int = typer.Option(1, help="Worker processes on the study (> 1: a shared storage, e.g. postgresql://; "
                                        "the same command on several machines shares the run)."),
    validate: int = typer.Option(0, help="Run the model on N inputs per trial; measured output error is the objective."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model for --validate (default: the profile's)."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the model factory (with --validate)."),
    head_dim: Optional[int] = typer.Option(None, help="Attention head_dim (default: from the profile/model, else 128)."),
    seed: int = typer.Option(0, help="Sampler seed."),
) -> None:
    """Search the fastest plan under an accuracy budget and write it as JSON."""
    from .search import optimize as run_search

    def work():
        spec = None
        if validate:
            from .models import load_model
            from .profiler import Profile

            name = model or Profile.load(profiles[0]).model["name"]
            spec = load_model(name, **_parse_options(option))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("searching", total=trials)

            def progress(p: dict) -> None:  # advance per trial of this run (a rerun continues the study)
                bar.update(task, advance=1, description=f"trial {p['trial']}: {p['speedup']:.2f}× err "
                                                        f"{p['error']:.3g} (front {p['front']})")

            res = run_search([str(p) for p in profiles] if len(profiles) > 1 else str(profiles[0]),
                             hardware=hardware, max_error=max_error, target_speedup=target_speedup, trials=trials,
                             storage=storage, validate=validate, out=out, model=spec, head_dim=head_dim, seed=seed,
                             progress=progress, workers=workers)
        _print_front(res)
        f = res.figures
        console.print(f"cost model: {res.plan.search.get('hardware_note', res.hardware['device'])}")
        console.print(f"chose trial {res.trial}: {res.reason}")
        console.print(f"predicted attention {f['attention_ms']:.2f} ms vs dense {f['dense_attention_ms']:.2f} ms: "
                      f"[bold]{f['speedup']:.2f}×[/], rel_err {f['rel_err']:.4g}")
        console.print(f"plan → [bold]{res.path}[/] (study {res.study_name} in {res.plan.search['storage']})")

    _run(work)


def _print_front(res) -> None:
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


@app.command()
def calibrate(
    out_dir: Path = typer.Option(Path("kernels"), "--out", help="Folder of hardware tables."),
    quick: bool = typer.Option(False, help="A coarser grid (for a first look)."),
    budget_s: float = typer.Option(1e9, help="Stop measuring after this many seconds."),
    points: Optional[Path] = typer.Option(None, help="Also save the raw measured points here (JSON)."),
) -> None:
    """Time the runtime kernels and dense cuDNN on this GPU and fit the cost model (CUDA)."""
    import torch

    def work():
        if not torch.cuda.is_available():
            raise UsageError("calibrate measures this machine's GPU and needs CUDA; without one, optimize uses "
                             "a shipped table (--hardware)")
        from .costmodel.calibrate import calibrate as run_calibration

        path = run_calibration(out_dir, quick=quick, budget_s=budget_s, points_path=points)
        console.print(f"hardware table → [bold]{path}[/]")

    _run(work)


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the profile, plan, study and report."),
    steps: int = typer.Option(4, help="Denoising steps of toy-vdit to profile."),
    queries: int = typer.Option(128, help="Sampled query rows per call."),
    trials: int = typer.Option(30, help="Search trials."),
    validate: int = typer.Option(2, help="Model inputs each trial is validated on."),
    max_error: float = typer.Option(0.02, help="Budget of measured output error (relative L2)."),
    hardware: Optional[str] = typer.Option(None, help="Cost-model table (default: this GPU's, else H100)."),
) -> None:
    """The whole pipeline on the embedded toy video DiT, then the headline."""
    from .demo import run_demo

    def work():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            tasks: dict[str, int] = {}

            def on_stage(name: str) -> None:
                console.print(f"[bold]▸ {name}[/]")

            def on_progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done)

            h = run_demo(out, steps=steps, queries=queries, trials=trials, validate=validate, max_error=max_error,
                         hardware=hardware, on_stage=on_stage, on_progress=on_progress)
        classes = ", ".join(f"{n} {k}" for k, n in sorted(h["classes"].items(), key=lambda kv: -kv[1]))
        console.print()
        console.print(f"[bold]classes found[/]   {classes} ({h['match_planted']}/{h['heads']} match the planted truth)")
        console.print(f"[bold]plan[/]            mean block density {h['plan_density']:.2f} → {h['plan']}")
        console.print(f"[bold]predicted[/]       {h['predicted_speedup']:.2f}× attention speedup on {h['hardware']} "
                      "(toy size: ~23 µs per call, launch-bound)")
        if h.get("measured_rel_l2") is not None:
            console.print(f"[bold]measured error[/]  {h['measured_rel_l2']:.4f} relative L2, "
                          f"{h['measured_psnr_db']:.1f} dB PSNR vs dense (budget {max_error})")
        if h.get("measured_speedup"):
            console.print(f"[bold]measured[/]        {h['measured_speedup']:.2f}× on {h['gpu']}")
        console.print(f"[bold]report[/]          {h['report']}  ({h['seconds']:.0f} s)")

    _run(work)


@app.command()
def merge(
    shards: list[Path] = typer.Argument(..., metavar="SHARD...", help="Profile shards (e.g. from torchrun ranks)."),
    out: Path = typer.Option(..., help="Merged profile (Parquet)."),
) -> None:
    """Join profile shards of one model (disjoint steps) into one profile."""
    from .distributed import merge_shards

    def work():
        prof = merge_shards(list(shards))
        prof.save(out)
        console.print(f"merged {len(shards)} shard(s): {prof.num_steps} steps × {prof.num_layers} layers × "
                      f"{prof.num_heads} heads → [bold]{out}[/]")

    _run(work)


@app.command()
def validate(plan_path: Path = typer.Argument(..., metavar="PLAN", help="A plan JSON file.")) -> None:
    """Check a plan file against the format; print what it runs, or the offending field."""
    from .plan import load_plan

    def work():
        plan = load_plan(plan_path)
        sparse = [e for e in plan.schedule if e.layers is not None]
        families: dict[str, int] = {}
        for e in sparse:
            for lp in e.layers:
                for pattern, _ in lp.head_specs:
                    families[pattern] = families.get(pattern, 0) + (e.stop - e.start)
        console.print(f"[green]valid[/] {plan_path}: {plan.model.get('name', '?')}, geometry {plan.geometry}, "
                      f"B={plan.block_size}, {plan.num_steps} steps × {plan.num_layers} layers × {plan.num_heads} heads, "
                      f"{len(plan.schedule)} schedule entr{'y' if len(plan.schedule) == 1 else 'ies'}")
        if families:
            total = sum(families.values())
            console.print("head-steps by pattern: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(families.items())))
        if plan.predicted:
            p = plan.predicted
            console.print(f"predicted: {p.get('speedup', float('nan')):.2f}× attention speedup, rel_err {p.get('rel_err', float('nan')):.3g}")

    _run(work)


@app.command()
def report(
    inputs: list[Path] = typer.Argument(..., metavar="FILE...", help="Profiles, plans, studies and bench results."),
    out: Path = typer.Option(Path("reports/latest"), help="Output folder (index.html + PNGs)."),
    tau: float = typer.Option(0.95, help="Recall threshold for the profile's classes."),
    density_cap: float = typer.Option(0.75, help="Density cap for the profile's classes."),
    title: Optional[str] = typer.Option(None, help="Page title."),
) -> None:
    """Draw what was found: a static HTML page with PNG figures that opens from disk."""
    from .report import write_report

    def work():
        page = write_report(list(inputs), out, tau=tau, density_cap=density_cap, title=title)
        console.print(f"report → [bold]{page}[/]")

    _run(work)


@app.command()
def bench(
    plan_path: Optional[Path] = typer.Option(None, "--plan", help="Time every distinct layer plan of this plan."),
    pattern: Optional[str] = typer.Option(None, help="One pattern for every head (default: all four families mixed)."),
    params: str = typer.Option("{}", help="JSON params of --pattern."),
    density: list[float] = typer.Option([0.1, 0.25, 0.5], help="Target densities of the mixed-family layer."),
    sweep: bool = typer.Option(False, help="Densities 5–100% in one run; draws rate and speedup vs density."),
    frames: int = typer.Option(21), height: int = typer.Option(30), width: int = typer.Option(52),
    text_tokens: int = typer.Option(0), heads: int = typer.Option(12), head_dim: int = typer.Option(128),
    batch: int = typer.Option(1), block_size: int = typer.Option(128),
    dtype: str = typer.Option("bfloat16", help="bfloat16 or float16."),
    reps: int = typer.Option(20, help="Timed calls per measurement (median reported)."),
    timing: str = typer.Option("queued", help="queued: the GPU's time per call, calls queued back to back "
                               "(as a model runs); synced: each call alone on an idle GPU, the host's "
                               "launch work included; sustained: calls back to back for 3 s per "
                               "measurement, the last 2 s timed (the card at its power limit, as in a "
                               "long denoising run)."),
    flex: bool = typer.Option(True, help="Also time FlexAttention on the same block mask."),
    hardware: Optional[str] = typer.Option(None, help="Cost-model table for the predicted column."),
    out: Optional[Path] = typer.Option(None, help="JSON output; default reports/bench_<card>.json."),
) -> None:
    """Per-layer latency of a plan (or one layer) against dense cuDNN SDPA and FlexAttention (CUDA)."""

    def work():
        from .bench import card_name, sweep as S
        from .costmodel import CostModel
        from .geometry import Geometry
        from .plan import load_plan

        S.check_request(timing, dtype)  # a ValueError: one line, exit 2
        cost = CostModel(hardware, head_dim=head_dim, batch=batch)
        lps = [] if plan_path else S.layer_plans(Geometry(frames, height, width, text_tokens), heads, block_size,
                                                 sweep=sweep, pattern=pattern, params=params, densities=density)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"timing layer plans ({timing})", total=None)
            result = S.run_bench(cost, plan=load_plan(plan_path) if plan_path else None, lps=lps, timing=timing,
                                 dtype=dtype, reps=reps, flex=flex,
                                 on_layer=lambda done, total: bar.update(task, completed=done, total=total))
        target = out or Path("reports") / f"bench_{card_name().replace(' ', '_')}.json"
        _atomic_write(target, json.dumps(result, indent=1) + "\n")
        cols, cells = S.summary_table(result)
        table = Table(title=f"{card_name()}: sparse runtime vs dense cuDNN SDPA ({timing} timing)")
        for col in cols:
            table.add_column(col, justify="right")
        for row in cells:
            table.add_row(*row)
        console.print(table)
        if sweep:
            from .report.bench_figures import speedup_vs_density, tflops_vs_density

            for fig in (tflops_vs_density(S.rows_of(result), target.with_suffix(".tflops.png"), card_name()),
                        speedup_vs_density(S.rows_of(result), target.with_suffix(".speedup.png"), card_name())):
                console.print(f"figure → {fig}")

    _run(work)


def _atomic_write(path: Path, text: str) -> None:
    write_text_atomic(path, text)
    console.print(f"wrote {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
