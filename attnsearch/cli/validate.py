"""``attnsearch validate``: check a plan file against the format; print what it runs, or the offending field."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import byte_size, console, run, shown


def validate(plan_path: Path = typer.Argument(..., metavar="PLAN", help="A plan JSON file.")) -> None:
    """Check a plan file against the format; print what it runs, or the offending field."""
    from ..plan import load_plan
    from ..report.plan_summary import pattern_shares

    def work():
        plan = load_plan(plan_path)
        shares = pattern_shares(plan)
        console.print(f"[green]valid[/] {shown(plan_path)}: {shown(plan.model.get('name', '?'))}, geometry {plan.geometry}, "
                      f"B={plan.block_size}, {plan.num_steps} steps × {plan.num_layers} layers × {plan.num_heads} heads, "
                      f"{len(plan.schedule)} schedule entr{'y' if len(plan.schedule) == 1 else 'ies'}")
        if plan.source_geometry is not None:
            console.print(f"retargeted: searched at {shown(plan.source_geometry)}, instantiated at "
                          f"{shown(plan.geometry)}")
        if not plan.portable:
            console.print(f"non-portable: runs at {shown(plan.geometry)} only")
        if shares:
            console.print("head-steps by pattern: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
        if plan.has_residual:
            head_dim, batch = plan.costed_call()
            console.print(f"residual reuse: exact steps {', '.join(map(str, plan.residual_steps))} (each runs dense "
                          f"attention beside its masks; the steps after it add what they missed), mean density "
                          f"{plan.mean_density:.3f} with them; the residuals hold {byte_size(plan.residual_bytes())} "
                          f"during a run in bf16 ({byte_size(plan.residual_bytes(precision='fp8'))} in FP8) at "
                          f"head_dim {head_dim}, batch {batch} (twice that with CFG branches run as separate forwards)")
            reusing, inexact = plan.reuse_counts()
            if reusing < inexact:
                console.print(f"reusing heads: {reusing} of {inexact} inexact head-layers of the residual entries "
                              "reuse; the others run their masks alone there")
        if plan.precision_share("fp8"):
            console.print(f"FP8 kept blocks: {plan.precision_share('fp8'):.0%} of the computed head-steps")
        if plan.predicted:
            p = plan.predicted
            err = f", rel_err {p['rel_err']:.3g}" if "rel_err" in p else ""
            console.print(f"predicted: {p.get('speedup', float('nan')):.2f}× attention speedup at "
                          f"{shown(plan.geometry)}{err}")

    run(work)
