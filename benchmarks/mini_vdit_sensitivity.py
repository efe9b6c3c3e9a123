"""How much mini-vdit's generated videos move when every self-attention output is perturbed by
random noise: the sampler's own amplification, against which a plan's error is read.

    python -m benchmarks.mini_vdit_sensitivity --out reports/mini_vdit_sensitivity [--size 8 32 32] [--steps 8]

Every self-attention call's output o becomes o + ε·rms(o)·z (z standard normal, fresh per call,
seeded) at every step; the final frames of held-out videos (noise seeds from 10,000) are compared
with the unperturbed ones (PSNR on frames in [0, 1]). A sampler that amplified any perturbation
would lose its PSNR at small ε; one that does not leaves a plan's structured error as the cause of
a low PSNR. Writes ``result.json`` and ``figure.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.metrics import psnr
from attnsearch.models.mini_vdit import (DEFAULT_GUIDANCE, EVAL_SEED_START, heldout_conditions, load_pretrained,
                                         make_noise, sample, to_frames)
from attnsearch.profiling.capture import capture_attention
from attnsearch.report.style import save_figure

NOISE_LEVELS = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_sensitivity", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", type=int, nargs=3, default=[8, 32, 32], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--steps", type=int, default=8, help="sampling steps")
    p.add_argument("--videos", type=int, default=4, help="held-out videos")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(device=args.device)
    conds = heldout_conditions(args.videos)
    noise = torch.cat([make_noise(EVAL_SEED_START + i, *args.size) for i in range(args.videos)])
    ref = to_frames(sample(model, conds, noise, steps=args.steps)).cpu()
    rows = []
    for eps in NOISE_LEVELS:
        gen = torch.Generator(device=args.device).manual_seed(0)

        def perturb(call, eps=eps, gen=gen):
            out = torch.nn.functional.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs)
            rms = out.float().pow(2).mean().sqrt()
            z = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float32)
            return (out.float() + eps * rms * z).to(out.dtype)

        with capture_attention(model, perturb):
            out = to_frames(sample(model, conds, noise, steps=args.steps)).cpu()
        rows.append({"noise": eps, "psnr_db": psnr(out, ref, 1.0)})
        print(f"noise {eps:g} × rms: final-frame PSNR {rows[-1]['psnr_db']:.1f} dB", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogx([r["noise"] for r in rows], [r["psnr_db"] for r in rows], "o-")
    ax.axhline(30, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("random noise per attention output (× its rms)")
    ax.set_ylabel("final frames PSNR vs unperturbed (dB)")
    ax.set_title(f"mini-vdit {'×'.join(map(str, args.size))}, {args.steps} steps, {args.videos} videos", fontsize=9)
    save_figure(fig, args.out / "figure.png", tight=True)
    data = {"rows": rows, "settings": {"size": args.size, "steps": args.steps, "videos": args.videos,
                                       "guidance": DEFAULT_GUIDANCE, "seeds_from": EVAL_SEED_START},
            "benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}}
    write_text_atomic(args.out / "result.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
