"""What ``evaluate`` generates videos with: the :class:`Generator` protocol and the running context.

A generator makes one video per seed, from noise and a condition fixed by that seed, with
whatever attention is active around :meth:`Generator.generate`. ``evaluate`` runs it once plain
(dense) and once inside :func:`running` with a plan, so the two videos differ only by attention.

    gen = load_generator("mini-vdit", frames=16, height=64, width=64, guidance=3.0)
    gen = load_generator("diffusers:/models/Wan2.1-T2V-1.3B-Diffusers", prompt="a cat", num_frames=17)
    dense = gen.generate(10_000, steps=20)
    with running(gen, plan):
        sparse = gen.generate(10_000, steps=20)

Seeds. Evaluation seeds start at :data:`HELD_OUT_SEED_START`; capture, profiling and the search
use seeds below it (and mini-vdit's training and search conditions are disjoint from
``heldout_conditions``), so an evaluated video is one the plan was never fitted to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..geometry import Geometry
from ..models.mini_vdit import EVAL_SEED_START as HELD_OUT_SEED_START

# HELD_OUT_SEED_START: the first evaluation seed. Everything that fits a plan (capture, profile,
# search, validation) uses seeds below it, so ``evaluate``'s default seeds are held out from the search.


class EvaluateError(ValueError):
    """Bad input to an evaluation; the message starts with the option or field it is about."""


@dataclass
class Video:
    """One generated video.

    ``latents``: the sampler's final latents (float32, CPU, the model's own layout).
    ``frames``: [1, 3, F, H, W] float32 in [0, 1] on CPU (decoded where the model has a decoder).
    ``condition``: what the video was conditioned on, in words.
    """

    latents: torch.Tensor
    frames: torch.Tensor
    condition: str = ""

    def __post_init__(self) -> None:
        f = self.frames
        if f.dim() != 5 or f.shape[0] != 1 or f.shape[1] != 3:
            raise ValueError(f"frames: expected [1, 3, F, H, W], got {tuple(f.shape)}")


@runtime_checkable
class Generator(Protocol):
    """A video model ready to evaluate.

    ``name``: the spec it was loaded from. ``transformer``: the module ``apply`` runs on (its SDPA
    calls numbered by step and layer as the plan numbers them). ``steps_by_timestep``: True when a
    denoising step is several forwards of ``transformer`` (a pipeline calling it once per CFG
    branch): steps are then numbered by the timestep argument, not by forward. A generator may
    also hold ``pipeline``: a diffusers pipeline object, which ``running`` then instruments whole
    (every transformer it holds, Wan2.2's two experts included; steps by timestep).
    """

    name: str
    transformer: torch.nn.Module
    steps_by_timestep: bool

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: spec, options, sizes, device, dtype."""

    def fit(self, geometry: Geometry) -> None:
        """Choose the video size whose self-attention has ``geometry``, for the sizes its options left
        unset (a plan then runs without restating its size); EvaluateError when none does."""

    def generate(self, seed: int, steps: int) -> Video:
        """One video from the noise and condition of ``seed``, ``steps`` sampler steps."""


# --- the attention around a generation ------------------------------------------------------------


def _capture_attention() -> Any:
    try:
        from ..profiling.capture import capture_attention
    except ImportError:
        from ..capture import capture_attention
    return capture_attention


@contextlib.contextmanager
def running(generator: Generator, plan: Any = None, *, backend: str = "auto",
            observe: Callable[[Any], None] | None = None, residual_precision: str = "native") -> Iterator[Any]:
    """Run ``generator``'s transformer by ``plan`` (``attnsearch.apply`` with ``backend`` and
    ``residual_precision``), or with ``observe`` seeing every self-attention call (dense, nothing
    replaced); plain when both are None.

    Steps follow the generator: one per forward, or one per timestep (``steps_by_timestep``).
    Yields the ``apply`` context (its ``stats``) or the capture.
    """
    if plan is None and observe is None:
        yield None
        return
    pipeline = getattr(generator, "pipeline", None)
    if pipeline is not None:
        with _running_pipeline(pipeline, plan, backend, observe, residual_precision) as target:
            yield target
        return
    model = generator.transformer
    auto_step = not generator.steps_by_timestep
    if plan is not None:
        from ..runtime import apply

        ctx = apply(model, plan, backend=backend, auto_step=auto_step, residual_precision=residual_precision)
    else:
        def consumer(call: Any) -> None:
            observe(call)
            return None

        ctx = _capture_attention()(model, consumer, auto_step=auto_step)
    with ctx as target:
        if auto_step:
            yield target
        else:
            from ..models.diffusers import TimestepStepper

            with TimestepStepper(model, target):
                yield target


@contextlib.contextmanager
def _running_pipeline(pipeline: Any, plan: Any, backend: str, observe: Callable[[Any], None] | None,
                      residual_precision: str) -> Iterator[Any]:
    """``running`` on a pipeline object: ``apply(pipeline, plan)`` (every transformer, steps by
    timestep), or every transformer's self-attention calls shown to ``observe``, numbered alike."""
    if plan is not None:
        from ..runtime import apply

        with apply(pipeline, plan, backend=backend, residual_precision=residual_precision) as ap:
            yield ap
        return
    from ..models.diffusers.experts import PipelineRouter

    def consumer(call: Any) -> None:
        observe(call)
        return None

    router = PipelineRouter(pipeline)
    with _capture_attention()(None, consumer, auto_step=False, accept=router.accept) as cap, router.stepping(cap):
        yield cap


@dataclass
class AttentionLayout:
    """The self-attention calls one generation made: how many steps and layers, and their shape."""

    calls: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)

    def __call__(self, call: Any) -> None:
        self.calls.setdefault((call.step, call.layer), tuple(call.query.shape))

    @property
    def steps(self) -> int:
        return 1 + max((s for s, _ in self.calls), default=-1)

    @property
    def layers(self) -> int:
        return 1 + max((layer for _, layer in self.calls), default=-1)

    @property
    def shape(self) -> tuple[int, ...]:
        """(batch, heads, N, head_dim) of the first call."""
        return self.calls[min(self.calls)]

    def check(self, plan: Any, where: str = "plan") -> None:
        """Raise EvaluateError naming the first way ``plan`` does not fit these calls."""
        if not self.calls:
            raise EvaluateError("model: it made no scaled_dot_product_attention call a plan could run")
        batch, heads, n, _ = self.shape
        if self.steps != plan.num_steps:
            raise EvaluateError(f"{where}: covers {plan.num_steps} steps, the generation ran {self.steps} "
                                "(give --steps equal to the plan's steps)")
        if self.layers != plan.num_layers:
            raise EvaluateError(f"{where}: has {plan.num_layers} layers, the model makes {self.layers} "
                                "self-attention calls per step")
        if heads != plan.num_heads:
            raise EvaluateError(f"{where}: has {plan.num_heads} heads, the model's attention {heads}")
        if n != plan.geometry.num_tokens:
            raise EvaluateError(f"{where}: geometry {plan.geometry} has N = {plan.geometry.num_tokens} tokens, the "
                                f"model's attention {n} (generate at the plan's size: -o frames/height/width)")


