"""``evaluate``: generate videos dense and by each plan from identical noise and conditions, and
measure how far every plan's videos drift from the dense ones.

    result = evaluate(load_plan("plan.json"), load_generator("mini-vdit"), seeds=16,
                      baselines=("energy_decay", "window"))
    result.runs[0].overall["psnr_db"], result.runs[0].density, result.runs[0].predicted["speedup"]
    result.write_json("out/evaluation.json")

Every run (a plan, or a baseline at a plan's density) generates one video per seed; each is
compared with the dense video of its seed (``quality``). The first dense generation also records
the model's self-attention calls, and every plan must fit them (steps, layers, heads, tokens)
before any sparse video is made.

JSON (format ``attnsearch-evaluation``, version 1) is strict: no NaN or Infinity. A value that is
+inf (the PSNR of a video identical to dense, or a mean over such videos) is written as null and
its path listed in ``infinite`` (e.g. ``runs[0].overall.psnr_db``); each video also says
``identical``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..atomic_io import write_text_atomic
from ..plan import Plan
from .baselines import baseline_plan
from .cost import predicted_speedup
from .generator import HELD_OUT_SEED_START, AttentionLayout, EvaluateError, Generator, Video, running
from .quality import FRAME_RANGE, overall, video_quality

FORMAT = "attnsearch-evaluation"
VERSION = 1


@dataclass
class Run:
    """One plan (or baseline) evaluated on every seed."""

    label: str
    kind: str                       # "plan" | "fp8" (a plan with every computed head in FP8) | "baseline"
    plan: Plan
    density: float
    source: str | None = None       # the plan file
    of: int | None = None           # a baseline or an fp8 run: index of the plan run it derives from
    baseline: dict[str, Any] | None = None
    predicted: dict[str, Any] = field(default_factory=dict)
    videos: list[Video] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: {"calls": 0, "sparse": 0, "dense": 0})
    residual_peak_bytes: int = 0    # the most the plan's residuals held at once in any video

    @property
    def overall(self) -> dict[str, Any]:
        return overall(self.metrics)

    def to_dict(self, seeds: Sequence[int]) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "plan_file": self.source, "of": self.of,
                "baseline": self.baseline, "density": self.density, "predicted": self.predicted,
                "attention_calls": self.calls,
                "residual_steps": list(self.plan.residual_steps) if self.plan.has_residual else None,
                "residual_peak_bytes": self.residual_peak_bytes, "overall": self.overall,
                "videos": [{"seed": s, "condition": v.condition, **m}
                           for s, v, m in zip(seeds, self.videos, self.metrics, strict=True)]}


@dataclass
class EvaluationResult:
    """Dense videos per seed and every run's videos and metrics (``to_dict``: the JSON)."""

    generator: dict[str, Any]
    seeds: list[int]
    steps: int
    dense: list[Video]
    runs: list[Run]
    seconds: float = 0.0
    residual_precision: str = "native"

    @property
    def held_out(self) -> bool:
        return all(s >= HELD_OUT_SEED_START for s in self.seeds)

    def plans(self) -> list[Run]:
        return [r for r in self.runs if r.kind == "plan"]

    def failures(self, min_psnr: float | None = None, min_ssim: float | None = None) -> list[str]:
        """One line per plan (not baseline) whose mean PSNR or SSIM is below the threshold."""
        out = []
        for r in self.plans():
            o = r.overall
            if min_psnr is not None and o["psnr_db"] < min_psnr:
                out.append(f"{r.label}: mean PSNR {o['psnr_db']:.2f} dB < {min_psnr:g} dB")
            if min_ssim is not None and o["ssim"] < min_ssim:
                out.append(f"{r.label}: mean SSIM {o['ssim']:.4f} < {min_ssim:g}")
        return out

    def versus_native(self, index: int) -> dict[str, float]:
        """FP8 run ``index`` against its plan run in native precision (same masks, same seeds):
        differences of mean PSNR (dB) and SSIM (negative: FP8 is further from dense)."""
        fp8, native = self.runs[index].overall, self.runs[self.runs[index].of].overall
        return {"psnr_db": fp8["psnr_db"] - native["psnr_db"], "ssim": fp8["ssim"] - native["ssim"]}

    def versus_baselines(self, index: int) -> dict[str, dict[str, float]]:
        """Plan run ``index`` against each baseline at its density: margins of mean PSNR (dB) and
        SSIM (positive: the plan is closer to dense)."""
        plan = self.runs[index].overall
        return {r.baseline["baseline"]: {"psnr_db": plan["psnr_db"] - r.overall["psnr_db"],
                                         "ssim": plan["ssim"] - r.overall["ssim"]}
                for r in self.runs if r.kind == "baseline" and r.of == index}

    def to_dict(self) -> dict[str, Any]:
        runs = [r.to_dict(self.seeds) for r in self.runs]
        for i, r in enumerate(self.runs):
            if r.kind == "plan":
                margins = self.versus_baselines(i)
                runs[i]["versus_baselines"] = margins
                runs[i]["beats_baselines"] = bool(margins) and all(m["psnr_db"] > 0 for m in margins.values())
            elif r.kind == "fp8":
                runs[i]["versus_native"] = self.versus_native(i)
        data = {
            "format": FORMAT, "version": VERSION,
            "model": self.generator,
            "seeds": list(self.seeds), "seeds_held_out": self.held_out,
            "seeds_note": f"evaluation seeds start at {HELD_OUT_SEED_START}; capture, profiling and the search use "
                          "seeds below it",
            "steps": self.steps,
            "residual_precision": self.residual_precision,
            "metrics": {"frames": f"decoded frames in [0, 1], data range {FRAME_RANGE:g}",
                        "psnr_db": "10·log10(1 / MSE) over all frames of a video; psnr_per_frame_db per frame",
                        "ssim": "mean per-frame SSIM (Wang et al. 2004, Gaussian window)",
                        "rel_l2_latents": "‖x − x_dense‖ / ‖x_dense‖ of the final latents",
                        "density": "mean kept-block density over steps, layers and heads (dense = 1)",
                        "overall": "means over videos; psnr_db_min, ssim_min: the worst video",
                        "versus_baselines": "a plan's mean PSNR and SSIM minus each baseline's at its density; "
                                            "beats_baselines: higher PSNR than every baseline"},
            "runs": runs,
            "seconds": self.seconds,
        }
        infinite: list[str] = []
        data = strict_json(data, "", infinite)
        data["infinite"] = infinite
        return data

    def write_json(self, path: Any) -> Any:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")


