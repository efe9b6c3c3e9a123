"""``apply``'s interception of SDPA calls, eager and under ``torch.compile``.

Eagerly, :class:`PlanCapture` is :class:`~attnsearch.profiling.capture.capture_attention`: hooks
number the calls (step, layer) and each call runs ``apply``'s consumer.

While ``torch.compile`` traces (``torch.compiler.is_compiling()``), nothing that changes from call
to call may be read, or the compiler would specialise on it and recompile at every step: the root
forward's step hooks do nothing, and an accepted SDPA call (the model's ``attnsearch_accept`` filter
is traced as usual) becomes one ``torch.ops.attnsearch.planned_attention`` node carrying only
static data: the model's token and the call's SDPA keywords. When the node runs, ``apply`` numbers
the call (:meth:`PlanCapture.number_call`): the next layer of the current step; with ``auto_step``,
a call after the plan's last layer starts the next step (a forward is ``num_layers`` calls, which
``apply`` checks eagerly), and ``set_step`` made outside the compiled function moves it explicitly.
Calls the filter rejects stay plain SDPA, compiled as usual.
"""

from __future__ import annotations

from typing import Any

import torch

from ..profiling.capture import _SDPA, SDPACall, _SDPAMode, _normalise, capture_attention
from .ops import planned_attention


class _TracedSDPAMode(_SDPAMode):
    """The capture mode, traceable: while compiling, a ``torch.Tensor`` method the mode passes on is
    re-issued as a method call on the tensor (what the compiler traces without a mode) instead of
    running the method's Python body (e.g. ``Tensor.unflatten``'s ``super()`` call, which it cannot
    trace)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (func is not _SDPA and torch.compiler.is_compiling() and args and isinstance(args[0], torch.Tensor)
                and getattr(torch.Tensor, getattr(func, "__name__", ""), None) is func):
            return getattr(args[0], func.__name__)(*args[1:], **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


class PlanCapture(capture_attention):
    """capture_attention whose traced form emits ``planned_attention`` nodes for ``token``."""

    mode_class = _TracedSDPAMode

    def __init__(self, model: Any, consumer, *, token: int, num_layers: int, auto_step: bool = True) -> None:
        super().__init__(model, consumer, auto_step=auto_step)
        self.token = token
        self.num_layers = num_layers

    def _pre_forward(self, module, args) -> None:
        if not torch.compiler.is_compiling():
            super()._pre_forward(module, args)

    def _post_forward(self, module, args, output) -> None:
        if not torch.compiler.is_compiling():
            super()._post_forward(module, args, output)

    def _handle(self, args: tuple, kwargs: dict) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super()._handle(args, kwargs)
        q, k, v, options = _normalise(args, kwargs)
        if self.accept is not None and not self.accept(SDPACall(-1, -1, q, k, v, options)):
            return _SDPA(*args, **kwargs)
        return planned_attention(q, k, v, self.token, options["attn_mask"], float(options["dropout_p"]),
                                 bool(options["is_causal"]), options["scale"], bool(options["enable_gqa"]))

    def number_call(self) -> tuple[int, int]:
        """(step, layer) of a call made by a compiled graph, advancing the counters as eager hooks do."""
        if self.auto_step and (self.layer >= self.num_layers or self._forwards == 0):
            if self._forwards:
                self.step += 1
            self.layer = 0
            self._forwards += 1
        step, layer = self.step, self.layer
        self.layer += 1
        self.calls += 1
        return step, layer


__all__ = ["PlanCapture"]
