"""``attnsearch retarget``: write a plan instantiated at another geometry, with its re-predicted speedup."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, check_output_paths, console, run, shown


#: A searched frame of fewer blocks than this is coarse: its bands were kept block by block, so a plan
#: moved to another frame size may keep other places (measured: reports/retarget_fidelity).
COARSE_FRAME_BLOCKS = 4


def retarget(
    plan_path: Path = typer.Argument(..., metavar="PLAN", help="A plan JSON file."),
    frames: int = typer.Option(..., help="Latent frames F of the target geometry (after patchify)."),
    height: int = typer.Option(..., help="Latent height H of the target geometry (tokens per column)."),
    width: int = typer.Option(..., help="Latent width W of the target geometry (tokens per row)."),
    text_tokens: Optional[int] = typer.Option(None, help="Text tokens T of the target (default: the "
                                                         "plan's)."),
    out: Path = typer.Option(..., help="Plan JSON to write."),
    hardware: Optional[str] = typer.Option(None, help="Hardware table for the predicted figures (path, GPU "
                                                      "name or slug); default: the plan's, else this GPU's, "
                                                      "else the shipped H100 table."),
    head_dim: Optional[int] = typer.Option(None, help="Attention head_dim for the predicted figures "
                                                      "(default: the plan's search setting, else 128)."),
) -> None:
    """Write PLAN instantiated at another geometry (frames × height × width latent tokens, text of
    another length), with its predicted attention latency and speedup there.

    Bands and decays keep their units (rows, frames); vertical stripes cover the same video positions
    (docs/design.md, "Plans at another geometry"). A plan marked non-portable, or a geometry it cannot
    serve, is an error naming the field.
    """
    from dataclasses import replace

    from ..evaluate.cost import predicted_speedup
    from ..geometry import Geometry
    from ..plan import load_plan, write_plan

    def work():
        for name, value in (("--frames", frames), ("--height", height), ("--width", width)):
            if value < 1:
                raise UsageError(f"{name} must be ≥ 1, got {value}")
        if text_tokens is not None and text_tokens < 0:
            raise UsageError(f"--text-tokens must be ≥ 0, got {text_tokens}")
        if head_dim is not None and head_dim < 1:
            raise UsageError(f"--head-dim must be ≥ 1, got {head_dim}")
        check_output_paths([out], [plan_path])
        plan = load_plan(plan_path)
        text = plan.geometry.text_tokens if text_tokens is None else text_tokens
        target = Geometry(frames, height, width, text, plan.geometry.text_position)
        moved = plan.for_geometry(target)
        costed_head_dim, batch = plan.costed_call()
        cost = {"head_dim": head_dim or costed_head_dim, "batch": batch,
                "hardware": hardware or plan.hardware.get("calibration")}
        before, after = predicted_speedup(plan, **cost), predicted_speedup(moved, **cost)
        for figures in (before, after):
            if figures["speedup"] is None:
                raise UsageError(f"no predicted figures: {figures['reason']} (pass --hardware or --head-dim)")
        moved = replace(moved, hardware={k: after["hardware"][k] for k in ("device", "calibration")},
                        predicted={k: after[k] for k in ("attention_ms", "dense_attention_ms", "speedup")})
        path = write_plan(moved, out, inputs=[plan_path])
        console.print(f"geometry {shown(plan.geometry)} → {shown(target)} (searched at "
                      f"{shown(moved.searched_geometry)}), mean block density {plan.mean_density:.3f} → "
                      f"{moved.mean_density:.3f}")
        console.print(f"predicted attention {before['attention_ms']:.3g} ms → {after['attention_ms']:.3g} ms "
                      f"vs dense {after['dense_attention_ms']:.3g} ms: {before['speedup']:.2f}× → "
                      f"[bold]{after['speedup']:.2f}×[/] ({shown(after['hardware']['note'])})")
        console.print(f"plan → [bold]{shown(path)}[/]")
        searched, block = moved.searched_geometry, plan.block_size
        if target.frame_size != searched.frame_size and searched.frame_size < COARSE_FRAME_BLOCKS * block:
            console.print(f"note: a frame where the plan was searched is {searched.frame_size} tokens, "
                          f"{searched.frame_size / block:.2g}× the block size ({block}): its bands were kept block by "
                          "block and may keep other places at another frame size; evaluate the retargeted plan "
                          "(attnsearch evaluate) before using it")
        if after["speedup"] < 1:
            console.print(f"note: at {shown(target)} this plan is predicted slower than dense attention "
                          f"({after['speedup']:.2f}×); search a plan at this size (attnsearch optimize) or run dense")

    run(work)