def strict_json(value: Any, path: str, infinite: list[str]) -> Any:
    """``value`` with +inf / −inf floats replaced by None and their paths appended to ``infinite``;
    NaN is an error (no metric here is ever NaN)."""
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"{path}: NaN cannot be written as JSON")
        if math.isinf(value):
            infinite.append(path if value > 0 else f"-{path}")
            return None
        return value
    if isinstance(value, dict):
        return {k: strict_json(v, f"{path}.{k}" if path else str(k), infinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v, f"{path}[{i}]", infinite) for i, v in enumerate(value)]
    return value


def resolve_seeds(seeds: int | Sequence[int]) -> list[int]:
    """A count n → the held-out seeds HELD_OUT_SEED_START … + n − 1; a list is taken as given."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise EvaluateError(f"--seeds: must be ≥ 1, got {seeds}")
        return list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise EvaluateError(f"--seeds: a positive count or a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(out)) != len(out):
        raise EvaluateError(f"--seeds: seeds repeat in {out}")
    return out


def make_runs(plans: Sequence[Plan], labels: Sequence[str] | None = None, sources: Sequence[str | None] | None = None,
              baselines: Sequence[str] = (), fp8: bool = False) -> list[Run]:
    """A run per plan; with ``fp8`` per plan its FP8 run (every computed head in FP8, the same
    masks: ``Plan.with_precision``); then per plan one per baseline at that plan's density."""
    labels = list(labels) if labels else (["plan"] if len(plans) == 1 else [f"plan {i}" for i in range(len(plans))])
    sources = list(sources) if sources else [None] * len(plans)
    runs = [Run(label, "plan", p, p.mean_density, source=src) for p, label, src in zip(plans, labels, sources,
                                                                                        strict=True)]
    if fp8:
        runs += [Run(f"{labels[i]} in FP8", "fp8", p.with_precision("fp8"), p.mean_density, source=sources[i], of=i)
                 for i, p in enumerate(plans)]
    for i, p in enumerate(plans):
        for name in baselines:
            bp, info = baseline_plan(name, p, runs[i].density)
            label = name if len(plans) == 1 else f"{name} @ {labels[i]}"
            runs.append(Run(label, "baseline", bp, info["density"], of=i, baseline=info))
    return runs


