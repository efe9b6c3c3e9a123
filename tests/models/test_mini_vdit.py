"""mini-vdit: its data, checker, rotary embedding, sampler, training resumption and capture layers.

The learned-condition check on the shipped weights lives in test_mini_vdit_weights.py.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from attnsearch.profiling.capture import capture_attention
from attnsearch.models.mini_vdit import (COLOURS, MOTIONS, Condition, MiniVDiT, MiniVDiTConfig, condition_accuracy,
                                         condition_tokens, heldout_conditions, make_noise, read_clip, render, sample,
                                         time_grid, to_frames, train_conditions)
from attnsearch.models.mini_vdit.data import HELDOUT_INDICES, NUM_CONDITIONS, TRAIN_INDICES
from attnsearch.models.mini_vdit.model import apply_rope, position_features, rope_angles
from attnsearch.models.mini_vdit import train as train_mod


def test_condition_enumeration_round_trips_and_held_out_set_is_disjoint():
    assert all(Condition.from_index(i).index == i for i in range(NUM_CONDITIONS))
    assert len(set(HELDOUT_INDICES)) == 64 and not set(HELDOUT_INDICES) & set(TRAIN_INDICES)
    assert len(HELDOUT_INDICES) + len(TRAIN_INDICES) == NUM_CONDITIONS
    assert all(c.index in set(TRAIN_INDICES) for c in train_conditions(50, seed=3))
    with pytest.raises(ValueError, match="colour"):
        Condition("circle", "purple", "left", "stripes")


@pytest.mark.parametrize("size", [(16, 64, 64), (8, 32, 32)])
def test_checker_reads_every_rendered_clip(size):
    """The checker against ground truth: rendered clips of every colour × motion pair."""
    conds = [Condition(k, c, m, b) for k, c, m, b in zip(
        ["circle", "square", "triangle", "ring", "cross"] * 5, COLOURS * 4, MOTIONS * 6,
        ["stripes", "checker", "waves", "gradient"] * 6)][:24]
    g = torch.Generator().manual_seed(1)
    clips = render(condition_tokens(conds), *size, generator=g)
    assert clips.shape == (24, 3, *size) and clips.min() >= -1 and clips.max() <= 1
    assert condition_accuracy(to_frames(clips), conds) == 1.0
    # A clip played backwards moves the other way: the checker must see that.
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for clip, c in zip(to_frames(clips[:6]), conds[:6]):
        assert read_clip(clip.flip(1)).motion == opposite[c.motion]


def _object_speed(clips: torch.Tensor, conds: list[Condition]) -> torch.Tensor:
    """Per clip: mean displacement per frame (share of the frame side) of the saturated object's
    centroid along its condition's direction, from the pixels alone."""
    from attnsearch.models.mini_vdit.data import DIRECTIONS

    x = to_frames(clips)
    mx, mn = x.max(dim=1).values, x.min(dim=1).values
    mask = ((mx - mn) / mx.clamp_min(1e-6) > 0.5) & (mx > 0.3)            # [B, F, H, W]
    b, f, h, w = mask.shape
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    area = mask.flatten(2).sum(-1).clamp_min(1)
    cy = (mask * ys.view(1, 1, h, 1)).flatten(2).sum(-1) / area
    cx = (mask * xs.view(1, 1, 1, w)).flatten(2).sum(-1) / area
    unit = torch.tensor([DIRECTIONS[c.motion] for c in conds])             # [B, 2]
    along = cx * unit[:, :1] + cy * unit[:, 1:]                             # [B, F]
    return (along[:, -1] - along[:, 0]) / (f - 1)


def test_motion_is_per_frame_whatever_the_clip_length():
    """Rotary positions are relative, so the model cannot tell an 8-frame clip from a 16-frame
    one: the object must move as far per frame in both (clip time counts frames)."""
    from attnsearch.models.mini_vdit.data import REFERENCE_FRAMES

    conds = heldout_conditions(48)
    tok = condition_tokens(conds)
    speeds = {f: _object_speed(render(tok, f, 64, 64, generator=torch.Generator().manual_seed(3), distractors=0), conds)
              for f in (8, 12, 16)}
    lo, hi = 0.45 / (REFERENCE_FRAMES - 1), 0.6 / (REFERENCE_FRAMES - 1)
    for f, v in speeds.items():
        assert lo * 0.85 < float(v.median()) < hi * 1.15, (f, v)
    assert float(speeds[8].median() / speeds[16].median()) == pytest.approx(1.0, abs=0.1)


