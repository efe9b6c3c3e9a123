"""Plans at another geometry: identity at the source, the relative families equal to the pattern
built directly at the target, stripes covering the same video positions (brute force), the
geometries a plan cannot serve named in one line, the non-portable flag in JSON."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from attnsearch import Geometry, block_mask
from attnsearch.plan import LayerPlan, Plan, PlanError, ScheduleEntry, load_plan, write_plan
from attnsearch.retarget import describe, instantiate
from reference import round_to_blocks, stripe_blocks_at, token_mask

SOURCE = Geometry(frames=6, height=8, width=12, text_tokens=20, text_position="prefix")  # N = 596
TWICE_FRAMES = Geometry(frames=12, height=8, width=12, text_tokens=20, text_position="prefix")
WIDER = Geometry(frames=6, height=12, width=18, text_tokens=20, text_position="prefix")
B = 64

RELATIVE = [
    ("diagonal", {"rows": 0.5}), ("diagonal", {"rows": 2.0}),
    ("multi_diagonal", {"rows": 1.0, "frames": 2}), ("multi_diagonal", {"rows": 0.5, "frames": None}),
    ("energy_decay", {"decay": 0.25, "sink": False}), ("energy_decay", {"decay": 0.5, "sink": True}),
    ("dense", {}), ("skip", {}),
]
STRIPES = [("vertical_stripe", {"key_blocks": [0, 4], "rows": 0.0}),
           ("vertical_stripe", {"key_blocks": [2, 3, 7], "rows": 1.0})]


def heads_plan(specs, geometry=SOURCE, block_size=B, **kw) -> Plan:
    lp = LayerPlan.from_heads(specs, geometry, block_size)
    other = LayerPlan.from_heads(list(reversed(specs)), geometry, block_size)
    schedule = (ScheduleEntry(0, 1, None), ScheduleEntry(1, 3, (lp, other, lp)))
    return Plan(geometry, block_size, 3, 3, len(specs), schedule, **kw)


def reference_mask(pattern, params, geometry, block_size):
    """The family's mask straight from its token-level definition (tests/reference.py)."""
    if pattern in ("dense", "skip"):
        fill = pattern == "dense"
        nb = geometry.num_blocks(block_size)
        return torch.full((nb, nb), fill, dtype=torch.bool)
    keep = token_mask(pattern, {**params, "_block_size": block_size}, geometry)
    return torch.from_numpy(round_to_blocks(keep, block_size))


def test_identity_at_the_source_geometry():
    plan = heads_plan(RELATIVE[:4] + STRIPES)
    assert plan.for_geometry(SOURCE) is plan
    lp = plan.layer_plan(1, 0)
    for pattern, params in lp.head_specs:  # the description itself, instantiated at the source
        again = instantiate(pattern, describe(pattern, params, SOURCE, B), SOURCE, B)
        assert torch.equal(block_mask(pattern, again, SOURCE, B), block_mask(pattern, params, SOURCE, B))
    text_only = {"key_blocks": [0], "rows": 0.0}  # block 0 holds 20 text and 44 video tokens
    assert instantiate("vertical_stripe", describe("vertical_stripe", text_only, SOURCE, B), SOURCE, B) == text_only


def realised_reach_rows(pattern, params, geometry, block_size):
    """Brute force: the mean one-sided reach, in frame rows, of the keys a video query attends through a
    band's block-rounded mask: to the ends of the run of kept key blocks around its own block (the
    text block kept for its text columns is not part of the band), over the queries far enough from the
    video's ends that nothing clips it."""
    blocks = reference_mask(pattern, params, geometry, block_size).numpy()
    t, n, nb = geometry.text_tokens, geometry.num_tokens, blocks.shape[0]
    margin = 2 * block_size + int(np.ceil(params["rows"] * geometry.width))
    reach = []
    for i in range(t + margin, n - margin):
        b = i // block_size
        lo, hi = b, b
        while lo > 0 and blocks[b, lo - 1]:
            lo -= 1
        while hi < nb - 1 and blocks[b, hi + 1]:
            hi += 1
        first, last = max(lo * block_size, t), min((hi + 1) * block_size, n) - 1
        reach.append((i - first + last - i) / 2)
    return float(np.mean(reach)) / geometry.width