def evaluate(plans: Plan | Sequence[Plan], generator: Generator, seeds: int | Sequence[int] = 4,
             steps: int | None = None, *, baselines: Sequence[str] = (), labels: Sequence[str] | None = None,
             sources: Sequence[str | None] | None = None, backend: str = "auto", hardware: Any = None,
             fp8: bool = False, residual_precision: str = "native",
             progress: Callable[[dict[str, Any]], None] | None = None) -> EvaluationResult:
    """Evaluate ``plans`` (one, or a sweep) against dense generations of ``generator``.

    Args:
        plans: Plan(s) of the generator's transformer; all with the same number of steps.
        generator: a :class:`Generator` (``load_generator``).
        seeds: a count (held-out seeds from HELD_OUT_SEED_START) or explicit seeds.
        steps: sampler steps (default and requirement: the plans' ``num_steps``).
        baselines: names of :data:`baselines.BASELINES`, each run at every plan's mean density.
        labels, sources: names and files of the plans, for the result.
        backend: ``apply``'s backend. hardware: the cost model's table (``predicted_speedup``).
        fp8: also run every plan with every computed head in FP8 (kind "fp8", the same masks).
        residual_precision: how ``apply`` keeps the residuals of residual entries ("native", "fp8").
        progress: called after every generated video with {done, total, seed, label}.
    """
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    if not plans:
        raise EvaluateError("PLAN: give at least one plan")
    steps = plans[0].num_steps if steps is None else steps
    for i, p in enumerate(plans):
        if p.num_steps != steps:
            raise EvaluateError(f"--steps: {steps} sampler steps, but plan {labels[i] if labels else i} covers "
                                f"{p.num_steps}")
    seeds = resolve_seeds(seeds)
    runs = make_runs(plans, labels, sources, baselines, fp8)
    total, done = len(seeds) * (1 + len(runs)), 0
    start = time.perf_counter()
    dense: list[Video] = []

    def tick(seed: int, label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress({"done": done, "total": total, "seed": seed, "label": label})

    for i, seed in enumerate(seeds):
        layout = AttentionLayout() if i == 0 else None
        with running(generator, observe=layout):
            dense.append(generator.generate(seed, steps))
        if layout is not None:
            for r in runs:
                layout.check(r.plan, where=r.label if r.kind != "baseline" else f"baseline {r.label}")
            batch, _, _, head_dim = layout.shape
            for r in runs:
                r.predicted = predicted_speedup(r.plan, head_dim=head_dim, batch=batch, hardware=hardware)
        tick(seed, "dense")
        for r in runs:
            with running(generator, r.plan, backend=backend, residual_precision=residual_precision) as ap:
                video = generator.generate(seed, steps)
            for k in r.calls:
                r.calls[k] += int(ap.stats[k])
            r.residual_peak_bytes = max(r.residual_peak_bytes, int(ap.stats.get("residual_peak_bytes", 0)))
            r.videos.append(video)
            r.metrics.append(video_quality(video, dense[-1]))
            tick(seed, r.label)
    return EvaluationResult(generator=generator.describe(), seeds=seeds, steps=steps, dense=dense, runs=runs,
                            seconds=time.perf_counter() - start, residual_precision=residual_precision)


__all__ = ["FORMAT", "VERSION", "EvaluationResult", "Run", "evaluate", "make_runs", "resolve_seeds", "strict_json"]
