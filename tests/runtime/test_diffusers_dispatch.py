"""diffusers' attention dispatch: backends ending in SDPA run the plan, the others and what a rank
slice cannot follow are one-line errors, never a silent dense run."""

from __future__ import annotations

import pytest
import torch

from attnsearch.plan import LayerPlan, Plan, PlanError, ScheduleEntry
from attnsearch.runtime import apply

pytest.importorskip("diffusers")


def tiny_wan():
    """(tiny random Wan2.1 transformer, one step's inputs, a one-step plan with four families)."""
    from attnsearch.models.diffusers import VideoSize, denoising_inputs, random_transformer
    from attnsearch.models.diffusers.wan import FAMILY as WAN

    model = random_transformer("wan2.1-1.3b", WAN.tiny)
    inputs = denoising_inputs(model, latent=WAN.latent_size(model.config, VideoSize(9, 64, 64)), text_tokens=7,
                              steps=1)
    g = WAN.geometry(model, inputs[0])
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1}), ("skip", {}), ("dense", {}),
                               ("vertical_stripe", {"key_blocks": [0]})], g, 64)
    plan = Plan(g, 64, 1, 2, 4, (ScheduleEntry(0, 1, (lp, lp)),))
    return model, inputs[0], plan


@pytest.fixture(scope="module")
def wan():
    return tiny_wan()


@pytest.fixture
def backend(wan):
    """Set every attention processor's backend by name (as set_attention_backend does, without its
    install checks); restored afterwards."""
    model = wan[0]
    procs = [m.processor for m in model.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    saved = [(p._attention_backend, p._parallel_config) for p in procs]

    def set_(name, parallel=None):
        from diffusers.models.attention_dispatch import AttentionBackendName

        for p in procs:
            p._attention_backend = AttentionBackendName(name)
            p._parallel_config = parallel

    yield set_
    for p, (b, c) in zip(procs, saved):
        p._attention_backend, p._parallel_config = b, c


@pytest.mark.parametrize("name", ["native", "_native_math"])  # the others force kernels CPUs lack
def test_backends_ending_in_sdpa_run_the_plan(wan, backend, name):
    model, kw, plan = wan
    with torch.no_grad(), apply(model, plan, backend="torch") as ap:
        reference = model(**kw)[0]
    backend(name)
    with torch.no_grad(), apply(model, plan, backend="torch") as ap:
        out = model(**kw)[0]
    assert ap.stats["sparse"] == 2
    assert torch.allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("name", ["flex", "flash", "sage", "xformers"])
def test_backends_bypassing_sdpa_are_refused_in_one_line(wan, backend, name):
    model, _, plan = wan
    backend(name)
    with pytest.raises(PlanError, match=f"diffusers backend '{name}' does not call torch's scaled_dot_product") as err:
        with apply(model, plan):
            pass
    assert "\n" not in str(err.value)


def test_a_global_bypassing_backend_set_inside_apply_is_caught_on_exit(wan):
    from diffusers.models.attention_dispatch import attention_backend

    model, kw, plan = wan
    with pytest.raises(PlanError, match="made no attention call the plan could see"):
        with torch.no_grad(), apply(model, plan, backend="torch"), attention_backend("flex"):
            model(**kw)


def _cp(ring: int = 1, ulysses: int = 1, rank: int = 0):
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    cp = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses)
    cp._ulysses_local_rank = rank
    cp._ring_local_rank = 0
    return ParallelConfig(context_parallel_config=cp)


def test_context_parallel_errors_are_one_line(wan, backend):
    model, _, plan = wan
    backend("native", _cp(ring=2))
    with pytest.raises(PlanError, match="ring attention \\(ring_degree 2\\) splits the keys"):
        apply(model, plan).__enter__()
    backend("native", _cp(ulysses=3))
    with pytest.raises(PlanError, match="4 attention heads are not divisible by the Ulysses degree 3"):
        apply(model, plan).__enter__()
    backend("_native_cudnn", _cp(ulysses=2))  # its context-parallel path calls aten's cuDNN kernel directly
    with pytest.raises(PlanError, match="'_native_cudnn' under context parallelism does not call"):
        apply(model, plan).__enter__()


def test_ulysses_rank_is_read_from_the_config(wan, backend):
    model, _, plan = wan
    backend("native", _cp(ulysses=2, rank=1))
    ap = apply(model, plan)
    try:
        ap.__enter__()
        assert ap.layout.heads == range(2, 4) and ap.layout.degree == 2
    finally:
        ap.__exit__(None, None, None)