def test_motion_word_says_where_the_object_is():
    """Objects enter from the side they move away from, so the motion word moves a condition's mean
    clip (what a denoiser predicts from pure noise) about as much as a colour word does; with the
    start drawn anywhere along the path it moved it several times less (data.py's docstring)."""
    def mean_clip(cond: Condition) -> torch.Tensor:
        tok = condition_tokens([cond] * 200)
        return render(tok, 8, 32, 32, generator=torch.Generator().manual_seed(1)).mean(0)

    base = mean_clip(Condition("circle", "red", "right", "stripes"))
    motion = (mean_clip(Condition("circle", "red", "left", "stripes")) - base).pow(2).mean()
    colour = (mean_clip(Condition("circle", "green", "right", "stripes")) - base).pow(2).mean()
    kind = (mean_clip(Condition("square", "red", "right", "stripes")) - base).pow(2).mean()
    assert motion > 0.5 * colour and motion > 20 * kind, (motion, colour, kind)
    # A "right" object starts in the left part of the frame and its mean drifts right.
    s = (base.max(0).values - base.min(0).values).sum(1)           # chroma by [frame, column]
    assert s[0, :16].sum() > 3 * s[0, 16:].sum()
    centre = (s * (torch.arange(32) + 0.5)).sum(1) / s.sum(1) / 32  # [F], share of the width
    assert float(centre[-1] - centre[0]) > 0.1, centre


def test_render_is_a_function_of_the_generator():
    tok = condition_tokens(heldout_conditions(3))
    a = render(tok, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    b = render(tok, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    c = render(tok, 4, 16, 16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rope_logits_depend_only_on_relative_position():
    """q·k after 3-D RoPE is unchanged when both tokens move by the same (frame, row, col) offset."""
    d = 64
    ang = rope_angles(4, 5, 6, d, 10_000.0, "cpu")
    cos, sin = torch.cos(ang), torch.sin(ang)
    q, k = torch.randn(1, 1, 1, d).expand(1, 1, 120, d), torch.randn(1, 1, 1, d).expand(1, 1, 120, d)
    qr, kr = apply_rope(q, cos, sin)[0, 0], apply_rope(k, cos, sin)[0, 0]

    def idx(f, y, x):
        return (f * 5 + y) * 6 + x

    base = qr[idx(0, 1, 2)] @ kr[idx(1, 3, 0)]
    shifted = qr[idx(2, 2, 5)] @ kr[idx(3, 4, 3)]
    other = qr[idx(0, 1, 2)] @ kr[idx(2, 3, 0)]
    torch.testing.assert_close(base, shifted, rtol=1e-4, atol=1e-4)
    assert (base - other).abs() > 1e-3


def test_absolute_position_is_in_clip_coordinates_whatever_the_size():
    """A token's absolute-position features are those of its centre: time in the data's frames
    (frame f is the same instant in an 8- and a 16-frame clip), space as a share of the frame
    (column j of 8 and column 3j + 1 of 24 share a centre)."""
    patch = (1, 4, 4)
    small = position_features(8, 8, 8, patch, "cpu").view(8, 8, 8, -1)
    large = position_features(16, 24, 24, patch, "cpu").view(16, 24, 24, -1)
    for f, y, x in [(0, 0, 0), (3, 5, 2), (7, 7, 7)]:
        torch.testing.assert_close(small[f, y, x], large[f, 3 * y + 1, 3 * x + 1])
    assert not torch.allclose(small[1, 0, 0], small[0, 0, 0])
    assert not torch.allclose(large[0, 0, 1], large[0, 0, 0])
    # Weights written before the feature existed describe a model without it.
    old = MiniVDiTConfig().to_dict()
    del old["absolute_position"]
    assert MiniVDiT(MiniVDiTConfig.from_dict(old)).pos_embed is None


def test_forward_any_size_and_capture_sees_only_self_attention():
    torch.manual_seed(0)
    model = MiniVDiT(MiniVDiTConfig.tiny()).eval()
    for size in [(4, 16, 16), (2, 8, 24)]:
        x = torch.randn(2, 3, *size)
        calls = []
        with capture_attention(model, lambda call: calls.append(call) or None):
            with torch.no_grad():
                y = model(x, torch.tensor([0.3, 0.9]), torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]]))
        assert y.shape == x.shape
        n = model.geometry_for(*size).num_tokens
        assert [c.layer for c in calls] == list(range(model.config.depth))
        assert all(tuple(c.query.shape) == (2, model.config.heads, n, 64) for c in calls)
    with pytest.raises(ValueError, match="patch"):
        model(torch.randn(1, 3, 4, 15, 16), torch.tensor([0.5]), torch.tensor([[1, 1, 1, 1]]))


