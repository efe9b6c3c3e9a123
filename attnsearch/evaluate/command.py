"""Everything ``attnsearch evaluate PLAN... --model M`` does, without the argument parser.

Every argument is checked before any model is loaded or video generated; a bad one raises
:class:`EvaluateError` whose one-line message starts with the option (``--seeds: …``,
``PLAN plans/x.json: …``). The command returns its exit code: 0, or 1 when a plan misses
``min_psnr`` / ``min_ssim`` (a quality gate for CI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..plan import Plan, PlanError, load_plan
from ..runtime.residual import RESIDUAL_PRECISIONS
from .baselines import parse_baselines
from .evaluation import evaluate
from .generator import EvaluateError, Generator, load_generator

BACKENDS = ("auto", "hopper", "triton", "torch")


def _int(name: str, value: Any, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise EvaluateError(f"{name}: must be an integer ≥ {lo}, got {value!r}")
    return value


def _threshold(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluateError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def _labels(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return [str(p) if stems.count(p.stem) > 1 else p.stem for p in paths]


def load_plans(paths: Sequence[str | Path], steps: int | None) -> list[Plan]:
    """Read every PLAN; all must share geometry, block size, layers and heads, and cover ``steps``."""
    if not paths:
        raise EvaluateError("PLAN: give at least one plan file")
    plans = []
    for path in paths:
        try:
            plans.append(load_plan(path))
        except PlanError as err:
            raise EvaluateError(f"PLAN {err}") from None
    first = plans[0]
    for path, p in zip(paths, plans):
        for field in ("geometry", "num_layers", "num_heads"):
            if getattr(p, field) != getattr(first, field):
                raise EvaluateError(f"PLAN {path}: {field} {getattr(p, field)} differs from {paths[0]}'s "
                                    f"{getattr(first, field)} (a sweep evaluates plans of one model and size)")
        if steps is not None and p.num_steps != steps:
            raise EvaluateError(f"--steps: {steps}, but PLAN {path} covers {p.num_steps} steps (a plan's step n is "
                                "sampler step n: sample with the plan's steps)")
        if p.num_steps != first.num_steps:
            raise EvaluateError(f"PLAN {path}: covers {p.num_steps} steps, {paths[0]} {first.num_steps}")
    return plans


def evaluate_command(plans: Sequence[str | Path], model: str | Generator, *, seeds: int = 4, steps: int | None = None,
                     out: str | Path = "out/evaluate", baseline: str | None = None,
                     options: Mapping[str, Any] | None = None, backend: str = "auto", hardware: str | None = None,
                     figures: int = 4, min_psnr: float | None = None, min_ssim: float | None = None,
                     fp8: bool = False, residual_precision: str = "native", console: Any = None) -> int:
    """Evaluate the PLAN files on ``model`` and write ``out`` (see ``page``); returns the exit code.

    Args:
        plans: plan JSON files (several: a sweep, drawn as quality vs density).
        model: ``mini-vdit`` or ``diffusers:DIR``; ``options`` are its ``-o key=value`` options
            (or a Generator already built, taking no options).
        seeds: number of videos, on the held-out seeds from HELD_OUT_SEED_START.
        steps: sampler steps; default the plans' steps (any other value is an error).
        baseline: comma-separated names of ``baselines.BASELINES`` ("energy_decay,window").
        backend: ``apply``'s backend. hardware: the cost model's table (default: this GPU's, else H100).
        figures: videos drawn in the report (the JSON has all).
        min_psnr, min_ssim: thresholds on every plan's mean PSNR / SSIM; exit code 1 below them.
        fp8: also run each plan with every computed head in FP8 (the same masks) and compare.
        residual_precision: how residual entries keep their residuals ("native", or "fp8": e4m3).
        console: a ``rich.console.Console`` for the progress bar and the summary (default: stdout).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console()
    seeds = _int("--seeds", seeds, 1)
    if steps is not None:
        steps = _int("--steps", steps, 1)
    names = parse_baselines(baseline)
    if backend not in BACKENDS:
        raise EvaluateError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if residual_precision not in RESIDUAL_PRECISIONS:
        raise EvaluateError(f"--residual-precision: must be one of {', '.join(RESIDUAL_PRECISIONS)}, "
                            f"got {residual_precision!r}")
    figures = _int("--figures", figures, 0)
    min_psnr, min_ssim = _threshold("--min-psnr", min_psnr), _threshold("--min-ssim", min_ssim)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EvaluateError(f"--out: {out} exists and is not a folder")
    from ..atomic_io import check_outputs

    check_outputs([out / "evaluation.json", out / "index.html"], plans)  # never over a plan, before any work
    if hardware is not None:
        from ..costmodel import HardwareError, load_hardware

        try:
            load_hardware(hardware)
        except HardwareError as err:
            raise EvaluateError(f"--hardware: {err}") from None
    paths = [Path(p) for p in plans]
    loaded = load_plans(paths, steps)

    if isinstance(model, str):
        generator = load_generator(model, **dict(options or {}))
    elif options:
        raise EvaluateError("-o: options go with a model name, not with a Generator object")
    else:
        generator = model
    generator.fit(loaded[0].geometry)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("generating", total=seeds * (1 + len(loaded) * (1 + int(fp8) + len(names))))

        def progress(p: dict[str, Any]) -> None:
            bar.update(task, completed=p["done"], description=f"seed {p['seed']}: {p['label']}")

        result = evaluate(loaded, generator, seeds, steps, baselines=names, labels=_labels(paths),
                          sources=[str(p) for p in paths], backend=backend, hardware=hardware, fp8=fp8,
                          residual_precision=residual_precision, progress=progress)
    from .page import write_outputs

    written = write_outputs(result, out, figure_videos=figures)
    width = max(len(r.label) for r in result.runs)
    for r in result.runs:
        o, speed = r.overall, r.predicted.get("speedup")
        psnr = "identical" if math.isinf(o["psnr_db"]) else f"{o['psnr_db']:.2f} dB"
        console.print(f"{r.label:<{width}}  density {r.density:.3f}  {f'{speed:.2f}×' if speed else '–':>6}  "
                      f"PSNR {psnr:>9}  SSIM {o['ssim']:.4f}  rel L2 {o['rel_l2_latents']:.4f}",
                      highlight=False, soft_wrap=True, markup=False)
    for i, r in enumerate(result.runs):
        margins = result.versus_baselines(i) if r.kind == "plan" else {}
        if margins:
            vs = ", ".join(f"{name} {m['psnr_db']:+.2f} dB" for name, m in margins.items())
            console.print(f"{r.label}: PSNR vs baselines at its density: {vs}", highlight=False, soft_wrap=True, markup=False)
        if r.plan.has_residual:
            reusing, inexact = r.plan.reuse_counts()
            heads = "" if reusing == inexact else f" ({reusing} of {inexact} inexact head-layers reuse)"
            console.print(f"{r.label}: reuses residuals from exact steps {', '.join(map(str, r.plan.residual_steps))}"
                          f"{heads}, kept in {result.residual_precision} precision, at most "
                          f"{r.residual_peak_bytes / 2**20:,.1f} MiB at once", highlight=False, soft_wrap=True, markup=False)
        if r.kind == "fp8":
            d = result.versus_native(i)
            console.print(f"{r.label}: {d['psnr_db']:+.2f} dB PSNR, {d['ssim']:+.4f} SSIM against the plan in native "
                          "precision", highlight=False, soft_wrap=True, markup=False)
    note = result.runs[0].predicted.get("reason") or (result.runs[0].predicted.get("hardware") or {}).get("note")
    console.print(f"× = predicted attention speedup: {note}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"evaluation → {written['json']}, report → {written['index']}", highlight=False, markup=False)
    failed = result.failures(min_psnr, min_ssim)
    for line in failed:
        console.print(f"below threshold: {line}", highlight=False, markup=False)
    return 1 if failed else 0


__all__ = ["BACKENDS", "evaluate_command", "load_plans"]
