"""What every command shares: the consoles, one-line errors (exit 2), option parsing, progress
bars, output checks, file output and the class table.

User text (paths, model names, option values) is never read as Rich markup: every message that
carries it goes through :func:`shown` (escaped) or is printed as plain text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..atomic_io import check_outputs, write_text_atomic
from ..messages import one_line

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def shown(value) -> str:
    """``value`` as text safe inside a Rich markup string: brackets in paths stay brackets."""
    return escape(one_line(str(value)))


def byte_size(n: int) -> str:
    """``n`` bytes in KiB below 1 MiB, in MiB below 1 GiB (one decimal), else in GiB (two)."""
    if n < 2**20:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def fail(message: str) -> None:
    """Print ``error: MESSAGE`` as one line on stderr (the message is not markup) and exit 2."""
    err_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` and turn the library's input errors into one line and exit code 2.

    Input errors are ValueErrors (the library's errors about data and options derive from it:
    profiles, plans, geometry, patterns, JSON data, outputs, the search), UsageError and OSError
    (a file that cannot be read or written); anything else is a bug and keeps its traceback."""
    try:
        return fn()
    except (UsageError, OSError, ValueError) as exc:
        fail(_message(exc))


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def check_output_paths(outputs, inputs=()) -> None:
    """Refuse, before any work, outputs that are not regular files, are inputs or repeat (see
    :mod:`attnsearch.atomic_io`); ``None`` entries (outputs not asked for) are skipped."""
    check_outputs([o for o in outputs if o is not None], [i for i in inputs if i is not None])


def check_at_least(option: str, value: int | None, low: int, note: str = "") -> None:
    """UsageError ``OPTION must be ≥ LOW{note}, got VALUE`` unless ``value`` is None or ≥ ``low``."""
    if value is not None and value < low:
        raise UsageError(f"{option} must be ≥ {low}{note}, got {value}")


def check_range(option: str, value, *, low=None, high=None, low_open: bool = False) -> None:
    """UsageError naming ``option`` unless ``value`` is a finite number in [low, high] (low
    excluded with ``low_open``); None passes (an option left at its default)."""
    import math

    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
        hi = "∞)" if high is None else f"{high}]"
        raise UsageError(f"{option} must be in {lo}{hi}, got {value}" if lo else f"{option} must be ≤ {high}, "
                                                                                f"got {value}")


def check_choice(option: str, value: str, choices) -> None:
    """UsageError ``OPTION must be one of …, got VALUE`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(map(str, choices))}, got {value!r}")


def parse_int_list(option: str, text: str, word: str | None = None) -> list[int] | str:
    """``"0,2,5"`` → [0, 2, 5] (or ``word`` itself, where the option also takes that word);
    UsageError naming ``option`` for anything else."""
    if word is not None and text.strip() == word:
        return word
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [int(t) for t in items]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated integers{'' if word is None else f' or {word}'}, "
                         f"got {text!r}") from None


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


def write_file(path: Path, text: str, inputs=()) -> None:
    """Write ``text`` to ``path`` (whole or not at all; never over one of ``inputs``) and say so."""
    write_text_atomic(path, text, inputs=inputs)
    console.print(f"wrote {shown(path)}")


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
