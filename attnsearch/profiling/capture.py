"""Intercept every ``scaled_dot_product_attention`` call a model makes, numbered by (step, layer).

    >>> def consumer(call: SDPACall):
    ...     print(call.step, call.layer, tuple(call.query.shape))
    ...     return None                      # None: the real SDPA runs; a tensor: used as the output
    >>> with capture_attention(model, consumer):
    ...     model(x); model(x)               # prints 0 0 …, 0 1 …, then 1 0 …, 1 1 …

Why a ``TorchFunctionMode`` and not a patched ``torch.nn.functional`` attribute: a model that did
``from torch.nn.functional import scaled_dot_product_attention`` holds its own reference to the
builtin, which no attribute patch reaches; every call of the builtin, however it was imported,
dispatches through the active torch-function modes. While the mode's handler runs, torch pops the
mode off the stack, so SDPA calls the consumer itself makes run for real and are not re-captured.

Numbering: with ``auto_step`` a forward pre-hook on the root module starts a new step at every
root forward (the first is step 0; a forward nested inside the root's own forward does not start
one), and ``layer`` is the index of the SDPA call inside the current step, in call order.
Adapters that know the step themselves pass ``auto_step=False`` and call ``set_step``.

Filtering: ``accept(call) -> bool`` decides which calls are "layers". A rejected call (e.g. the
cross-attention of a video DiT, or a text-refiner's attention) runs the real SDPA untouched, never
reaches the consumer and takes no layer number; the ``SDPACall`` handed to ``accept`` carries the
layer number the call would get. When no ``accept`` is passed, a root module that defines a
callable attribute ``attnsearch_accept`` supplies it (adapters install one, so ``apply(model,
plan)`` and the profiler filter without being told). Without either, every call is accepted.

Memory stays flat: the ``SDPACall`` handed to the consumer is the only object holding the tensors,
and capture drops it as soon as the consumer returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_SDPA = F.scaled_dot_product_attention
#: SDPA's parameters after (query, key, value) with their defaults; the first three may be positional.
_SDPA_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("attn_mask", None), ("dropout_p", 0.0), ("is_causal", False), ("scale", None), ("enable_gqa", False),
)
_POSITIONAL_OPTIONS = 3


class CaptureError(RuntimeError):
    """A consumer broke the capture contract (e.g. returned an output of the wrong shape)."""


@dataclass
class SDPACall:
    """One intercepted call.

    ``query``/``key``/``value`` are the tensors exactly as passed ([batch, heads, N, D], any
    strides, no copy). ``kwargs`` holds every SDPA option by keyword — attn_mask, dropout_p,
    is_causal, scale, enable_gqa — with SDPA's default filled in for those not passed, so
    ``F.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs)`` reproduces
    the call.
    """

    step: int
    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)


def _normalise(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Split an SDPA call's arguments into (q, k, v, options-by-keyword with defaults)."""
    qkv = list(args[:3])
    rest = dict(kwargs)
    for name in ("query", "key", "value")[len(qkv):]:
        if name not in rest:
            raise TypeError(f"scaled_dot_product_attention() missing argument {name!r}")
        qkv.append(rest.pop(name))
    extra = args[3:]
    if len(extra) > _POSITIONAL_OPTIONS:
        raise TypeError(f"scaled_dot_product_attention() takes at most {3 + _POSITIONAL_OPTIONS} positional arguments")
    options = {}
    for (name, _), value in zip(_SDPA_OPTIONS, extra):
        if name in rest:
            raise TypeError(f"scaled_dot_product_attention() got multiple values for argument {name!r}")
        options[name] = value
    for name, default in _SDPA_OPTIONS:
        options.setdefault(name, rest.pop(name, default))
    if rest:
        raise TypeError(f"scaled_dot_product_attention() got unexpected keyword(s) {', '.join(sorted(rest))}")
    q, k, v = qkv
    return q, k, v, options


class _SDPAMode(TorchFunctionMode):
    """Routes SDPA calls to the owning capture; every other torch function runs unchanged."""

    def __init__(self, owner: capture_attention) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA:
            return self.owner._handle(args, kwargs)
        return func(*args, **kwargs)