@pytest.mark.parametrize("target", [TWICE_FRAMES, WIDER], ids=["2x-frames", "1.5x-height-width"])
def test_relative_families_equal_the_pattern_built_at_the_target(target):
    """Energy decay and the frame reach of multi-diagonals carry over unchanged; a band's rows are
    unchanged at the same frame width and elsewhere reach, block-rounded, as many rows around a query
    as at the source (brute force, within half a block); the masks are the families' token-level
    definitions at the target."""
    plan = heads_plan(RELATIVE).for_geometry(target)
    assert plan.geometry == target and plan.source_geometry == SOURCE and plan.predicted == {}
    lp = plan.layer_plan(2, 0)
    masks = lp.block_masks()
    for h, (pattern, params) in enumerate(RELATIVE):
        got_pattern, got = lp.head_specs[h]
        assert got_pattern == pattern and got.keys() == params.keys()
        assert {k: v for k, v in got.items() if k != "rows"} == {k: v for k, v in params.items() if k != "rows"}
        if "rows" in params:
            if target.width == SOURCE.width:
                assert got["rows"] == params["rows"]
            if pattern == "diagonal":  # as near as whole blocks allow: within half a block
                src_reach = realised_reach_rows(pattern, params, SOURCE, B)
                assert abs(realised_reach_rows(pattern, got, target, B) - src_reach) <= B / 2 / target.width
        assert torch.equal(masks[h], reference_mask(pattern, got, target, B)), (pattern, got)


def test_a_band_narrower_than_a_block_widens_where_a_block_is_less_of_the_frame():
    """The case that decides the rule: at the source a 64-token block is a whole 8 × 8 frame, so a band
    of half a row keeps, block by block, the query's frame; at 12 × 12 frames the same nominal band
    would keep about a third of the frame; the carried band reaches as many rows around the query as at the source, within
    half a block."""
    src, tgt = Geometry(8, 8, 8), Geometry(8, 12, 12)
    got = LayerPlan.single("diagonal", {"rows": 0.5}, src, 1, B).for_geometry(tgt).head_specs[0][1]
    assert got["rows"] > 0.5
    assert abs(realised_reach_rows("diagonal", got, tgt, B)
               - realised_reach_rows("diagonal", {"rows": 0.5}, src, B)) <= B / 2 / tgt.width


def random_stripes(geometry, block_size, seed, count=6):
    rng = random.Random(seed)
    nb = geometry.num_blocks(block_size)
    return [sorted(rng.sample(range(nb), rng.randint(1, min(4, nb)))) for _ in range(count)]


GEOMETRY_PAIRS = {
    "2x-frames": (SOURCE, TWICE_FRAMES), "1.5x-height-width": (SOURCE, WIDER), "smaller": (WIDER, SOURCE),
    "text-suffix": (Geometry(5, 6, 10, 30, "suffix"), Geometry(9, 9, 15, 7, "suffix")),
    "onto-one-frame": (Geometry(4, 7, 9), Geometry(1, 7, 9)),
    "image-to-video-text-dropped": (Geometry(1, 10, 10, 16), Geometry(5, 15, 10, 0)),
    "fewer-frames-text-added": (Geometry(8, 4, 6), Geometry(3, 5, 7, 40)),
    "sequence": (Geometry.sequence(300), Geometry.sequence(777)),
}


@pytest.mark.parametrize("pair", list(GEOMETRY_PAIRS))
@pytest.mark.parametrize("block_size", [64, 128])
def test_stripes_cover_the_same_positions(pair, block_size):
    source, target = GEOMETRY_PAIRS[pair]
    for seed, blocks in enumerate(random_stripes(source, block_size, seed=list(GEOMETRY_PAIRS).index(pair))):
        params = {"key_blocks": blocks, "rows": [0.0, 0.5, 3.0][seed % 3]}
        lp = LayerPlan.single("vertical_stripe", params, source, 1, block_size).for_geometry(target)
        got = lp.head_specs[0][1]
        assert got["key_blocks"] == stripe_blocks_at(blocks, source, target, block_size), (blocks, params)
        if params["rows"] == 0:
            assert got["rows"] == 0  # no band: the query's own block only
        else:  # the band carried as a diagonal's is
            band = LayerPlan.single("diagonal", {"rows": params["rows"]}, source, 1, block_size).for_geometry(target)
            assert got["rows"] == band.head_specs[0][1]["rows"]
        direct = block_mask("vertical_stripe", got, target, block_size)
        assert torch.equal(lp.block_masks()[0], direct)


