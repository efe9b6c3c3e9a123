"""Train mini-vdit from scratch on procedurally rendered clips (rectified flow), resumably.

    python -m attnsearch.models.mini_vdit.train --out train-out/mini-vdit --minutes 8.5
    python -m attnsearch.models.mini_vdit.train --out train-out/mini-vdit --minutes 8.5   # resumes
    python -m attnsearch.models.mini_vdit.train --out train-out/mini-vdit --export        # EMA → fp16 weights

The first call sizes the schedule (``--total-steps``) to ``--total-minutes`` of training from
the time its first steps take, and stores it. Each call trains until ``--minutes`` of wall time or
``--total-steps`` are reached, then writes
``checkpoint.pt`` (weights, EMA, optimiser, step, random state, loss log) atomically, so the
schedule runs in GPU jobs of a few minutes each and a later call resumes exactly where the last
one stopped. Everything is seeded: data, initial weights, condition dropout and flow times.

Training: AdamW (lr 4e-4 after a 300-step warm-up, cosine to 10% at ``--total-steps``), bf16
autocast on CUDA, gradient clipping at 1, EMA 0.999 of the weights (the EMA is what ships).
Flow times are logit-normal, sent towards noise by the sampler's map with ``--time-shift S``
(``sampling.shift_time``; the default S = 8 puts 45% of the steps above t = 0.9, S = 1 only 1.4%).
Near pure noise the network must predict a condition's mean clip, and that is the only place a
motion word can act (at lower noise the noisy clip shows where the object goes): with S = 1 the
network learns colour but ignores the motion word; with S = 8 it learns both (the model card).
Each step draws one clip size from ``SIZES`` (weights ``SIZE_WEIGHTS``; ``--size`` fixes one) with
a batch of about ``--batch-tokens`` tokens, so the model sees several resolutions and frame counts;
10% of the conditions are replaced by the null condition (classifier-free guidance).

``--init WEIGHTS`` starts a new schedule from exported weights instead of random ones, with their
architecture (the checkpoint and the exported metadata record the file's sha256 and its own
training), so a model can be trained on in another schedule.

``--export`` writes ``weights/mini-vdit.safetensors`` (fp16 EMA weights, config and training
facts in its metadata) and ``loss.json`` into ``--weights-dir`` (default: the package's folder).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from ...atomic_io import replacing, write_text_atomic
from .data import random_batch
from .model import WEIGHTS_DIR, WEIGHTS_FILE, MiniVDiT, MiniVDiTConfig, read_weights
from .sampling import shift_time

#: Clip sizes (frames, height, width) trained on, and how often each is drawn.
SIZES = ((16, 64, 64), (8, 32, 32), (12, 48, 48))
SIZE_WEIGHTS = (0.6, 0.25, 0.15)
SEED = 0
WARMUP = 300
COND_DROPOUT = 0.1
EMA_DECAY = 0.999
LOG_EVERY = 50
#: Steps timed (after 5 warm-up steps) to size the schedule when --total-steps is not given.
TIMING_STEPS = 25


def lr_at(step: int, total: int, peak: float) -> float:
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / max(1, total - WARMUP))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _state(model, ema, opt, step, gen, log, args) -> dict:
    return {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
            "gen": gen.get_state(), "cpu_rng": torch.get_rng_state(), "log": log,
            "config": model.config.to_dict(), "args": {"total_steps": args.total_steps, "lr": args.lr,
                                                      "batch_tokens": args.batch_tokens,
                                                      "time_shift": args.time_shift,
                                                      "init_from": getattr(args, "init_from", None),
                                                      "size": getattr(args, "size", None)}}


def init_weights(path: Path) -> tuple[MiniVDiTConfig, dict[str, torch.Tensor], dict]:
    """``--init``'s weights (:func:`model.read_weights`) and what the checkpoint records of them (file,
    sha256, their own steps and training). SystemExit with one line when they cannot be read."""
    import hashlib

    if not path.is_file():
        raise SystemExit(f"--init {path}: no such file")
    try:
        config, state, meta = read_weights(path)
    except ValueError as err:
        raise SystemExit(f"--init {err}") from None
    record = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "steps": int(meta.get("steps", 0)), "training": json.loads(meta.get("training", "{}")),
              "script_commit": meta.get("script_commit", "")}
    return config, state, record


def save_checkpoint(path: Path, state: dict) -> None:
    with replacing(path) as tmp:
        torch.save(state, tmp)


def train(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(SEED)
    state = torch.load(ckpt_path, map_location=device, weights_only=False) if ckpt_path.exists() else None
    init = init_weights(Path(args.init)) if getattr(args, "init", None) and state is None else None
    config = MiniVDiTConfig.tiny() if args.tiny else MiniVDiTConfig()
    if init is not None:
        if args.tiny and init[0] != config:
            raise SystemExit(f"--init {args.init}: weights of config {init[0].to_dict()}, --tiny asks for "
                             f"{config.to_dict()}")
        config = init[0]   # a schedule started from weights has their architecture
    elif state is not None and state["args"].get("init_from"):
        config = MiniVDiTConfig.from_dict(state["config"])
    model = MiniVDiT(config).to(device)
    if init is not None:
        model.load_state_dict(init[1])
        args.init_from = init[2]
        print(f"initialised from {args.init} ({init[2]['steps']} steps, sha256 {init[2]['sha256'][:12]})", flush=True)
    ema = MiniVDiT(config).to(device).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator(device=device).manual_seed(SEED)
    step, log = 0, []
    if state is not None:
        if state["config"] != config.to_dict():
            raise SystemExit(f"{ckpt_path}: checkpoint config {state['config']} differs from {config.to_dict()}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu())
        torch.set_rng_state(state["cpu_rng"].cpu())
        step, log = state["step"], state["log"]
        args.total_steps = args.total_steps or state["args"]["total_steps"]
        args.init_from = state["args"].get("init_from")
        if state["args"].get("time_shift", 1.0) != args.time_shift:
            raise SystemExit(f"{ckpt_path}: the schedule was started with --time-shift "
                             f"{state['args'].get('time_shift', 1.0)}, not {args.time_shift}")
        print(f"resumed at step {step} from {ckpt_path}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"mini-vdit: {n_params / 1e6:.2f} M parameters, {config}, device {device}", flush=True)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    weights = torch.tensor(SIZE_WEIGHTS)
    start, last_print, running = time.time(), time.time(), None
    budget = args.minutes * 60.0
    model.train()
    total_steps, calls_at_start, timing_start = args.total_steps, step, start
    while (total_steps is None or step < total_steps) and time.time() - start < budget:
        f, h, w = SIZES[int(torch.multinomial(weights, 1))]
        if args.size:
            f, h, w = args.size
        elif args.tiny:
            f, h, w = 4, 16, 16
        tokens = f * (h // config.patch[1]) * (w // config.patch[2])
        batch = max(1, args.batch_tokens // tokens)
        clip, cond = random_batch(batch, f, h, w, generator=gen, device=device)
        drop = torch.rand(batch, generator=gen, device=device) < COND_DROPOUT
        cond = torch.where(drop.view(-1, 1), torch.zeros_like(cond), cond)
        # Logit-normal flow times, shifted by --time-shift (see the module docstring).
        t = shift_time(torch.sigmoid(torch.randn(batch, generator=gen, device=device)), args.time_shift)
        noise = torch.randn(clip.shape, generator=gen, device=device)
        tb = t.view(-1, 1, 1, 1, 1)
        x_t = (1 - tb) * clip + tb * noise
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total_steps or 10**9, args.lr)
        with autocast:
            pred = model(x_t, t, cond)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - clip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(EMA_DECAY, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        value = loss.detach()
        running = value if running is None else 0.98 * running + 0.02 * value
        if total_steps is None and step == calls_at_start + TIMING_STEPS:
            per_step = (time.time() - timing_start) / (TIMING_STEPS - 5)
            total_steps = args.total_steps = int(args.total_minutes * 60 / per_step)
            print(f"{per_step * 1e3:.1f} ms per step → a schedule of {total_steps} steps "
                  f"({args.total_minutes} min)", flush=True)
        elif total_steps is None and step == calls_at_start + 5:
            timing_start = time.time()
        if step % LOG_EVERY == 0:
            log.append({"step": step, "loss": round(float(running), 5), "seconds": round(time.time() - start, 1)})
        if time.time() - last_print > 30 or step == 1:
            last_print = time.time()
            print(f"step {step}/{total_steps or '?'}  loss {float(running):.4f}  "
                  f"lr {lr_at(step, total_steps or 10**9, args.lr):.2e}  {time.time() - start:.0f}s", flush=True)
    save_checkpoint(ckpt_path, _state(model, ema, opt, step, gen, log, args))
    print(f"saved {ckpt_path} at step {step} (loss {float('nan') if running is None else float(running):.4f})",
          flush=True)
    return ckpt_path


def _commit() -> str:
    """The commit of the code that trained (GIT_COMMIT, else git's HEAD; empty when neither is known)."""
    import os
    import subprocess

    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"][:12]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def export(args: argparse.Namespace) -> Path:
    """EMA weights of the checkpoint → fp16 safetensors + loss log, atomically."""
    from safetensors.torch import save_file

    state = torch.load(Path(args.out) / "checkpoint.pt", map_location="cpu", weights_only=False)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in state["ema"].items()}
    meta = {"format": "attnsearch-mini-vdit", "version": "1", "config": json.dumps(state["config"]),
            "steps": str(state["step"]), "final_loss": f"{state['log'][-1]['loss']:.5f}" if state["log"] else "",
            "training": json.dumps(state["args"]), "script_commit": _commit()}
    dest = Path(args.weights_dir or WEIGHTS_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    with replacing(dest / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_text_atomic(dest / "loss.json", json.dumps({"steps": state["step"], "log": state["log"],
                                                       "training": state["args"]}, indent=1) + "\n")
    print(f"exported {dest / WEIGHTS_FILE} ({(dest / WEIGHTS_FILE).stat().st_size / 1e6:.1f} MB, step {state['step']})")
    return dest / WEIGHTS_FILE


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m attnsearch.models.mini_vdit.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="train-out/mini-vdit", help="checkpoint folder (resumed when it holds one)")
    p.add_argument("--minutes", type=float, default=8.5, help="wall-time budget of this call")
    p.add_argument("--total-steps", type=int, default=None,
                   help="length of the whole schedule (default: from the checkpoint, or sized to --total-minutes)")
    p.add_argument("--total-minutes", type=float, default=15.0,
                   help="when starting without --total-steps: size the schedule to this much training time, "
                        "from the measured time per step")
    p.add_argument("--batch-tokens", type=int, default=65_536, help="tokens per batch")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--time-shift", type=float, default=8.0,
                   help="shift flow times towards noise by the sampler's map (3 = the sampler's own; 1 = none)")
    p.add_argument("--device", default=None)
    p.add_argument("--tiny", action="store_true", help="the two-block test model (at 4×16×16 unless --size)")
    p.add_argument("--size", type=int, nargs=3, default=None, metavar=("F", "H", "W"),
                   help="train at this one clip size (frames, height, width) instead of the SIZES mix")
    p.add_argument("--init", default=None, help="start a new schedule from these exported weights (and their "
                   "architecture) instead of a random initialisation; ignored when resuming")
    p.add_argument("--export", action="store_true", help="write the EMA weights as fp16 safetensors and stop")
    p.add_argument("--weights-dir", default=None, help="where --export writes (default: the package)")
    args = p.parse_args(argv)
    for name in ("minutes", "total_minutes", "batch_tokens", "lr", "time_shift"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.total_steps is not None and args.total_steps < 1:
        p.error("--total-steps must be ≥ 1")
    if args.size is not None:
        patch = MiniVDiTConfig().patch
        if min(args.size) < 1 or any(n % q for n, q in zip(args.size, patch)):
            p.error(f"--size {' '.join(map(str, args.size))}: must be positive multiples of the patch "
                    f"{'×'.join(map(str, patch))}")
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main(sys.argv[1:])
