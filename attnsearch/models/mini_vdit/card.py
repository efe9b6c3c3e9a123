"""Write mini-vdit's model card: loss curve, sample grid and the learned-condition check.

    python -m attnsearch.models.mini_vdit.card [--weights FILE] [--out DIR] [--device cuda] [--sizes 8x32x32]

Generates the held-out conditions from fixed noise seeds, reads each clip's colour and motion
back with the pixel-statistics checker (``checker``) and counts the clips that match their
condition, at each size of ``CHECKS`` (``--sizes``: some of them; 16 × 64 × 64 at 20 steps is a GPU
job, 8 × 32 × 32 at 4 steps runs on a CPU in about a minute); draws the first clips' frames of the first size
checked as a grid and the training loss; writes ``README.md``, ``samples.png``, ``loss.png`` and
``card.json`` into ``--out`` (default: the weights' folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ...atomic_io import write_text_atomic
from ...report.style import save_figure
from . import (DEFAULT_GUIDANCE, DEFAULT_STEPS, EVAL_SEED_START, NUM_HELDOUT, condition_accuracy, heldout_conditions,
               load_pretrained, make_noise, read_clip, sample, to_frames, weights_path)
from .data import NUM_CONDITIONS
from .train import SIZES

#: The learned-condition check: (clip size, sampling steps) — the main training size at the
#: sampler's default steps, and the size and steps the CPU test (tests/models) repeats.
CHECK_STEPS = 4
CHECKS = (((16, 64, 64), DEFAULT_STEPS), ((8, 32, 32), CHECK_STEPS))


def _size_key(size) -> str:
    return "x".join(map(str, size))


def generate(model, conditions, size, seed_start: int, steps: int, guidance: float, batch: int = 16) -> torch.Tensor:
    """Frames [B, 3, F, H, W] in [0, 1] of one clip per condition, noise seed ``seed_start + i``."""
    out = []
    for i in range(0, len(conditions), batch):
        part = conditions[i:i + batch]
        noise = torch.cat([make_noise(seed_start + i + j, *size) for j in range(len(part))])
        out.append(to_frames(sample(model, part, noise, steps=steps, guidance=guidance)).cpu())
    return torch.cat(out)


def sample_grid(frames: torch.Tensor, conditions, path: Path, columns: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frames.shape[0]
    idx = torch.linspace(0, frames.shape[2] - 1, columns).round().long()
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.25))
    for r in range(rows):
        reading = read_clip(frames[r])
        for c in range(columns):
            ax = axes[r, c]
            ax.imshow(frames[r, :, idx[c]].permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
        mark = "✓" if reading.matches(conditions[r]) else "✗"
        axes[r, 0].set_title(f"{conditions[r]}   read: {reading.colour}, {reading.motion} {mark}",
                             fontsize=7, loc="left")
    fig.suptitle("mini-vdit samples on held-out conditions (frames left to right)", fontsize=9)
    save_figure(fig, path, tight=True)


def loss_plot(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([p["step"] for p in log], [p["loss"] for p in log], lw=1.2)
    ax.set_xlabel("step"), ax.set_ylabel("flow-matching loss (EMA 0.98)"), ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title("mini-vdit training loss", fontsize=9)
    save_figure(fig, path, tight=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m attnsearch.models.mini_vdit.card", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None, help="safetensors file (default: the shipped weights)")
    p.add_argument("--out", default=None, help="folder for the card (default: the weights' folder)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--grid", type=int, default=8, help="clips in the sample grid")
    p.add_argument("--conditions", type=int, default=NUM_HELDOUT, help="held-out conditions checked")
    p.add_argument("--note", action="append", default=[], help="a paragraph the card adds under its check")
    p.add_argument("--sizes", nargs="+", default=None, choices=[_size_key(size) for size, _ in CHECKS],
                   help="run only these checks (default: all; the first run draws the sample grid)")
    args = p.parse_args(argv)
    wpath = Path(args.weights) if args.weights else weights_path()
    out = Path(args.out) if args.out else wpath.parent
    out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(device=args.device, path=wpath)
    conds = heldout_conditions(args.conditions)
    checks = {}
    chosen = [(size, steps) for size, steps in CHECKS if args.sizes is None or _size_key(size) in args.sizes]
    for size, steps in chosen:
        t0 = time.time()
        frames = generate(model, conds, size, EVAL_SEED_START, steps, args.guidance)
        acc = condition_accuracy(frames, conds)
        colour = sum(read_clip(f).colour == c.colour for f, c in zip(frames, conds)) / len(conds)
        motion = sum(read_clip(f).motion == c.motion for f, c in zip(frames, conds)) / len(conds)
        checks[_size_key(size)] = {"steps": steps, "accuracy": acc, "colour": colour, "motion": motion,
                                   "seconds": round(time.time() - t0, 1)}
        print(f"{size}, {steps} steps: colour and motion match in {acc:.1%} of {len(conds)} held-out clips "
              f"(colour {colour:.1%}, motion {motion:.1%})", flush=True)
        if size == chosen[0][0]:
            sample_grid(frames[:args.grid], conds[:args.grid], out / "samples.png")
    from safetensors import safe_open

    with safe_open(str(wpath), framework="pt") as f:
        meta = f.metadata()
    loss = json.loads((wpath.parent / "loss.json").read_text())
    loss_plot(loss["log"], out / "loss.png")
    card = {"weights": wpath.name, "steps": int(meta["steps"]), "final_loss": float(meta["final_loss"]) if meta.get("final_loss") else None,
            "training": json.loads(meta["training"]), "config": json.loads(meta["config"]),
            "script_commit": meta.get("script_commit", ""), "notes": list(args.note),
            "sampling": {"guidance": args.guidance, "seeds_from": EVAL_SEED_START},
            "conditions": len(conds), "condition_check": checks, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__}
    write_text_atomic(out / "card.json", json.dumps(card, indent=1) + "\n")
    write_text_atomic(out / "README.md", render_card(card))
    print(f"wrote the model card to {out}")


def render_card(card: dict) -> str:
    cfg, tr = card["config"], card["training"]
    lines = [
        "# mini-vdit model card", "",
        "A small video diffusion transformer trained by attnsearch as its reference model: attention that "
        "was learned, not planted. Code: `attnsearch/models/mini_vdit/`.", "",
        "## Architecture",
        f"- {cfg['depth']} blocks, width {cfg['dim']} ({cfg['dim'] // cfg['head_dim']} heads × head_dim "
        f"{cfg['head_dim']}), MLP ratio {cfg['mlp_ratio']}, patch {'×'.join(map(str, cfg['patch']))} over RGB "
        "pixels: a 16 × 64 × 64 clip is 4,096 self-attention tokens.",
        "- 3-D RoPE (frame, row, column)" + (", Fourier features of each token's absolute clip coordinates "
                                              "(time in the data's frames, space in shares of the frame)"
                                              if cfg.get("absolute_position") else "")
        + ", RMS-normed q/k, adaLN-zero timestep modulation (shared projection + "
        "per-block table" + (", the mean condition token added to the timestep embedding" if cfg.get("pooled_condition")
                             else "") + "), cross-attention to 4 condition tokens (kind, colour, motion, background).",
        "- Rectified flow (velocity = noise − clip); Euler sampling on a shifted time grid with classifier-free "
        "guidance, conditional and null branches batched into one forward per step.", "",
        "## Data",
        "Rendered on the fly in torch (`data.py`): one coloured object (circle, square, triangle, ring, cross; "
        "red, green, blue, yellow, magenta, cyan) moving left/right/up/down while it rotates and pulses, over a "
        "low-saturation background (stripes, checker, waves, gradient) that pans and zooms, with up to two "
        "grey distractors that bounce, rotate and pass in front of or behind it. "
        f"Clip sizes trained: {', '.join('×'.join(map(str, s)) for s in SIZES)} (frames × height × width). "
        f"{NUM_HELDOUT} of the {NUM_CONDITIONS} conditions are held out of training and of every search.", "",
        "## Training",
        "`python -m attnsearch.models.mini_vdit.train` (seed 0"
        + (f", the script at commit {card['script_commit']}" if card.get("script_commit") else "")
        + f"): {card['steps']} steps of ~{tr['batch_tokens']:,} "
        f"tokens, AdamW lr {tr['lr']}, cosine schedule, "
        + (f"logit-normal flow times shifted towards noise (`--time-shift {tr['time_shift']:g}`), "
           if tr.get("time_shift", 1.0) != 1.0 else "logit-normal flow times, ")
        + f"EMA 0.999 (shipped in fp16). Final loss "
        f"{card['final_loss'] if card['final_loss'] is None else round(card['final_loss'], 4)}.", "",
        "![loss](loss.png)", "",
        "## Learned-condition check",
        f"{card['conditions']} held-out conditions, noise seeds from {card['sampling']['seeds_from']}, "
        f"Euler sampling, guidance {card['sampling']['guidance']}; a clip counts when "
        "the checker (`checker.py`: saturated pixels → colour by nearest hue, centroid drift → direction) reads "
        f"both its colour and its motion correctly. Measured on {card['device']} (torch {card['torch']}):", "",
        "| clip size | steps | colour and motion | colour | motion |", "|---|---|---|---|---|",
    ]
    for size, c in card["condition_check"].items():
        lines.append(f"| {size} | {c['steps']} | {c['accuracy']:.1%} | {c['colour']:.1%} | {c['motion']:.1%} |")
    missing = [f"{k} at {steps} steps" for k, steps in ((_size_key(size), steps) for size, steps in CHECKS)
               if k not in card["condition_check"]]
    if missing:
        lines += ["", f"Not run for this card (`card --sizes`): {', '.join(missing)}."]
    weak = [k for k in ("colour", "motion") if min(c[k] for c in card["condition_check"].values()) < 0.8]
    if weak:
        lines += ["", f"Below the 80% this check asks for: {' and '.join(weak)} (chance is "
                  f"{1 / 6:.0%} for colour, 25% for motion). Plans evaluated on these weights are judged against "
                  "videos whose own trajectories are not yet stable."]
    for note in card.get("notes", []):
        lines += ["", note]
    lines += ["", "`tests/models/test_mini_vdit_weights.py` repeats the 8 × 32 × 32 check on the CPU from these weights.",
              "", "![samples](samples.png)", "",
              "Regenerate: `python -m attnsearch.models.mini_vdit.card` (CUDA if present).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