def test_bands_wider_than_the_target_cover_it_all():
    src, small = Geometry(8, 16, 8), Geometry(2, 4, 8)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 100.0}), ("multi_diagonal", {"rows": 0.5, "frames": 6}),
                               ("vertical_stripe", {"key_blocks": [0], "rows": 64.0})], src, B)
    out = lp.for_geometry(small)
    assert out.head_specs[0] == ("diagonal", {"rows": 8.0})
    assert out.head_specs[1] == ("multi_diagonal", {"rows": 0.5, "frames": 1})
    assert out.head_specs[2][1]["rows"] == 8.0
    assert out.block_masks()[0].all() and out.block_masks()[2].all()
    assert torch.equal(out.block_masks()[1], reference_mask("multi_diagonal", {"rows": 0.5, "frames": None}, small, B))


def test_each_geometry_and_layer_plan_is_built_once():
    plan = heads_plan(RELATIVE[:3] + STRIPES)
    a, b = plan.for_geometry(TWICE_FRAMES), plan.for_geometry(TWICE_FRAMES)
    assert a is b
    assert a.layer_plan(1, 0) is a.layer_plan(2, 2)  # one source layer plan → one instance
    assert a.layer_plan(1, 0) is not a.layer_plan(1, 1)
    assert plan.for_geometry(WIDER) is not a and plan.for_geometry(WIDER).geometry == WIDER


def test_a_retargeted_plan_keeps_where_it_was_searched():
    plan = heads_plan(RELATIVE[:3])
    twice = plan.for_geometry(TWICE_FRAMES)
    back = twice.for_geometry(SOURCE)
    assert back.source_geometry is None and back.searched_geometry == SOURCE  # home again: nothing to record
    on = twice.for_geometry(WIDER)
    assert on.source_geometry == SOURCE and on.searched_geometry == SOURCE


@pytest.mark.parametrize("target,field", [
    (Geometry(6, 8, 12, 20, "suffix"), "geometry.text_position"),
    (Geometry.sequence(596), "geometry.width"),
])
def test_a_geometry_the_plan_cannot_serve_is_one_line_naming_it(target, field):
    plan = heads_plan(RELATIVE[:2] + STRIPES)
    with pytest.raises(PlanError, match=f"^{field}: ") as err:
        plan.for_geometry(target)
    assert "\n" not in str(err.value)
    with pytest.raises(PlanError, match="^geometry.width: the plan was searched on a 1-D sequence"):
        heads_plan([("diagonal", {"rows": 64.0})], Geometry.sequence(300)).for_geometry(Geometry(2, 10, 15))


def test_text_of_any_length_is_served():
    plan = heads_plan(RELATIVE[:2] + STRIPES)
    for text in (0, 1, 20, 500):
        target = Geometry(6, 8, 12, text, "prefix")
        lp = plan.for_geometry(target).layer_plan(1, 0)
        is_text = np.arange(target.num_tokens) < text
        text_blocks = sorted({int(t) // B for t in np.flatnonzero(is_text)})
        assert lp.block_masks()[:, :, text_blocks].all() and lp.block_masks()[:, text_blocks, :].all()


def test_a_non_portable_plan_runs_at_its_geometry_only(tmp_path):
    plan = heads_plan(RELATIVE[:2], portable=False)
    assert plan.for_geometry(SOURCE) is plan
    with pytest.raises(PlanError, match=r"^portable: the plan is marked non-portable .* does not run at 12×8×12"):
        plan.for_geometry(TWICE_FRAMES)
    path = write_plan(plan, tmp_path / "p.json")
    loaded = load_plan(path)
    assert loaded.portable is False and loaded == plan


def test_portability_fields_in_json(tmp_path):
    plan = heads_plan(RELATIVE[:3] + STRIPES, model={"name": "m"})
    stored = plan.to_dict()
    assert "portable" not in stored and "source_geometry" not in stored  # a plan of the first format
    assert Plan.from_dict(stored).portable is True
    moved = plan.for_geometry(WIDER)
    data = moved.to_dict()
    assert data["source_geometry"] == SOURCE.to_dict() and data["geometry"] == WIDER.to_dict()
    assert load_plan(write_plan(moved, tmp_path / "m.json")) == moved
    for bad, match in ((dict(stored, portable="no"), "^portable: must be true or false"),
                       (dict(stored, source_geometry={"frames": 0, "height": 1, "width": 1}),
                        "^source_geometry: geometry.frames must be a positive integer"),
                       (dict(stored, source_geometry=[1, 2, 3]), "^source_geometry: must be an object")):
        with pytest.raises(PlanError, match=match):
            Plan.from_dict(bad)
