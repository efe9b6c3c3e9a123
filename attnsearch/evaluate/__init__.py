"""``attnsearch evaluate``: does a plan keep generated videos intact?

Generates videos with the dense model and with each plan from identical noise and conditions
(held-out seeds), and measures the plan's videos against the dense ones: PSNR, SSIM and PSNR per
frame of the frames in [0, 1], relative L2 of the final latents, beside the plan's attention
compute (mean kept-block density) and predicted speedup. Baselines run one global mask at the
plan's density (Radial Attention's energy decay, a spatio-temporal window). Outputs: a strict
JSON, side-by-side frames, GIFs, difference maps, PSNR per frame, quality vs density, index.html.

    from attnsearch.evaluate import evaluate, load_generator, write_outputs
    result = evaluate(plan, load_generator("mini-vdit"), seeds=16, baselines=("energy_decay", "window"))
    write_outputs(result, "out/evaluate")

Modules: ``generator`` (the Generator protocol, running a plan around a generation),
``from_mini_vdit`` / ``from_diffusers`` (the two generators), ``quality`` (video metrics),
``cost`` (density, predicted speedup), ``baselines``, ``evaluation`` (``evaluate`` and its
result), ``figures`` and ``page`` (outputs), ``command`` (everything the CLI command does).
"""

from __future__ import annotations

from .baselines import BASELINES, baseline_plan, parse_baselines
from .cost import predicted_speedup
from .evaluation import EvaluationResult, Run, evaluate, resolve_seeds
from .generator import HELD_OUT_SEED_START, EvaluateError, Generator, Video, load_generator, running
from .quality import video_quality

_LAZY = {"evaluate_command": "attnsearch.evaluate.command", "write_outputs": "attnsearch.evaluate.page"}


def __getattr__(name: str):
    if name in _LAZY:  # matplotlib and rich load only when outputs are written
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnsearch.evaluate' has no attribute {name!r}")


__all__ = ["BASELINES", "HELD_OUT_SEED_START", "EvaluateError", "EvaluationResult", "Generator", "Run", "Video",
           "baseline_plan", "evaluate", "load_generator", "parse_baselines", "predicted_speedup",
           "resolve_seeds", "running", "video_quality", *_LAZY]
