"""The shipped mini-vdit weights against their data: on the 64 held-out conditions (never trained
on), the generated object's colour and motion direction are read back by the pixel-statistics
checker. CPU, 8 frames × 32 × 32 (a size the model trained on), the model card's CPU check steps,
the default guidance, noise seeds from EVAL_SEED_START. Both the colour alone and colour and motion
together must match in ≥ 80% of the clips (chance: 17% for colour, 25% for motion).
"""

from __future__ import annotations

import pytest
import torch

from attnsearch.models.mini_vdit import (DEFAULT_GUIDANCE, EVAL_SEED_START, NUM_HELDOUT, condition_accuracy,
                                         heldout_conditions, load_pretrained, read_clip, weights_path)
from attnsearch.models.mini_vdit.card import CHECK_STEPS, generate


def test_weights_ship_small_and_in_fp16():
    from safetensors import safe_open

    path = weights_path()
    assert path.is_file(), f"{path} missing"
    assert path.stat().st_size <= 20 * 2**20
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_the_model_card_is_its_record_rendered_and_describes_these_weights():
    """weights/README.md is ``render_card`` of weights/card.json, and the record's config and steps
    are the shipped file's metadata (a card cannot describe other weights than the ones beside it)."""
    import json

    from safetensors import safe_open

    from attnsearch.models.mini_vdit.card import render_card

    folder = weights_path().parent
    card = json.loads((folder / "card.json").read_text())
    assert (folder / "README.md").read_text() == render_card(card)
    with safe_open(str(weights_path()), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == card["config"] and int(meta["steps"]) == card["steps"]


@pytest.fixture(scope="module")
def heldout_frames():
    """The card's own generation (``card.generate``, batches of 8 clips: the same frames as all 64 at
    once)."""
    conds = heldout_conditions(NUM_HELDOUT)
    with torch.inference_mode():
        frames = generate(load_pretrained(), conds, (8, 32, 32), EVAL_SEED_START, CHECK_STEPS, DEFAULT_GUIDANCE,
                          batch=8)
    return frames, conds


@pytest.mark.slow
def test_learned_colour_on_heldout_set(heldout_frames):
    frames, conds = heldout_frames
    hits = sum(read_clip(f).colour == c.colour for f, c in zip(frames, conds)) / len(conds)
    assert hits >= 0.8, f"colour matches in {hits:.1%} of held-out clips (< 80%)"


@pytest.mark.slow
def test_learned_colour_and_motion_on_heldout_set(heldout_frames):
    frames, conds = heldout_frames
    acc = condition_accuracy(frames, conds)
    assert acc >= 0.8, f"colour and motion match in {acc:.1%} of held-out clips (< 80%)"
