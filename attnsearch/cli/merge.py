"""``attnsearch merge``: join profile shards of one model (disjoint steps) into one profile."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import check_output_paths, console, run, shown


def merge(
    shards: list[Path] = typer.Argument(..., metavar="SHARD...", help="Profile shards (e.g. from torchrun ranks)."),
    out: Path = typer.Option(..., help="Merged profile (Parquet)."),
) -> None:
    """Join profile shards of one model (disjoint steps) into one profile."""
    from ..profiling.distributed import merge_shards

    def work():
        check_output_paths([out], shards)
        prof = merge_shards(list(shards))
        prof.save(out, inputs=shards)
        console.print(f"merged {len(shards)} shard(s): {prof.num_steps} steps × {prof.num_layers} layers × "
                      f"{prof.num_heads} heads → [bold]{shown(out)}[/]")

    run(work)
