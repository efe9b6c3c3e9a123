"""What every command shares: the consoles, one-line errors (exit 2), option parsing, progress
bars, file output and the class table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..atomic_io import write_text_atomic

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` and turn the library's input errors into one line and exit code 2."""
    from ..geometry import GeometryError
    from ..patterns import PatternError
    from ..profiling.profile_io import ProfileError

    try:
        return fn()
    except (UsageError, GeometryError, PatternError, ProfileError, FileNotFoundError, OSError) as exc:
        fail(str(exc))
    except ValueError as exc:  # model adapters and plan validation raise ValueError subclasses
        fail(str(exc))


def parse_options(options: list[str]) -> dict:
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


def progress_bar(*, transient: bool = False) -> Progress:
    """The progress bar every long command shows: description, bar, done/total, elapsed."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=transient)


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (whole or not at all) and say so."""
    write_text_atomic(path, text)
    console.print(f"wrote {path}")


def print_class_table(labels, title: str) -> None:
    """Heads per class for each layer (and the mean stability, when the labels have one)."""
    from ..profiling.classify import class_counts

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
