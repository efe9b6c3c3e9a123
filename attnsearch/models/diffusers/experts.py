"""The transformers a pipeline holds, as attnsearch sees them: one, or Wan2.2's two experts.

A Wan2.2 A14B pipeline calls ``transformer`` while the timestep is ≥ its boundary
(``boundary_ratio`` × the scheduler's ``num_train_timesteps``) and ``transformer_2`` below it
(:mod:`attnsearch.experts` has the record a profile and a plan keep). Here:

- :func:`pipeline_transformers`: the (name, module) pairs a pipeline object holds;
- :class:`PipelineRouter`: what ``apply(pipe, plan)`` installs on a pipeline object: every
  transformer instrumented, one ``accept`` over all of them (only their self-attention calls are
  layers), and steps numbered by timestep across them (:class:`~.common.TimestepStepper`: the CFG
  branches of a step, called separately or batched, are one step; ``current`` names the expert);
- :class:`ExpertPair`: the experts as one module that dispatches each forward by its timestep
  exactly as the pipeline does, so a profile, ``optimize --validate`` and ``apply`` treat recorded
  two-expert inputs as one model whose forward i is step i.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from .common import TimestepStepper, instrument, timestep_value

#: The attributes of a diffusers pipeline that hold its transformers, in the order they run.
TRANSFORMER_ATTRIBUTES = ("transformer", "transformer_2")


def pipeline_transformers(pipe: Any) -> list[tuple[str, nn.Module]]:
    """(name, module) of every transformer the pipeline object holds (``transformer_2`` only where
    the pipeline uses it: a boundary_ratio is set)."""
    found = [(name, getattr(pipe, name, None)) for name in TRANSFORMER_ATTRIBUTES]
    found = [(n, m) for n, m in found if isinstance(m, nn.Module)]
    if boundary_timestep(pipe) is None:
        found = [(n, m) for n, m in found if n == "transformer"]
    if not found:
        raise ValueError(f"{type(pipe).__name__}: holds no transformer (attributes "
                         f"{', '.join(TRANSFORMER_ATTRIBUTES)}) whose attention attnsearch could run")
    return found


def boundary_timestep(pipe: Any) -> float | None:
    """The timestep below which ``transformer_2`` runs (None: one transformer runs every step)."""
    ratio = getattr(getattr(pipe, "config", None), "boundary_ratio", None)
    if ratio is None:
        return None
    return float(ratio) * float(pipe.scheduler.config.num_train_timesteps)


def check_same_shape(experts: Sequence[tuple[str, nn.Module]]) -> None:
    """One plan numbers the layers and heads of every expert alike: their counts must agree."""
    shapes = {name: (instrument(m).num_layers, int(m.config.num_attention_heads)) for name, m in experts}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{n}: {layers} layers × {heads} heads" for n, (layers, heads) in shapes.items())
        raise ValueError(f"the experts differ in shape ({detail}); one plan covers experts of one shape only")


class _Accept:
    """capture_attention's filter over several instrumented transformers."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.instrumentations = [instrument(m) for m in modules]

    def __call__(self, call: Any) -> bool:
        return any(i.depth > 0 for i in self.instrumentations)


class PipelineRouter:
    """Every transformer of a pipeline object, instrumented, stepped by timestep (see the module docstring).

        router = PipelineRouter(pipe)
        with capture_attention(None, consumer, auto_step=False, accept=router.accept) as cap, router.stepping(cap):
            pipe(...)
    """

    def __init__(self, pipe: Any) -> None:
        self.experts = pipeline_transformers(pipe)
        check_same_shape(self.experts)
        self.accept = _Accept([m for _, m in self.experts])
        self.names = tuple(n for n, _ in self.experts)
        self.stepper: TimestepStepper | None = None

    def stepping(self, target: Any) -> TimestepStepper:
        """The context that numbers steps into ``target.set_step`` while the pipeline runs."""
        self.stepper = TimestepStepper(self.experts, target)
        return self.stepper

    @property
    def current(self) -> str | None:
        """The name of the transformer whose forward is running."""
        return None if self.stepper is None else self.stepper.current


class ExpertPair(nn.Module):
    """Two experts as one module: a forward with timestep ≥ ``boundary`` runs ``transformer``,
    else ``transformer_2`` (the pipeline's rule). ``current`` names the one running."""

    def __init__(self, transformer: nn.Module, transformer_2: nn.Module, boundary: float) -> None:
        super().__init__()
        self.transformer, self.transformer_2 = transformer, transformer_2
        self.boundary = float(boundary)
        check_same_shape(list(self.named_experts()))
        self.attnsearch_accept = _Accept([transformer, transformer_2])
        self.current: str | None = None

    def named_experts(self) -> list[tuple[str, nn.Module]]:
        return [("transformer", self.transformer), ("transformer_2", self.transformer_2)]

    @property
    def config(self) -> Any:
        """The experts' (shared) architecture: the first one's config."""
        return self.transformer.config

    def expert_name(self, timestep: Any) -> str:
        return "transformer" if timestep_value(timestep) >= self.boundary else "transformer_2"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if "timestep" not in kwargs:
            raise ValueError("ExpertPair: the forward needs timestep= (it picks the expert)")
        self.current = self.expert_name(kwargs["timestep"])
        try:
            return getattr(self, self.current)(*args, **kwargs)
        finally:
            self.current = None


__all__ = ["ExpertPair", "PipelineRouter", "TRANSFORMER_ATTRIBUTES", "boundary_timestep", "check_same_shape",
           "pipeline_transformers"]
