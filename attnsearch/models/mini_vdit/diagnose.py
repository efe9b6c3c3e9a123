"""Does a mini-vdit use each condition word, and does it know where a motion word puts the object?

    python -m attnsearch.models.mini_vdit.diagnose [--weights FILE | --checkpoint DIR] [--device cuda]

Two measurements on rendered clips of training conditions, from fixed noise, so that two weights
files (or a checkpoint's EMA weights in the middle of a training) compare:

* **word gaps**: the denoising loss when one slot's word is swapped (motion: the opposite direction;
  the other slots: the next word of the slot) minus the loss with the true words, at several flow
  times. A network that ignores a word has a gap of zero for it.
* **start-side excess** of a motion word: in the first frame, the object's mean chroma (max − min
  over RGB) on the side of the frame it starts from minus the other side, along its motion, for
  the clips themselves and for the network's clip estimate x̂₀ = x_t − t·v at a high flow time.
  Near pure noise a denoiser can only predict a condition's mean clip; objects enter from the side
  they move away from (``data.py``), so the clips' excess is positive, and a network whose estimate
  has none has not learned where the word puts the object: its samples then pick a direction at
  random, and the learned-condition check reads their motion at chance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from .data import DIRECTIONS, MOTIONS, SLOTS, Condition, condition_tokens, render, train_conditions
from .model import MiniVDiT, MiniVDiTConfig

#: Flow times of the word gaps (1 = pure noise).
GAP_TIMES = (0.97, 0.9, 0.7, 0.5)
#: Flow time of the start-side excess.
PRIOR_TIME = 0.97

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def swapped(tokens: torch.Tensor, slot: int) -> torch.Tensor:
    """``tokens`` [B, 4] with slot ``slot`` changed: the opposite direction for the motion slot, the
    next word of the slot (cyclically) for the others; null tokens stay null."""
    out = tokens.clone()
    col = out[:, slot]
    if SLOTS[slot][0] == "motion":
        opposite = [0] + [MOTIONS.index(_opposite(m)) + 1 for m in MOTIONS]
        out[:, slot] = torch.tensor(opposite, device=tokens.device)[col]
    else:
        n = len(SLOTS[slot][1])
        out[:, slot] = torch.where(col > 0, col % n + 1, col)
    return out


def _opposite(motion: str) -> str:
    dx, dy = DIRECTIONS[motion]
    return next(m for m, d in DIRECTIONS.items() if d == (-dx, -dy))


@torch.no_grad()
def word_gaps(model: Model, size=(8, 32, 32), clips: int = 32, times=GAP_TIMES, seed: int = 0,
              device: torch.device | str = "cpu") -> dict[float, dict[str, float]]:
    """{t: {slot: loss(swapped word) − loss(true words)}} over ``clips`` training-condition clips."""
    g = torch.Generator().manual_seed(seed)
    tokens = condition_tokens(train_conditions(clips, seed=seed))
    clip = render(tokens, *size, generator=g)
    noise = torch.randn(clip.shape, generator=g)
    clip, noise, tokens = clip.to(device), noise.to(device), tokens.to(device)
    out = {}
    for t in times:
        x = (1 - t) * clip + t * noise
        tt = torch.full((clips,), t, device=device)

        def loss(tok: torch.Tensor) -> float:
            return torch.nn.functional.mse_loss(model(x, tt, tok).float(), noise - clip).item()

        base = loss(tokens)
        out[t] = {slot: loss(swapped(tokens, i)) - base for i, (slot, _) in enumerate(SLOTS)}
    return out


def _start_side_excess(frames: torch.Tensor, motion: str) -> float:
    """Mean chroma of frame 0 on the side a ``motion`` object starts from minus the other side."""
    x = (frames.float().clamp(-1, 1) + 1) / 2                       # [B, 3, F, H, W] in [0, 1]
    chroma = (x.max(1).values - x.min(1).values)[:, 0].mean(0)      # [H, W] of frame 0
    dx, dy = DIRECTIONS[motion]
    h, w = chroma.shape
    if dx:
        first, second = chroma[:, : w // 2].mean(), chroma[:, w - w // 2:].mean()
        return float((first - second) * dx)                         # dx > 0: starts on the left half
    first, second = chroma[: h // 2].mean(), chroma[h - h // 2:].mean()
    return float((first - second) * dy)


@torch.no_grad()
def start_side_excess(model: Model, size=(8, 32, 32), clips: int = 24, t: float = PRIOR_TIME, seed: int = 0,
                      device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """{motion: {"clips": excess of the clips, "model": excess of the network's x̂₀ at ``t``}}, one
    condition per motion word (a red circle over stripes), ``clips`` renders of each."""
    out = {}
    for motion in MOTIONS:
        tokens = condition_tokens([Condition("circle", "red", motion, "stripes")] * clips)
        g = torch.Generator().manual_seed(seed)
        clip = render(tokens, *size, generator=g)
        noise = torch.randn(clip.shape, generator=g)
        clip, noise, tokens = clip.to(device), noise.to(device), tokens.to(device)
        x = (1 - t) * clip + t * noise
        x0 = x - t * model(x, torch.full((clips,), t, device=device), tokens).float()
        out[motion] = {"clips": _start_side_excess(clip, motion), "model": _start_side_excess(x0, motion)}
    return out


def load(weights: str | None, checkpoint: str | None, device: str) -> MiniVDiT:
    """The model of an exported weights file, of a training checkpoint's EMA weights, or the shipped one."""
    if checkpoint is not None:
        path = Path(checkpoint) / "checkpoint.pt"
        if not path.is_file():
            raise SystemExit(f"--checkpoint {checkpoint}: no checkpoint.pt there")
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = MiniVDiT(MiniVDiTConfig.from_dict(state["config"]))
        model.load_state_dict(state["ema"])
        return model.to(device).eval()
    from . import WeightsMissingError, load_pretrained

    try:
        return load_pretrained(device=device, path=weights)
    except (WeightsMissingError, ValueError) as err:
        raise SystemExit(str(err)) from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m attnsearch.models.mini_vdit.diagnose",
                                description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", default=None, help="exported safetensors (default: the shipped weights)")
    src.add_argument("--checkpoint", default=None, help="a training folder: its checkpoint's EMA weights")
    p.add_argument("--size", type=int, nargs=3, default=(8, 32, 32), metavar=("F", "H", "W"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    model = load(args.weights, args.checkpoint, args.device)
    print("word gaps: loss with the word swapped − loss with the true words (× 1e-4)")
    print("  t      " + "  ".join(f"{slot:>10}" for slot, _ in SLOTS))
    for t, gaps in word_gaps(model, tuple(args.size), device=args.device).items():
        print(f"  {t:<5}  " + "  ".join(f"{1e4 * gaps[slot]:>+10.1f}" for slot, _ in SLOTS))
    print(f"start-side excess of frame 0's chroma (clips | network's estimate at t = {PRIOR_TIME})")
    for motion, e in start_side_excess(model, tuple(args.size), device=args.device).items():
        print(f"  {motion:<6} {e['clips']:+.4f} | {e['model']:+.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