@torch.no_grad()
def test_bf16_model_follows_the_fp32_model():
    """Cast to bf16 (as the fidelity benchmark and ``load_pretrained(dtype=...)`` run it), the model,
    absolute-position features included, gives its fp32 output within bf16 rounding."""
    torch.manual_seed(0)
    model = MiniVDiT(MiniVDiTConfig.tiny()).eval()
    assert model.pos_embed is not None
    for prm in model.parameters():  # adaLN-zero starts every block at the identity: give them weight
        prm.add_(0.02 * torch.randn_like(prm))
    x, t, cond = torch.randn(2, 3, 4, 16, 16), torch.tensor([0.3, 0.9]), torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    ref = model(x, t, cond)
    low = model.to(torch.bfloat16)(x.bfloat16(), t, cond)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - ref).norm() / ref.norm()).item() < 0.03


@torch.no_grad()
def test_apply_runs_a_plan_at_the_clip_size_it_is_called_with():
    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
    from attnsearch.runtime import apply

    torch.manual_seed(0)
    model = MiniVDiT(MiniVDiTConfig.tiny()).eval()
    for param in model.parameters():  # past the zero init of adaLN-zero: attention reaches the output
        param.normal_(0.0, 0.1)
    source = model.geometry_for(4, 32, 32)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("multi_diagonal", {"rows": 0.5, "frames": 1})], source, 64)
    plan = Plan(source, 64, 1, model.config.depth, model.config.heads, (ScheduleEntry(0, 1, (lp,) * model.config.depth),))
    x, t, cond = torch.randn(1, 3, 8, 48, 48), torch.tensor([0.5]), torch.tensor([[1, 2, 3, 4]])
    with apply(model, plan, backend="torch") as ap:
        got = model(x, t, cond)
    target = model.geometry_for(8, 48, 48)
    with apply(model, plan.for_geometry(target), backend="torch"):
        want = model(x, t, cond)
    assert ap.stats["sparse"] == model.config.depth and torch.equal(got, want)
    assert not torch.allclose(got, model(x, t, cond), atol=1e-4)


def test_sampler_is_deterministic_and_one_forward_per_step():
    torch.manual_seed(0)
    model = MiniVDiT(MiniVDiTConfig.tiny()).eval()
    conds = heldout_conditions(2)
    noise = torch.cat([make_noise(s, 4, 16, 16) for s in (1, 2)])
    seen = []
    a = sample(model, conds, noise, steps=3, guidance=3.0, on_step=lambda i, x, t, c: seen.append((i, x.shape[0])))
    b = sample(model, conds, noise, steps=3, guidance=3.0)
    assert torch.equal(a, b) and seen == [(0, 4), (1, 4), (2, 4)]
    grid = time_grid(5)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and bool((grid[1:] < grid[:-1]).all())
    assert torch.equal(make_noise(7, 4, 16, 16), make_noise(7, 4, 16, 16))


