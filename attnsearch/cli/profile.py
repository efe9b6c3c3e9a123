"""``attnsearch profile``: record per-head attention statistics of a model and classify every head."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, console, parse_options, print_class_table, progress_bar, run


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
    from ..models import load_model
    from ..profiling.candidates import CandidateGrid
    from ..profiling.classify import classify
    from ..profiling.distributed import is_distributed, profile_sharded, shard_steps, world
    from ..profiling.profile_io import ProfileSettings, default_path
    from ..profiling.profiler import default_block_size, profile_model

    def work():
        opts = parse_options(option)
        spec = load_model(model, **opts)
        bs = block_size or default_block_size(spec.geometry.num_tokens)
        grid_obj = CandidateGrid.from_dict(json.loads(grid.read_text())) if grid else CandidateGrid()
        settings = ProfileSettings(queries=queries, seed=seed, block_size=bs, map_size=map_size, grid=grid_obj)
        n_steps = min(steps, len(spec.inputs)) if steps else len(spec.inputs)
        if steps is not None and steps > len(spec.inputs):
            raise UsageError(f"--steps {steps} exceeds the {len(spec.inputs)} inputs model {spec.name!r} provides")
        target = out or default_path(spec.name)
        console.print(f"[bold]{spec.name}[/]: geometry {spec.geometry}, block size {bs}, "
                      f"{n_steps} step(s), {queries} sampled queries per call")
        with progress_bar() as bar:
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
        print_class_table(labels, f"classes per layer (τ={tau}, density cap {density_cap})")
        console.print(f"{prof.num_layers} layers × {prof.num_heads} heads × {prof.num_steps} steps in "
                      f"{time.perf_counter() - started:.1f} s → [bold]{target}[/]")

    run(work)
