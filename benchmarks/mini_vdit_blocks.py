"""How well can any static block mask hold mini-vdit's videos? Masks ranked by measured attention mass,
with and without a pooled stand-in for the blocks they skip.

    python -m benchmarks.mini_vdit_blocks --out reports/mini_vdit_blocks [--seeds 16] [--device cuda]

The plan families (``docs/design.md``) are parametric shapes. This benchmark drops the shape: it
records, along the same trajectories the profile uses (training conditions ``--conditions``, noise
seeds 0…, every sampling step), each head's mean attention mass per (query block, key block), and
keeps for every head the blocks that hold the most of it:

* ``rows``: the top ⌈d · blocks⌉ key blocks of every query-block row (every head at density d);
* ``global``: the blocks of the largest mass over all heads and layers until the kept fraction is d
  (heads with concentrated attention go sparse, diffuse ones stay near dense).

No family the search ships can keep a block set these masks cannot, so, at a density, they bound
what a static block plan holds by the mass criterion. Each runs as is (``exact``: skipped blocks
contribute nothing, the design's semantics) and with a pooled remainder (``pooled``): every skipped
key block j of a query row adds one term, its mean key k̄ⱼ with logit q·k̄ⱼ·scale + ln nⱼ and value
the block's mean value v̄ⱼ (nⱼ tokens in the block). The pooled term is exact when a block's keys
are equal, and costs one pooled key per skipped block.

Attention here is computed in PyTorch (fp32 softmax of the bf16 projections), not by the runtime's
kernels; the dense videos come from the model's own SDPA. For each (selection, density, remainder):
16 held-out videos against dense from identical noise (PSNR / SSIM, ``attnsearch.evaluate``'s
metrics) and the mean relative error of every attention call along those trajectories against
full attention on the same inputs. Writes ``result.json`` and ``figure.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.evaluate import load_generator, video_quality
from attnsearch.evaluate.generator import Video
from attnsearch.models.mini_vdit import make_noise, sample, train_conditions
from attnsearch.patterns import expand_block_mask
from attnsearch.profiling import capture_attention
from attnsearch.report.style import save_figure

BLOCK = 64
DENSITIES = (0.15, 0.2, 0.3)
SELECTIONS = ("rows", "global")
REMAINDERS = ("exact", "pooled")


def block_mass(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean attention mass of every (query block, key block) [heads, nb, nb], averaged over the batch."""
    n = q.shape[-2]
    nb = math.ceil(n / BLOCK)
    p = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)   # [B, H, N, N]
    p = torch.nn.functional.pad(p, (0, nb * BLOCK - n, 0, nb * BLOCK - n))
    per_key_block = p.unflatten(-1, (nb, BLOCK)).sum(-1)                              # [B, H, N', nb]
    rows = torch.full((nb,), float(BLOCK), device=q.device)
    rows[-1] = n - (nb - 1) * BLOCK
    return (per_key_block.unflatten(-2, (nb, BLOCK)).sum(-2) / rows[:, None]).mean(0)