def _args(out, **kw):
    base = dict(out=str(out), minutes=10.0, total_steps=8, total_minutes=1.0, batch_tokens=512, lr=4e-4,
                time_shift=1.0, device="cpu", tiny=True, export=False, weights_dir=None, size=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_training_at_one_size_draws_every_batch_there(tmp_path, monkeypatch):
    """--size replaces the SIZES mix (and --tiny's 4 × 16 × 16); a size off the patch grid is a usage error."""
    seen = []
    real = train_mod.random_batch

    def recording(batch, f, h, w, **kw):
        seen.append((batch, f, h, w))
        return real(batch, f, h, w, **kw)

    monkeypatch.setattr(train_mod, "random_batch", recording)
    train_mod.train(_args(tmp_path, total_steps=3, size=(8, 16, 16)))
    assert seen == [(4, 8, 16, 16)] * 3                       # 512 tokens per batch of 8 × 4 × 4 tokens
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["args"]["size"] == (8, 16, 16)
    with pytest.raises(SystemExit) as err:
        train_mod.main(["--tiny", "--size", "8", "30", "32", "--out", str(tmp_path / "bad")])
    assert err.value.code == 2


@pytest.mark.slow
def test_training_resumes_exactly(tmp_path):
    """6 steps in one call equal 3 + 3 steps across a checkpoint (weights, EMA and data stream)."""
    train_mod.train(_args(tmp_path / "whole", total_steps=6))
    train_mod.train(_args(tmp_path / "split", total_steps=3))
    train_mod.train(_args(tmp_path / "split", total_steps=6))
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, t in a[key].items():
            torch.testing.assert_close(t, b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")


@pytest.mark.slow
def test_training_starts_from_exported_weights_and_records_them(tmp_path):
    """--init: a new schedule starts from the exported fp16 weights with their architecture (a
    zero-step run saves exactly them), resumes with it, and the checkpoint and the next export record
    the file's sha256 and steps; --tiny with weights of another architecture is one line."""
    import hashlib
    import json

    from safetensors import safe_open

    train_mod.train(_args(tmp_path / "first", total_steps=3))
    train_mod.export(_args(tmp_path / "first", weights_dir=str(tmp_path / "w")))
    weights = tmp_path / "w" / train_mod.WEIGHTS_FILE
    ckpt = train_mod.train(_args(tmp_path / "second", total_steps=2, minutes=1e-9, init=str(weights)))
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 0
    with safe_open(str(weights), framework="pt") as f:
        for name in f.keys():
            assert torch.equal(state["model"][name], f.get_tensor(name).float()), name
    assert state["args"]["init_from"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert state["args"]["init_from"]["steps"] == 3
    train_mod.train(_args(tmp_path / "second", total_steps=2))          # resumes; keeps the record
    train_mod.export(_args(tmp_path / "second", weights_dir=str(tmp_path / "w2")))
    with safe_open(str(tmp_path / "w2" / train_mod.WEIGHTS_FILE), framework="pt") as f:
        assert json.loads(f.metadata()["training"])["init_from"]["steps"] == 3
    from attnsearch.models.mini_vdit import weights_path

    with pytest.raises(SystemExit, match=r"^--init .*: weights of config .*, --tiny asks for") as err:
        train_mod.train(_args(tmp_path / "third", init=str(weights_path())))   # the shipped, full-size weights
    assert "\n" not in str(err.value)
    state = torch.load(train_mod.train(_args(tmp_path / "fourth", tiny=False, minutes=1e-9, init=str(weights))),
                       weights_only=False)
    assert state["config"] == train_mod.MiniVDiTConfig.tiny().to_dict()   # the weights' architecture


@pytest.mark.slow
def test_model_card_runs_the_chosen_checks_and_says_which_it_left_out(tmp_path):
    """``card --sizes``: only the chosen check is run and recorded, its first clips draw the sample
    grid, the card records the training's flow-time shift and names the check it left out; the
    README is ``render_card`` of card.json."""
    import json

    from attnsearch.models.mini_vdit import card as card_mod

    train_mod.train(_args(tmp_path / "ckpt", total_steps=2, time_shift=8.0))
    train_mod.export(_args(tmp_path / "ckpt", weights_dir=str(tmp_path / "w")))
    out = tmp_path / "card"
    card_mod.main(["--weights", str(tmp_path / "w" / train_mod.WEIGHTS_FILE), "--out", str(out), "--device", "cpu",
                   "--conditions", "2", "--grid", "2", "--sizes", "8x32x32"])
    card = json.loads((out / "card.json").read_text())
    assert list(card["condition_check"]) == ["8x32x32"] and card["condition_check"]["8x32x32"]["steps"] == card_mod.CHECK_STEPS
    assert card["training"]["time_shift"] == 8.0 and card["steps"] == 2
    readme = (out / "README.md").read_text()
    assert readme == card_mod.render_card(card)
    assert "`--time-shift 8`" in readme and "Not run for this card (`card --sizes`): 16x64x64 at 20 steps." in readme
    assert (out / "samples.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        card_mod.main(["--sizes", "7x7x7", "--out", str(out)])
