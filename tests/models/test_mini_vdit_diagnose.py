"""mini-vdit's diagnostics against planted ground truth: stand-in networks whose clip estimate is
known (a mean clip per condition, or one colour per colour word)."""

from __future__ import annotations

import pytest
import torch

from attnsearch.models.mini_vdit import BACKGROUNDS, COLOURS, KINDS, MOTIONS, Condition, condition_tokens, render
from attnsearch.models.mini_vdit.diagnose import main, start_side_excess, swapped, word_gaps

SIZE = (8, 32, 32)


def _estimating(x0_of: callable):
    """A stand-in network whose clip estimate x̂₀ = x − t·v is ``x0_of(cond)``."""
    def model(x, t, cond):
        return (x - x0_of(cond)) / t.view(-1, 1, 1, 1, 1)
    return model


def test_swapped_words_are_other_words_of_the_slot():
    tok = condition_tokens([Condition("cross", "cyan", m, "gradient") for m in MOTIONS])
    motion = swapped(tok, 2)[:, 2].tolist()
    assert [MOTIONS[i - 1] for i in motion] == ["right", "left", "down", "up"]
    colour = swapped(tok, 1)[:, 1]
    assert (colour != tok[:, 1]).all() and (colour >= 1).all()
    assert swapped(torch.zeros(2, 4, dtype=torch.long), 2).eq(0).all()     # null stays null


def test_word_gaps_are_zero_exactly_for_the_words_a_network_ignores():
    """A network whose estimate is the mean clip of its colour word (over every other word) uses the
    colour word and no other."""
    g = torch.Generator().manual_seed(3)
    by_colour = []
    for c in COLOURS:
        conds = [Condition(k, c, m, b) for k in KINDS[:2] for m in MOTIONS for b in BACKGROUNDS]
        by_colour.append(render(condition_tokens(conds), *SIZE, generator=g).mean(0))
    means = torch.stack([torch.stack(by_colour).mean(0)] + by_colour)             # index 0: null
    gaps = word_gaps(_estimating(lambda cond: means[cond[:, 1]]), SIZE, clips=12, times=(0.9, 0.5))
    for t, gap in gaps.items():
        assert gap["colour"] > 1e-4, (t, gap)
        assert gap["motion"] == gap["kind"] == gap["background"] == 0.0, (t, gap)


def test_start_side_excess_tells_a_network_that_knows_where_the_object_starts():
    """The mean clip of each condition as the estimate has the clips' excess; the mean over the four
    motion words has none."""
    means = {}
    for m in MOTIONS:
        tok = condition_tokens([Condition("circle", "red", m, "stripes")] * 64)
        means[m] = render(tok, *SIZE, generator=torch.Generator().manual_seed(11)).mean(0)
    blind = torch.stack(list(means.values())).mean(0)
    motion_of = lambda cond: [MOTIONS[int(i) - 1] for i in cond[:, 2]]                      # noqa: E731
    knows = start_side_excess(_estimating(lambda cond: torch.stack([means[m] for m in motion_of(cond)])),
                              SIZE, clips=8)
    ignores = start_side_excess(_estimating(lambda cond: blind.expand(len(cond), *blind.shape)), SIZE, clips=8)
    for m in MOTIONS:
        assert knows[m]["clips"] > 0.03
        assert knows[m]["model"] > 0.5 * knows[m]["clips"], (m, knows[m])
        assert abs(ignores[m]["model"]) < 0.1 * knows[m]["clips"], (m, ignores[m])


def test_cli_reads_a_missing_checkpoint_as_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint.pt"):
        main(["--checkpoint", str(tmp_path), "--device", "cpu"])