def select_rows(mass: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ⌈density · nb⌉ key blocks of every query-block row of every head."""
    nb = mass.shape[-1]
    top = mass.topk(max(1, math.ceil(density * nb - 1e-9)), dim=-1).indices
    return torch.zeros_like(mass, dtype=torch.bool).scatter_(-1, top, True)


def select_global(mass: torch.Tensor, density: float) -> torch.Tensor:
    """Every query-block row's heaviest block, then the blocks of largest mass over every head of every
    layer until a ``density`` share of all blocks is kept (or only the floor, if it holds more)."""
    keep = select_rows(mass, 0.0).flatten()
    more = round(density * keep.numel()) - int(keep.sum())
    if more > 0:
        keep[mass.flatten().masked_fill(keep, -1.0).topk(more).indices] = True
    return keep.view_as(mass)


def masked_attention(q, k, v, keep: torch.Tensor, scale: float, pooled: bool) -> torch.Tensor:
    """softmax(q kᵀ · scale) v over the kept blocks (``keep`` [H, nb, nb]), plus one pooled term per
    skipped key block when ``pooled``; fp32 inside, q's dtype out."""
    n, d = q.shape[-2], q.shape[-1]
    nb = keep.shape[-1]
    qf, kf, vf = q.float(), k.float(), v.float()
    s = (qf @ kf.transpose(-1, -2)) * scale
    tokens = expand_block_mask(keep, n, BLOCK)
    s = s.masked_fill(~tokens, -math.inf)
    if pooled:
        pad = nb * BLOCK - n
        counts = torch.full((nb,), float(BLOCK), device=q.device)
        counts[-1] = BLOCK - pad
        kp = torch.nn.functional.pad(kf, (0, 0, 0, pad)).unflatten(-2, (nb, BLOCK)).sum(-2) / counts[:, None]
        vp = torch.nn.functional.pad(vf, (0, 0, 0, pad)).unflatten(-2, (nb, BLOCK)).sum(-2) / counts[:, None]
        sp = (qf @ kp.transpose(-1, -2)) * scale + counts.log()
        skipped = (~keep).repeat_interleave(BLOCK, -2)[..., :n, :]
        s = torch.cat([s, sp.masked_fill(~skipped, -math.inf)], dim=-1)
        vf = torch.cat([vf, vp], dim=-2)
    return (torch.softmax(s, dim=-1) @ vf).to(q.dtype)


def _scale(call) -> float:
    scale = call.kwargs.get("scale")
    return 1.0 / math.sqrt(call.query.shape[-1]) if scale is None else float(scale)


def measure_mass(model, conditions, size, steps: int, guidance: float, device) -> dict[int, torch.Tensor]:
    """Per layer, each head's block mass averaged over every step of every condition's trajectory."""
    total: dict[int, torch.Tensor] = {}
    count: dict[int, int] = {}

    def consumer(call):
        m = block_mass(call.query, call.key, _scale(call))
        total[call.layer] = total.get(call.layer, 0) + m
        count[call.layer] = count.get(call.layer, 0) + 1
        return None

    for i, cond in enumerate(conditions):
        noise = make_noise(i, *size).to(device)
        with torch.no_grad(), capture_attention(model, consumer):
            sample(model, [cond], noise, steps=steps, guidance=guidance)
    return {layer: total[layer] / count[layer] for layer in sorted(total)}


def run(generator, keep: dict[int, torch.Tensor], pooled: bool, seed: int, steps: int) -> tuple[Video, list[float]]:
    """One held-out video under the masks, and every attention call's relative error on its inputs."""
    errors: list[float] = []

    def consumer(call):
        scale = _scale(call)
        out = masked_attention(call.query, call.key, call.value, keep[call.layer], scale, pooled)
        full = torch.softmax((call.query.float() @ call.key.float().transpose(-1, -2)) * scale, -1) @ call.value.float()
        errors.append(((out.float() - full).norm() / full.norm()).item())
        return out

    with capture_attention(generator.transformer, consumer):
        video = generator.generate(seed, steps)
    return video, errors


def figure(rows: list[dict], reference: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for sel in SELECTIONS:
        for rem, ls in zip(REMAINDERS, ("-", "--")):
            pts = sorted((r["density"], r["psnr_db"], r["attention_rel_err"]) for r in rows
                         if r["selection"] == sel and r["remainder"] == rem)
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", label=f"{sel}, {rem}")
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], ls, marker="o", label=f"{sel}, {rem}")
    for name in dict.fromkeys(r["name"] for r in reference):
        pts = sorted((r["density"], r["psnr_db"]) for r in reference if r["name"] == name)
        style = {"searched plan": ("x", "black"), "global energy_decay": ("+", "grey")}.get(name, ("^", "grey"))
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], ":", marker=style[0], color=style[1], label=name)
    axes[0].axhline(30, color="grey", lw=0.8, ls=":")
    axes[0].set_ylabel("PSNR against dense (dB, held-out videos)")
    axes[1].set_ylabel("attention relative error (mean over calls)")
    for ax in axes:
        ax.set_xlabel("kept-block density")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("mini-vdit: static block masks ranked by attention mass, with and without a pooled remainder")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_blocks", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=16, help="held-out videos per run")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--conditions", type=int, default=4, help="training conditions whose trajectories rank blocks")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reference", type=Path, action="append", default=[],
                   help="a result.json of benchmarks.mini_vdit_fidelity to draw its plans and baselines beside")
    args = p.parse_args(argv)
    if not all(0 < d <= 1 for d in args.densities):
        p.error("--densities: each must be in (0, 1]")
    started = time.time()
    f, h, w = args.size
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    model = generator.transformer
    mass = measure_mass(model, train_conditions(args.conditions), args.size, args.steps, generator.guidance,
                        args.device)
    print(f"block mass of {len(mass)} layers from {args.conditions} trajectories ({time.time() - started:.0f} s)",
          flush=True)
    seeds = list(range(10000, 10000 + args.seeds))
    with torch.no_grad():
        dense = [generator.generate(s, args.steps) for s in seeds]
    stacked = torch.stack([mass[layer] for layer in sorted(mass)])               # [L, H, nb, nb]
    rows = []
    for sel in SELECTIONS:
        for d in args.densities:
            keep_all = select_rows(stacked, d) if sel == "rows" else select_global(stacked, d)
            keep = {layer: keep_all[i] for i, layer in enumerate(sorted(mass))}
            density = keep_all.float().mean().item()
            for rem in REMAINDERS:
                quality, errors = [], []
                with torch.no_grad():
                    for s, ref in zip(seeds, dense, strict=True):
                        video, errs = run(generator, keep, rem == "pooled", s, args.steps)
                        quality.append(video_quality(video, ref))
                        errors.extend(errs)
                row = {"selection": sel, "target": d, "remainder": rem, "density": density,
                       "psnr_db": statistics.fmean(q["psnr_db"] for q in quality),
                       "psnr_db_min": min(q["psnr_db"] for q in quality),
                       "ssim": statistics.fmean(q["ssim"] for q in quality),
                       "rel_l2_latents": statistics.fmean(q["rel_l2_latents"] for q in quality),
                       "attention_rel_err": statistics.fmean(errors),
                       "attention_rel_err_median": statistics.median(errors),
                       "per_layer_density": [round(keep_all[i].float().mean().item(), 4) for i in range(len(keep))]}
                rows.append(row)
                print(f"{sel:>6} @ {density:.3f} {rem:>6}: PSNR {row['psnr_db']:.1f} dB (min {row['psnr_db_min']:.1f}) "
                      f"SSIM {row['ssim']:.3f} attention rel. error {row['attention_rel_err']:.3f} "
                      f"(median {row['attention_rel_err_median']:.3f})", flush=True)
    reference = []
    for path in args.reference:
        data = json.loads(path.read_text())
        for r in data["runs"]:
            name = "searched plan" if r["kind"] == "plan" else f"global {r['baseline']['baseline']}"
            reference.append({"name": name, "density": r["density"], "psnr_db": r["overall"]["psnr_db"]})
    args.out.mkdir(parents=True, exist_ok=True)
    figure(rows, reference, args.out / "figure.png")
    data = {"benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1),
                          "seeds": seeds, "steps": args.steps, "size": args.size, "conditions": args.conditions,
                          "guidance": generator.guidance, "block_size": BLOCK},
            "rows": rows}
    write_text_atomic(args.out / "result.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