# --- loading ------------------------------------------------------------------------------------

#: Registered generator names → "module:function" of their factory (called with the options).
GENERATORS: dict[str, str] = {"mini-vdit": "attnsearch.evaluate.from_mini_vdit:load"}
#: Spec prefixes ``<prefix>:<argument>`` → factory, called as factory(argument, **options).
PREFIXES: dict[str, str] = {"diffusers": "attnsearch.evaluate.from_diffusers:load"}


def _factory(target: str) -> Callable[..., Generator]:
    import importlib

    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def load_generator(spec: str, **options: Any) -> Generator:
    """A Generator from a registered name (``mini-vdit``) or ``diffusers:DIR`` and its options."""
    if not isinstance(spec, str) or not spec:
        raise EvaluateError(f"--model: must name a model, got {spec!r}")
    if spec in GENERATORS:
        return _factory(GENERATORS[spec])(**options)
    prefix, _, argument = spec.partition(":")
    if prefix in PREFIXES and argument:
        return _factory(PREFIXES[prefix])(argument, **options)
    known = ", ".join([*GENERATORS, *(f"{p}:DIR" for p in PREFIXES)])
    raise EvaluateError(f"--model: cannot generate videos with {spec!r} (known: {known})")


def check_options(spec: str, options: dict[str, Any], accepted: tuple[str, ...]) -> None:
    """Raise EvaluateError naming an option ``spec`` does not take."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EvaluateError(f"-o {unknown[0]}: {spec} takes no such option (it takes {', '.join(accepted)})")


def positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EvaluateError(f"-o {name}: must be a positive integer, got {value!r}")
    return value


__all__ = ["AttentionLayout", "EvaluateError", "GENERATORS", "Generator", "HELD_OUT_SEED_START", "PREFIXES", "Video",
           "check_options", "load_generator", "positive_int", "running"]
