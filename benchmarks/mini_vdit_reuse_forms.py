"""Which quantity to carry across denoising steps: what a mask misses at an exact step, reused on
mini-vdit in five forms under one global mask, against the same videos generated dense.

    python -m benchmarks.mini_vdit_reuse_forms --out reports/mini_vdit_reuse_forms \
        [--density 0.3] [--patterns energy_decay window] [--exact-steps 0,2,5,10] [--seeds 16]

Every self-attention call runs one global mask (kept set K, dropped set D = complement; the
mask's density is ``--density`` less what the exact steps add, as ``evaluate``'s baselines do). At an
exact step a the call's output is exact; at a later step s of its span the forms give:

* ``mask alone``: O_K(s), the mask without reuse;
* ``residual``: O_K(s) + R(a), R = O − O_K (what the runtime carries: docs/design.md, "Residual reuse");
* ``residual, kept in fp8``: the same with R(a) rounded to e4m3 with a scale per row (the runtime's
  ``residual_precision="fp8"``: ``quantize_rows``);
* ``residual, extrapolated ×θ``: R extrapolated linearly from the two last exact steps a' < a,
  O_K(s) + R(a) + θ·(R(a) − R(a'))·(s − a)/(a − a'); the first span has no a' and reuses R(a);
* ``dropped part, log-sum-exp``: O_K(s) merged by log-sum-exp with the dropped keys' attention
  O_D(a) and log-normaliser L_D(a) (what a kernel returning its log-sum-exp would allow);
* ``dropped part, fixed weight``: (1 − w_D(a))·O_K(s) + w_D(a)·O_D(a), w_D the dropped keys' share of
  the softmax mass at a.

Attention here is a float32 reference with the mask expanded to tokens (every call's full score
matrix, one head at a time), not the runtime's kernels: the forms differ in what they carry, and
this compares that alone. Reports per form the videos' PSNR and SSIM against dense and the
attention error ‖form − exact‖ / ‖exact‖ of every non-exact step (mean over layers, calls and
videos). Writes ``result.json`` and ``figure.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import textwrap
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench import family_params
from attnsearch.bench.output import add_run_options, environment, redrawn
from attnsearch.evaluate import load_generator
from attnsearch.evaluate.baselines import BASELINES
from attnsearch.evaluate.quality import overall, video_quality
from attnsearch.layer_plan import LayerPlan
from attnsearch.profiling.capture import capture_attention
from attnsearch.report.style import save_figure
from attnsearch.runtime.quantize import dequantize_rows, quantize_rows

STEPS = 20
FORMS = ("mask alone", "residual", "residual, kept in fp8", "residual, extrapolated ×0.5", "residual, extrapolated ×1",
         "dropped part, log-sum-exp", "dropped part, fixed weight")


def split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kept: torch.Tensor, scale: float):
    """Attention of q over the kept keys and over the dropped ones, each with its log-normaliser.

    q, k, v: [B, H, N, D] float32 (k, v with q's heads); kept: [H, N, N] bool. Returns O_K, L_K, O_D,
    L_D ([B, H, N, D] and [B, H, N]); a row with no key in a set has output 0 and L = −inf."""
    o_k, o_d = torch.zeros_like(q), torch.zeros_like(q)
    l_k = q.new_full(q.shape[:3], -math.inf)
    l_d = q.new_full(q.shape[:3], -math.inf)
    for b in range(q.shape[0]):  # all heads of one batch element at a time: [H, N, N] scores
        s = torch.matmul(q[b], k[b].transpose(-1, -2)).mul_(scale)
        top = s.amax(-1, keepdim=True)
        e = s.sub_(top).exp_()
        e_k = e * kept
        e_d = e.sub_(e_k)
        for ex, o, lse in ((e_k, o_k, l_k), (e_d, o_d, l_d)):
            z = ex.sum(-1)
            some = z > 0
            o[b] = torch.where(some[..., None], torch.matmul(ex, v[b]) / z.clamp_min(1e-30)[..., None], 0.0)
            lse[b] = torch.where(some, top[..., 0] + z.clamp_min(1e-30).log(), -math.inf)
    return o_k, l_k, o_d, l_d


def merge(o_a: torch.Tensor, l_a: torch.Tensor, o_b: torch.Tensor, l_b: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two disjoint key sets from each set's output and log-normaliser."""
    total = torch.logaddexp(l_a, l_b)
    w_a = torch.exp(l_a - total).nan_to_num(0.0)[..., None]
    return w_a * o_a + (1 - w_a) * o_b


class FormRunner:
    """The capture consumer: every call under the mask, its output by ``form`` (module docstring)."""

    def __init__(self, form: str, kept: torch.Tensor, exact_steps: tuple[int, ...]) -> None:
        self.form, self.kept, self.exact = form, kept, exact_steps
        self.errors: dict[int, list[float]] = defaultdict(list)
        self.reset()

    def reset(self) -> None:
        self.kept_at: dict[tuple, dict] = {}
        self.before: dict[tuple, dict] = {}
        self.ordinal: Counter = Counter()

    def span_start(self, step: int) -> int | None:
        starts = [a for a in self.exact if a <= step]
        return max(starts) if starts else None

    def __call__(self, call) -> torch.Tensor:
        q, k, v = (t.float() for t in (call.query, call.key, call.value))
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
        scale = call.kwargs.get("scale") or 1 / math.sqrt(q.shape[-1])
        n = q.shape[2]
        o_k, l_k, o_d, l_d = split_attention(q, k, v, self.kept[:, :n, :n], scale)
        exact = merge(o_k, l_k, o_d, l_d)
        key = (call.layer, self.ordinal[(call.step, call.layer)])
        self.ordinal[(call.step, call.layer)] += 1
        a = self.span_start(call.step)
        if call.step == a:
            if key in self.kept_at:
                self.before[key] = self.kept_at[key]
            self.kept_at[key] = {"step": a, "r": exact - o_k, "o_d": o_d, "l_d": l_d,
                                 "w_d": torch.exp(l_d - torch.logaddexp(l_k, l_d)).nan_to_num(0.0)[..., None]}
            return exact.to(call.query.dtype)
        if a is None or self.form == "mask alone":
            out = o_k
        else:
            c = self.kept_at[key]
            if self.form == "residual":
                out = o_k + c["r"]
            elif self.form == "residual, kept in fp8":
                out = o_k + dequantize_rows(*quantize_rows(c["r"]), torch.float32)
            elif self.form.startswith("residual, extrapolated"):
                theta = float(self.form.rsplit("×", 1)[1])
                out = o_k + c["r"]
                prev = self.before.get(key)
                if prev is not None:
                    out = out + theta * (c["r"] - prev["r"]) * (call.step - a) / (a - prev["step"])
            elif self.form == "dropped part, log-sum-exp":
                out = merge(o_k, l_k, c["o_d"], c["l_d"])
            elif self.form == "dropped part, fixed weight":
                out = (1 - c["w_d"]) * o_k + c["w_d"] * c["o_d"]
            else:
                raise ValueError(f"unknown form {self.form!r}")
        self.errors[call.step].append(float((out - exact).norm() / exact.norm().clamp_min(1e-30)))
        return out.to(call.query.dtype)


def figure(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_q) = plt.subplots(1, 2, figsize=(13, 4.6))
    patterns = list(dict.fromkeys(r["pattern"] for r in data["runs"]))
    first = [r for r in data["runs"] if r["pattern"] == patterns[0]]
    for r in first:
        steps = sorted(int(s) for s in r["attention_error_by_step"])
        ax_err.plot(steps, [r["attention_error_by_step"][str(s)] for s in steps], marker="o", ms=3, label=r["form"])
    for a in data["settings"]["exact_steps"]:
        ax_err.axvline(a, color="0.85", lw=0.8, zorder=0)
    ax_err.set(xlabel="denoising step", ylabel="attention error ‖form − exact‖ / ‖exact‖", yscale="log",
               title=f"{patterns[0]}: attention error per step (exact steps grey)")
    ax_err.legend(fontsize=7)
    width = 0.8 / len(patterns)
    for i, pat in enumerate(patterns):
        runs = [r for r in data["runs"] if r["pattern"] == pat]
        xs = [j + i * width for j in range(len(runs))]
        ax_q.bar(xs, [r["overall"]["psnr_db"] for r in runs], width, label=f"{pat} (density {runs[0]['density']:.3f})")
    forms = [r["form"] for r in data["runs"] if r["pattern"] == patterns[0]]
    ax_q.set_xticks([j + width * (len(patterns) - 1) / 2 for j in range(len(forms))],
                    [textwrap.fill(f, 13) for f in forms], fontsize=7)
    ax_q.set(ylabel="PSNR against dense (dB)", title=f"videos, mean of {data['settings']['seeds']}")
    ax_q.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_reuse_forms", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--density", type=float, default=0.3, help="mean density, the exact steps' dense calls counted")
    p.add_argument("--patterns", nargs="+", default=["energy_decay", "window"], choices=sorted(BASELINES))
    p.add_argument("--exact-steps", default="0,2,5,10")
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--seeds", type=int, default=16, help="held-out videos (noise seeds from 10,000)")
    p.add_argument("--block-size", type=int, default=64)
    add_run_options(p)
    args = p.parse_args(argv)
    if redrawn(args, figure):
        return
    try:
        exact = tuple(sorted({int(s) for s in args.exact_steps.split(",")}))
    except ValueError:
        p.error(f"--exact-steps: comma-separated integers, got {args.exact_steps!r}")
    if not exact or exact[0] != 0 or exact[-1] >= STEPS:
        p.error(f"--exact-steps: must start at 0 and stay below {STEPS}, got {args.exact_steps!r}")
    mask_density = args.density - len(exact) / STEPS  # the mask runs at the exact steps too, as in the runtime
    if mask_density <= 0:
        p.error(f"--density {args.density} leaves no kept blocks beside {len(exact)} exact steps of {STEPS}")
    started = time.time()
    f, h, w = args.size
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    geometry = generator.geometry()
    heads = generator.transformer.config.dim // generator.transformer.config.head_dim
    seeds = list(range(10_000, 10_000 + args.seeds))
    dense = {s: generator.generate(s, STEPS) for s in seeds}
    print(f"dense videos ({time.time() - started:.0f} s)", flush=True)
    runs = []
    for pattern in args.patterns:
        family = BASELINES[pattern]
        params, density = family_params(family, geometry, args.block_size, mask_density)
        layer = LayerPlan.single(family, params, geometry, heads, args.block_size)
        bs = args.block_size
        kept = layer.block_masks().repeat_interleave(bs, 1).repeat_interleave(bs, 2).to(args.device)
        for form in args.forms:
            runner = FormRunner(form, kept, exact)
            per_video = []
            for s in seeds:
                runner.reset()
                with capture_attention(generator.transformer, runner):
                    video = generator.generate(s, STEPS)
                quality = video_quality(video, dense[s])
                quality.pop("psnr_per_frame_db")
                per_video.append({"seed": s, **quality})
            by_step = {str(st): statistics.fmean(v) for st, v in sorted(runner.errors.items())}
            runs.append({"pattern": pattern, "params": dict(layer.head_specs[0][1]), "form": form,
                         "mask_density": density, "density": density + len(exact) / STEPS,
                         "overall": overall(per_video), "per_video": per_video,
                         "attention_error": statistics.fmean(by_step.values()), "attention_error_by_step": by_step})
            o = runs[-1]["overall"]
            print(f"{pattern:>12} {form:>28}: {o['psnr_db']:.2f} dB (worst {o['psnr_db_min']:.2f}) / SSIM {o['ssim']:.3f}, "
                  f"attention error {runs[-1]['attention_error']:.4f} ({time.time() - started:.0f} s)", flush=True)
    data = {"settings": {"size": list(args.size), "steps": STEPS, "seeds": args.seeds, "exact_steps": list(exact),
                         "target_density": args.density, "block_size": args.block_size},
            "runs": runs, "benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}}
    write_text_atomic(args.out / "result.json", json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    figure(data, args.out / "figure.png")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
