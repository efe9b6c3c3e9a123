"""``attnsearch profile``: record per-head attention statistics of a model and classify every head."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..jsondata import read_json
from .common import (UsageError, check_at_least, check_output_paths, check_range, console, err_console,
                     parse_int_list, parse_options, print_class_table, progress_bar, run, shown)


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
    fp8: bool = typer.Option(False, "--fp8", help="Also measure every candidate with its kept blocks in FP8 "
                                                  "(column rel_err_fp8; about twice the profiling work)."),
    tau: float = typer.Option(0.95, help="Recall a class must reach (summary only; the profile keeps all)."),
    density_cap: float = typer.Option(0.75, help="Above this density a head is dense (summary only)."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value passed to the model factory."),
    out: Optional[Path] = typer.Option(None, help="Output Parquet file; default profiles/<model>.parquet."),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help="Text file, one prompt per line (blank lines skipped): every step of every prompt "
                                "is profiled and the profile keeps per-prompt statistics (diffusers pipelines)."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="Negative prompt (CFG)."),
    num_frames: Optional[int] = typer.Option(None, "--num-frames",
                                             help="Video frames (the model's num_frames option: pixel-space frames "
                                                  "for diffusers models)."),
    height: Optional[int] = typer.Option(None, help="Video height (the model's height option: pixels for diffusers)."),
    width: Optional[int] = typer.Option(None, help="Video width (the model's width option: pixels for diffusers)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Guidance scale (CFG)."),
    residual_steps: Optional[str] = typer.Option(None, help="Also measure each candidate's error under residual "
                                                            "reuse at these exact steps (e.g. 0,2,5,10; column "
                                                            "rel_err_reuse), for optimize --residual-steps."),
) -> None:
    """Record per-head attention statistics of a model and classify every head."""
    from ..models import geometry_hint, load_model
    from ..profiling.candidates import CandidateGrid
    from ..profiling.classify import classify
    from ..profiling.distributed import is_distributed, profile_sharded, shard_steps, world
    from ..profiling.profile_io import ProfileSettings, default_path
    from ..profiling.profiler import default_block_size, profile_model

    def work():
        check_profile_options(tau=tau, density_cap=density_cap, steps=steps, queries=queries, seed=seed,
                              block_size=block_size, map_size=map_size)
        opts = {**parse_options(option), **generation_options(prompts=prompts, negative_prompt=negative_prompt,
                                                             num_frames=num_frames, height=height, width=width,
                                                             guidance=guidance)}
        grid_obj = CandidateGrid.from_dict(read_json(grid, "grid file")) if grid else CandidateGrid()
        if out is not None:
            check_output_paths([out], [grid, prompts])
        hinted = geometry_hint(model, **opts)
        if hinted is not None:
            check_size(hinted, block_size or default_block_size(hinted.num_tokens), queries, steps or 1, fp8)
        spec = load_model(model, **opts)
        bs = block_size or default_block_size(spec.geometry.num_tokens)
        for family, _ in grid_obj.fixed:  # the grid's params must mean something at this geometry
            grid_obj.params_for(family, spec.geometry, bs)
        precisions = ("native", "fp8") if fp8 else ("native",)
        exact = () if residual_steps is None else tuple(parse_int_list("--residual-steps", residual_steps))
        if residual_steps is not None and not exact:
            raise UsageError("--residual-steps must name at least one step")
        if exact and is_distributed():
            raise UsageError("--residual-steps: residual reuse is measured along whole trajectories; profile on "
                             "one process (sharded profiling splits the steps)")
        settings = ProfileSettings(queries=queries, seed=seed, block_size=bs, map_size=map_size, grid=grid_obj,
                                   precisions=precisions, residual_steps=exact)
        if steps is not None and steps > len(spec.inputs):
            raise UsageError(f"--steps {steps} exceeds the {len(spec.inputs)} inputs model {spec.name!r} provides")
        n_steps = steps or len(spec.inputs)
        target = out or default_path(spec.name)
        check_output_paths([target], [grid, prompts])
        check_size(spec.geometry, bs, queries, n_steps, fp8)
        console.print(f"[bold]{shown(spec.name)}[/]: geometry {spec.geometry}, block size {bs}, "
                      f"{n_steps} step(s)" + (f" × {len(spec.prompts)} prompts" if spec.prompts else "")
                      + f", {queries} sampled queries per call" + (" (errors native and FP8)" if fp8 else "")
                      + "".join(f"; {e.name} runs step" + (f"s {e.start}–{e.stop - 1}" if e.stop - e.start > 1 else f" {e.start}")
                              for e in spec.experts))
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
        prof.save(target, inputs=[p for p in (grid, prompts) if p])
        labels = classify(prof, tau=tau, density_cap=density_cap, over_steps=True)
        print_class_table(labels, f"classes per layer (τ={tau}, density cap {density_cap})")
        console.print(f"{prof.num_layers} layers × {prof.num_heads} heads × {prof.num_steps} steps in "
                      f"{time.perf_counter() - started:.1f} s → [bold]{shown(target)}[/]")

    run(work)


def read_prompts(path: Path) -> list[str]:
    """The prompts of a prompt file: one per line, surrounding blanks stripped, blank lines skipped."""
    if path.is_dir():
        raise UsageError(f"--prompts {path}: is a directory, not a prompt file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"--prompts {path}: does not exist") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--prompts {path}: not UTF-8 text (byte {err.start})") from None
    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if line]
    if not found:
        raise UsageError(f"--prompts {path}: holds no prompt (one prompt per line)")
    return found


def generation_options(*, prompts, negative_prompt, num_frames, height, width, guidance) -> dict:
    """The model-factory options the generation flags stand for (only those given)."""
    for option, value in (("--num-frames", num_frames), ("--height", height), ("--width", width)):
        check_at_least(option, value, 1)
    check_range("--guidance", guidance, low=0)
    opts = {"prompts": read_prompts(prompts) if prompts is not None else None, "negative_prompt": negative_prompt,
            "num_frames": num_frames, "height": height, "width": width, "guidance_scale": guidance}
    return {k: v for k, v in opts.items() if v is not None}


def check_profile_options(*, tau, density_cap, steps, queries, seed, block_size, map_size) -> None:
    """Every option of ``profile`` that needs no model, checked before anything is built."""
    from ..geometry import BLOCK_SIZES

    check_range("--tau", tau, low=0, high=1)
    check_range("--density-cap", density_cap, low=0, high=1, low_open=True)
    check_at_least("--steps", steps, 1, " (leave it out for every input)")
    for option, value, low in (("--queries", queries, 1), ("--map-size", map_size, 1), ("--seed", seed, 0)):
        check_at_least(option, value, low)
    if block_size is not None and block_size not in BLOCK_SIZES:
        raise UsageError(f"--block-size must be one of {', '.join(map(str, BLOCK_SIZES))} (leave it out for the "
                         f"default), got {block_size}")


def check_size(geometry, block_size: int, queries: int, steps: int, fp8: bool = False) -> None:
    """Refuse a geometry whose profile cannot fit in memory; warn when it takes over a minute on CPU."""
    import torch

    from ..profiling.estimate import WARN_CPU_S, check_fits, profile_cost

    cost = profile_cost(geometry, block_size=block_size, queries=queries, steps=steps, fp8=fp8)
    check_fits(cost)
    if not torch.cuda.is_available() and cost.cpu_seconds > WARN_CPU_S:
        err_console.print(f"[yellow]warning:[/] profiling N = {cost.tokens:,} tokens on the CPU takes at least "
                          f"~{cost.cpu_seconds / 60:.0f} min (the model's dense attention alone)", highlight=False)