class capture_attention:  # noqa: N801 — used as a context manager, named like one
    """Context manager: hand every SDPA call made inside it to ``consumer``.

    ``consumer(call)`` returns a tensor to use as the call's output (shape [..., N_q, D_v], as
    SDPA's) or None to run the real SDPA. ``model`` is the root module whose forwards are the
    steps; it may be None when ``auto_step`` is False. ``accept(call)`` (default: the model's
    ``attnsearch_accept`` attribute, else accept all) picks the calls that are layers; the others
    run the real SDPA, unnumbered. Hooks and the mode are removed on exit, exception or not.
    ``mode_class``: the TorchFunctionMode routing calls to :meth:`_handle` (subclasses may refine it).
    """

    mode_class = _SDPAMode

    def __init__(self, model: torch.nn.Module | None,
                 consumer: Callable[[SDPACall], torch.Tensor | None], *, auto_step: bool = True,
                 accept: Callable[[SDPACall], bool] | None = None) -> None:
        if not callable(consumer):
            raise TypeError(f"capture_attention: consumer must be callable, got {type(consumer).__name__}")
        if accept is None and model is not None:
            accept = getattr(model, "attnsearch_accept", None)
        if accept is not None and not callable(accept):
            raise TypeError(f"capture_attention: accept must be callable, got {type(accept).__name__}")
        if auto_step and not isinstance(model, torch.nn.Module):
            raise TypeError("capture_attention: auto_step needs the root torch.nn.Module whose forwards are "
                            f"the steps, got {type(model).__name__}; pass auto_step=False and call set_step()")
        self.model = model
        self.consumer = consumer
        self.auto_step = auto_step
        self.accept = accept
        self.step = 0
        self.layer = 0
        self.calls = 0      # accepted calls
        self.rejected = 0   # calls ``accept`` passed through untouched
        self._forwards = 0  # root forwards started (auto_step)
        self._depth = 0     # root forwards in progress: nested ones do not start a step
        self._hooks: list[Any] = []
        self._mode: _SDPAMode | None = None

    def set_step(self, step: int) -> None:
        """Start step ``step`` explicitly: the next SDPA call is its layer 0."""
        if self.auto_step:
            raise ValueError("capture_attention.set_step needs auto_step=False: with auto_step the root "
                             "forward numbers the steps itself")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"capture_attention.set_step: step must be a non-negative integer, got {step!r}")
        self.step, self.layer = step, 0

    # --- hooks -------------------------------------------------------------------------------

    def _pre_forward(self, module, args) -> None:
        if self._depth == 0:
            if self._forwards:
                self.step += 1
            self.layer = 0
            self._forwards += 1
        self._depth += 1

    def _post_forward(self, module, args, output) -> None:
        self._depth -= 1

    def _handle(self, args: tuple, kwargs: dict) -> torch.Tensor:
        q, k, v, options = _normalise(args, kwargs)
        call = SDPACall(self.step, self.layer, q, k, v, options)
        if self.accept is not None and not self.accept(call):
            self.rejected += 1
            del call
            return _SDPA(*args, **kwargs)
        self.layer += 1
        self.calls += 1
        out = self.consumer(call)
        del call  # the consumer's return is all we keep: no reference to q, k, v survives this call
        if out is None:
            return _SDPA(*args, **kwargs)
        expected = (*q.shape[:-1], v.shape[-1])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CaptureError(f"capture consumer returned {got} for step {self.step} layer {self.layer - 1}; "
                               f"expected None or a tensor of shape {expected}")
        return out

    # --- context -----------------------------------------------------------------------------

    def __enter__(self) -> capture_attention:
        if self._mode is not None:
            raise RuntimeError("capture_attention is already active; create a new one to nest captures")
        if self.auto_step:
            self._hooks.append(self.model.register_forward_pre_hook(self._pre_forward))
            self._hooks.append(self.model.register_forward_hook(self._post_forward, always_call=True))
        self._mode = self.mode_class(self)
        try:
            self._mode.__enter__()
        except BaseException:
            self._remove_hooks()
            self._mode = None
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        mode, self._mode = self._mode, None
        try:
            if mode is not None:
                mode.__exit__(exc_type, exc, tb)
        finally:
            self._remove_hooks()
            self._depth = 0

    def _remove_hooks(self) -> None:
        while self._hooks:
            self._hooks.pop().remove()


__all__ = ["CaptureError", "SDPACall", "capture_attention"]
