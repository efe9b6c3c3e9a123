"""``attnsearch classify``: print the class of every head of a profile (and export it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import check_output_paths, check_range, console, print_class_table, run, shown, write_file


def classify_cmd(
    profile_path: Path = typer.Argument(..., metavar="PROFILE", help="A profile written by `attnsearch profile`."),
    tau: float = typer.Option(0.95, help="Recall a class must reach."),
    density_cap: float = typer.Option(0.75, help="Above this density a head is dense."),
    per_step: bool = typer.Option(False, "--per-step", help="One label per (step, layer, head)."),
    csv: Optional[Path] = typer.Option(None, help="Also write the labels as CSV."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the labels as JSON records."),
) -> None:
    """Print the class of every head of a profile (and export it).

    Over steps, ``stability`` is the share of steps whose own class is the head's; for a profile of
    several prompts (``profile --prompts``), ``prompts`` is the share of prompts whose own class
    (over steps) is the head's."""
    from ..profiling.classify import classify
    from ..profiling.profile_io import Profile

    def work():
        check_range("--tau", tau, low=0, high=1)
        check_range("--density-cap", density_cap, low=0, high=1, low_open=True)
        check_output_paths([csv, json_out], [profile_path])
        prof = Profile.load(profile_path)
        labels = classify(prof, tau=tau, density_cap=density_cap, over_steps=not per_step)
        if per_step:
            print_class_table(labels[labels["step"] == labels["step"].max()], f"classes at step {labels['step'].max()}")
        else:
            print_class_table(labels, f"classes per layer over {prof.num_steps} step(s) (τ={tau})")
        table = Table(show_lines=False)
        across_prompts = not per_step and prof.num_prompts > 0
        extra = (["stability"] if not per_step else []) + (["prompts"] if across_prompts else [])
        for col in ["layer", "head", "pattern", "candidate", "density", "recall"] + extra:
            table.add_column(col)
        for r in labels.itertuples():
            cells = [str(r.layer), str(r.head), shown(r.pattern), shown(r.candidate), f"{r.density:.3f}",
                     f"{r.recall:.3f}"]
            if not per_step:
                cells.append(f"{r.stability:.2f}")
            if across_prompts:
                cells.append(f"{r.prompt_stability:.2f}")
            table.add_row(*cells)
        if not per_step:
            console.print(table)
        if across_prompts:
            changed = int((labels["prompt_stability"] < 1).sum())
            console.print(f"class stability across {prof.num_prompts} prompts: mean "
                          f"{labels['prompt_stability'].mean():.2f}; {changed} of {len(labels)} heads change class "
                          "with the prompt")
        if csv:
            write_file(csv, labels.to_csv(index=False), inputs=[profile_path])
        if json_out:
            write_file(json_out, labels.to_json(orient="records", indent=1), inputs=[profile_path])

    run(work)
