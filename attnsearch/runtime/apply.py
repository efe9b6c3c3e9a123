"""``apply(model, plan)``: run every scaled_dot_product_attention call of a model by a plan.

    with apply(pipe.transformer, plan) as ap:
        pipe(prompt)                 # step = model forward index (capture's auto_step)
    ap.stats                         # calls, sparse, dense, fallbacks; residual_peak_bytes after exit

    with apply(pipe, plan) as ap:    # a diffusers pipeline object: every transformer it holds
        pipe(prompt)                 # step = denoising step (by timestep: CFG branches are one step)
    ap.forwards                      # (step, expert) of every transformer forward

On a pipeline object (anything that is not a module but holds ``transformer`` — and, for Wan2.2,
``transformer_2`` with a ``boundary_ratio``), every transformer is instrumented, only their
self-attention calls are layers, and steps are numbered by the timestep each forward receives:
CFG branches called separately (equal timesteps) or batched are one step, and the low-noise
expert's steps continue the high-noise expert's count. A plan whose ``model.experts`` names the
experts (:mod:`attnsearch.experts`) gives each step to one of them; layer l of step s is layer l
of that expert; a step run by another expert is a PlanError naming both. A plan without experts
gives every step to ``transformer``. The same holds for a model holding experts as one module
(``ExpertPair``: a forward is a step). A plan naming experts cannot run on a lone transformer.

Built on :class:`attnsearch.profiling.capture.capture_attention`, which hands each SDPA call (step, layer,
q, k, v, kwargs) to a consumer. A call runs ``plan.layer_plan(step, layer)``:

- an all-dense layer plan, after checking the query shape against the plan, runs on the Hopper
  kernel with every key block kept where that kernel can run the call (``runtime.dense``: exact
  attention, 10-18% faster than cuDNN's on an H100), else the real SDPA (every keyword honoured)
  with cuDNN's kernel first on Hopper;
- otherwise :func:`sparse_attention` with the call's ``scale`` and ``enable_gqa``; in a schedule
  entry that reuses a residual, its first step also runs the inexact heads exactly (as an all-dense
  layer runs) and keeps the difference, and the later steps add it (:mod:`attnsearch.runtime.residual`;
  freed when the context exits).

Geometry of a call. A call at the plan's geometry runs the plan as it is. A call at another
geometry runs ``plan.for_geometry(geometry)`` (built once per geometry), where the geometry comes
from ``apply(..., geometry=G)`` (every call) or from the model: a root module that defines
``attnsearch_geometry(*args, **kwargs) -> Geometry`` (None: not known) is asked at each forward
with that forward's arguments (mini-vdit does). Both given and disagreeing is an error. The
geometry is never guessed from the sequence length: a call whose length differs from the plan's
with no geometry given is an error naming ``geometry``, as is a given geometry whose token count is
not the call's, a plan marked non-portable, or a geometry the plan cannot serve
(:mod:`attnsearch.retarget`).

Anything the plan cannot honour — a step or layer it does not cover, a sequence length or head
count that does not match, an ``attn_mask``, ``is_causal``, dropout, cross-attention on a sparse
layer — raises :class:`PlanError` naming the call and the field. With
``allow_dense_fallback=True`` such calls run dense SDPA instead and the count is reported
(``warnings.warn``) when the context exits. Never a silent dense fallback: a diffusers model whose
attention backend bypasses SDPA is refused on entry (``diffusers_dispatch``), and a context in which
the model ran forwards but made no attention call the plan could see raises on exit.

``torch.compile``: under apply a model (not a pipeline object) compiles with ``fullgraph=True``;
every planned call is one ``torch.ops.attnsearch.planned_attention`` node, numbered when it runs
(``traced``), so one graph serves every step. Context parallelism: ``heads=`` (or diffusers'
context-parallel config, or the process group) names this rank's heads, and calls carrying that
many heads run the plan's slice (``parallel``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch

from ..geometry import Geometry
from ..plan import LayerPlan, Plan, PlanError
from ..profiling.capture import _SDPA, SDPACall
from . import ops
from .backends import Backend, SdpaBackend, dense_kernel_reasons
from .diffusers_dispatch import check_model
from .parallel import head_layout
from .residual import ResidualStore, head_index
from .traced import PlanCapture


def _new_stats() -> dict[str, Any]:
    """An apply context's counters: attention calls, of them sparse and dense, dense fallbacks by
    reason, and (set on exit) the most bytes its residuals held at once."""
    return {"calls": 0, "sparse": 0, "dense": 0, "fallbacks": Counter(), "residual_peak_bytes": 0}


def recording_cuda_graph() -> bool:
    """Whether the current CUDA stream is recording a CUDA graph (False without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class apply:  # noqa: N801  (a context manager used like a function, as torch's no_grad)
    """Context manager running ``model``'s attention by ``plan``.

    Args:
        model: any ``torch.nn.Module`` (or callable capture_attention accepts) whose attention goes
            through ``torch.nn.functional.scaled_dot_product_attention``.
        plan: the Plan (``load_plan``); its geometry must match the model's attention inputs.
        allow_dense_fallback: run calls the plan cannot honour as dense SDPA (reported at exit)
            instead of raising.
        backend: sparse_attention's backend ("auto", "hopper", "triton", "torch"); "auto" and
            "hopper" also run all-dense layers on the Hopper kernel where it can.
        auto_step: advance the step at every model forward (capture_attention's auto_step);
            with False, call :meth:`set_step` yourself (outside a compiled function).
        heads: this process's query heads under context parallelism (``parallel.head_layout``):
            a range or (start, stop), a torch.distributed process group (the Ulysses group), or
            None: diffusers' context-parallel config, else the default process group, else none.
        geometry: the token layout of every call (see the module docstring); None: the plan's, or
            the model's ``attnsearch_geometry`` at each forward.
        residual_precision: how the residuals of the plan's residual entries are kept: "native"
            (the call's dtype) or "fp8" (e4m3 with a scale per row: about half bf16's memory).
    """

    def __init__(self, model: Any, plan: Plan, *, allow_dense_fallback: bool = False, backend: str = "auto",
                 auto_step: bool = True, heads: Any = None, geometry: Geometry | None = None,
                 residual_precision: str = "native") -> None:
        if not isinstance(plan, Plan):
            raise TypeError(f"plan: expected a Plan (attnsearch.load_plan), got {type(plan).__name__}")
        if geometry is not None and not isinstance(geometry, Geometry):
            raise TypeError(f"geometry: expected an attnsearch.Geometry, got {type(geometry).__name__}")
        self.geometry = geometry
        self._forward_geometry: list[Geometry | None] = []  # the model's, per forward in progress
        self._geometry_hooks: list[Any] = []
        self.model = model
        self.plan = plan
        self.allow_dense_fallback = allow_dense_fallback
        self.backend = backend
        self.auto_step = auto_step
        self.heads = heads
        self.stats: dict[str, Any] = _new_stats()
        self._capture = None
        self._stepper = None
        self._token = None
        #: Residuals of the plan's residual entries, kept across steps while the context is open.
        self.residuals = ResidualStore(residual_precision)
        #: (step, expert) of every forward that made attention calls (expert None: a lone model).
        self.forwards: list[tuple[int, str | None]] = []
        from ..experts import ExpertError, experts_of

        try:
            self.experts = experts_of(plan.model, "model")
        except ExpertError as err:
            raise PlanError(str(err)) from None
        self._router = None
        if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "transformer", None),
                                                                   torch.nn.Module):
            from ..models.diffusers.experts import PipelineRouter

            self._router = PipelineRouter(model)
            self._current = lambda: self._router.current
        elif isinstance(model, torch.nn.Module) and callable(getattr(model, "named_experts", None)):
            self._current = lambda: model.current
        else:
            self._current = None
            if self.experts:
                raise PlanError(f"model.experts: the plan covers experts {', '.join(e.name for e in self.experts)}; "
                                f"apply it to the pipeline object that holds them, not to a lone "
                                f"{type(model).__name__}")

    # -- context management ------------------------------------------------------------------------

    def __enter__(self) -> apply:
        from ..profiling.capture import capture_attention

        modules = [m for _, m in self._router.experts] if self._router is not None else [self.model]
        for m in modules:
            check_model(m)
        self.layout = head_layout(modules[0], self.plan, self.heads)
        self.stats = _new_stats()
        self.forwards = []
        self._layers_seen: dict[int, int] = {}
        self._last_step: int | None = None
        self.residuals.clear()
        self._forward_geometry = []
        for m in modules:  # each transformer that can tell its forward's geometry (a pipeline's every expert)
            if isinstance(m, torch.nn.Module) and callable(getattr(m, "attnsearch_geometry", None)):
                self._geometry_hooks += [m.register_forward_pre_hook(self._enter_forward, with_kwargs=True),
                                         m.register_forward_hook(self._leave_forward, always_call=True)]
        try:
            if self._router is None:
                self._token = ops.model_token(self.model)
                self._capture = PlanCapture(self.model, self._consumer, token=self._token,
                                            num_layers=self.plan.num_layers, auto_step=self.auto_step)
                ops.activate(self._token, self._run_compiled)
                self._capture.__enter__()
                return self
            self._capture = capture_attention(None, self._consumer, auto_step=False, accept=self._router.accept)
            self._capture.__enter__()
        except BaseException:
            if self._token is not None:
                ops.deactivate(self._token)
                self._token = None
            self._remove_geometry_hooks()
            raise
        if self.auto_step:  # the pipeline's steps, by timestep; else the caller's set_step
            self._stepper = self._router.stepping(self._capture)
            self._stepper.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        try:
            if self._stepper is not None:
                self._stepper.__exit__(*exc)
                self._stepper = None
            suppressed = self._capture.__exit__(*exc)
            if exc[0] is None and self._last_step is not None:
                self._check_layers(self._last_step)
            forwards = getattr(self._capture, "_forwards", 0)
            if exc[0] is None and self._last_step is None and forwards:
                raise PlanError(f"attnsearch.apply: the model ran {forwards} forward(s) but made no "
                                "attention call the plan could see (is its attention backend one that bypasses "
                                "scaled_dot_product_attention?)")
            return suppressed
        finally:
            self.stats["residual_peak_bytes"] = self.residuals.peak_bytes
            self.residuals.clear()
            self._remove_geometry_hooks()
            self._capture = None
            if self._token is not None:
                ops.deactivate(self._token)
                self._token = None
            fb: Counter = self.stats["fallbacks"]
            if fb:
                detail = "; ".join(f"{n}× {reason}" for reason, n in fb.most_common())
                n, calls = sum(fb.values()), self.stats["calls"]
                warnings.warn(f"attnsearch.apply: {n} of {calls} attention calls ran dense SDPA instead of "
                              f"the plan ({detail})", RuntimeWarning, stacklevel=2)

    @property
    def step(self) -> int:
        return self._capture.step

    def set_step(self, step: int) -> None:
        """Set the step of the next calls (when auto_step is False, or to re-sync)."""
        self._capture.set_step(step)

    # -- the geometry of a call ------------------------------------------------------------------------

    def _enter_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        geometry = module.attnsearch_geometry(*args, **kwargs)
        if geometry is not None and not isinstance(geometry, Geometry):
            raise TypeError("attnsearch_geometry: expected an attnsearch.Geometry, got "
                            f"{type(geometry).__name__}")
        self._forward_geometry.append(geometry)

    def _leave_forward(self, module: Any, args: tuple, output: Any) -> None:
        if self._forward_geometry:
            self._forward_geometry.pop()

    def _remove_geometry_hooks(self) -> None:
        while self._geometry_hooks:
            self._geometry_hooks.pop().remove()

    def _plan_for_call(self, num_tokens: int) -> Plan:
        """The plan a call of ``num_tokens`` tokens runs: the plan at the call's geometry (module
        docstring); PlanError naming ``geometry`` when that geometry is unknown or does not fit."""
        plan = self.plan
        from_model = self._forward_geometry[-1] if self._forward_geometry else None
        if self.geometry is not None and from_model is not None and from_model != self.geometry:
            raise PlanError(f"geometry: apply(geometry={self.geometry}) but the model's attnsearch_geometry "
                            f"says {from_model}")
        geometry = self.geometry or from_model
        if geometry is None:
            if num_tokens != plan.geometry.num_tokens:
                raise PlanError(f"geometry: sequence length {num_tokens} does not match the plan's geometry "
                                f"{plan.geometry}; to run the plan at another geometry pass apply(..., "
                                "geometry=Geometry(...)) or give the model an attnsearch_geometry(*forward "
                                "args) method (a geometry is never guessed from the sequence length)")
            return plan
        if geometry.num_tokens != num_tokens:
            raise PlanError(f"geometry: sequence length {num_tokens} does not match the call's geometry "
                            f"{geometry}")
        return plan.for_geometry(geometry)

    # -- one call ------------------------------------------------------------------------------------

    def _run_compiled(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """A ``planned_attention`` node of a compiled graph: number the call, then run it as eagerly.

        Refused while a CUDA graph records it (``torch.compile(mode="reduce-overhead")``) for a plan
        whose layers change across steps: the graph's replays run no Python, so every later step
        would replay this step's layer plans, a wrong answer nothing would report."""
        if (len(self.plan.schedule) > 1 or self.plan.has_residual) and recording_cuda_graph():
            why = ("its residual entries keep state across steps" if self.plan.has_residual else
                   f"the plan's layers change across its steps ({len(self.plan.schedule)} schedule entries)")
            raise PlanError(f"attnsearch.apply: a CUDA graph is recording a compiled forward (torch.compile "
                            f"mode='reduce-overhead'), but {why} and a replayed graph would run one "
                            "step's layers at every step; compile with mode='default' or "
                            "'max-autotune-no-cudagraphs', or capture one graph per step range eagerly")
        step, layer = self._capture.number_call()
        out = self._consumer(SDPACall(step, layer, q, k, v, kwargs))
        return _SDPA(q, k, v, **kwargs) if out is None else out

    def _check_layers(self, step: int) -> None:
        """Every layer of the plan ran in ``step``: a model that makes fewer attention calls per
        forward than the plan has layers is running some other model's plan."""
        seen = self._layers_seen.get(step, 0)
        if seen < self.plan.num_layers:
            raise PlanError(f"attnsearch.apply: step {step} made {seen} attention call(s), but the plan has "
                            f"{self.plan.num_layers} layers (layers {seen}..{self.plan.num_layers - 1} never ran: "
                            "is the plan for this model?)")

    def _consumer(self, call: Any) -> torch.Tensor | None:
        if self._last_step is not None and call.step != self._last_step:
            self._check_layers(self._last_step)
        self._last_step = call.step
        self._layers_seen[call.step] = max(self._layers_seen.get(call.step, 0), call.layer + 1)
        self.stats["calls"] += 1
        running = self._current() if self._current is not None else None
        if call.layer == 0:
            self.forwards.append((call.step, running))
        try:
            if self._current is not None:
                self._check_expert(call.step, running)
            return self._run(call, running)
        except PlanError as err:
            if not self.allow_dense_fallback:
                raise PlanError(f"attnsearch.apply: step {call.step}, layer {call.layer}: {err} "
                                "(allow_dense_fallback=True runs such calls dense)") from None
            self.stats["fallbacks"][str(err)] += 1
            return None  # capture runs the real SDPA

    def _check_expert(self, step: int, running: str | None) -> None:
        """The expert running ``step`` is the one the plan gives it (``transformer`` without experts)."""
        from ..experts import expert_at

        expert = expert_at(self.experts, step)
        if not self.experts:
            expected = "transformer"
        elif expert is None:
            raise PlanError(f"step: {step} is outside the plan's expert ranges (model.experts ends at step "
                            f"{self.experts[-1].stop})")
        else:
            expected = expert.name
        if running != expected:
            ranges = ", ".join(f"{e.name} [{e.start}, {e.stop})" for e in self.experts) or "none: every step by transformer"
            raise PlanError(f"model.experts: step {step} ran {running}, the plan gives it to {expected} (plan experts: "
                            f"{ranges}); was the plan made for this pipeline's boundary and step count?")

    def _run(self, call: Any, expert: str | None = None) -> torch.Tensor | None:
        plan = self.plan
        q, k, v, kw = call.query, call.key, call.value, call.kwargs
        if call.step >= plan.num_steps:
            raise PlanError(f"step: {call.step} is outside the plan's steps [0, {plan.num_steps})")
        if call.layer >= plan.num_layers:
            raise PlanError(f"layer: {call.layer} is outside the plan's layers [0, {plan.num_layers}) "
                            "(does the model make more attention calls per forward than the plan knows?)")
        if q.dim() != 4:
            raise PlanError(f"query: expected [batch, heads, N, head_dim], got shape {tuple(q.shape)}")
        plan = self._plan_for_call(q.shape[2])
        lp = self.layout.layer_plan(plan.layer_plan(call.step, call.layer), q.shape[1])
        lp.check_inputs(q.shape[2], q.shape[1])
        if lp.is_dense:
            self.stats["dense"] += 1
            return self._dense(q, k, v, kw, lp)
        unsupported = Backend.keyword_reasons(q, k, kw)  # what no block-sparse backend honours
        if unsupported:
            raise PlanError(unsupported[0])
        from . import sparse_attention

        self.stats["sparse"] += 1

        def planned() -> torch.Tensor:
            return sparse_attention(q, k, v, lp, backend=self.backend, scale=kw.get("scale"),
                                    enable_gqa=bool(kw.get("enable_gqa", False)))

        entry = plan.entry_at(call.step)
        if not entry.residual:
            return planned()
        heads = lp.reuse_heads
        if not heads:  # no head of this layer reuses: its masks alone, at every step of the entry
            return planned()
        return self.residuals.run(call.step, call.layer, expert, entry, heads, planned,
                                  lambda: self._exact_heads(q, k, v, kw, lp, heads))

    def _exact_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: dict[str, Any],
                     lp: LayerPlan, heads: tuple[int, ...]) -> torch.Tensor:
        """Exact attention of ``heads`` of a call, [batch, len(heads), N, D], run as an all-dense layer
        of that many heads (each query head with its own key/value head)."""
        dense = LayerPlan.dense(lp.geometry, len(heads), lp.block_size)
        if len(heads) == q.shape[1]:
            return self._dense(q, k, v, kw, dense)
        index = head_index(heads, q.device)
        kv_index = index // (q.shape[1] // k.shape[1])
        return self._dense(q.index_select(1, index), k.index_select(1, kv_index), v.index_select(1, kv_index),
                           {**kw, "enable_gqa": False}, dense)

    def _dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: dict[str, Any],
               lp: LayerPlan) -> torch.Tensor:
        """Exact attention of a call (``lp`` all dense): the Hopper kernel with every key block kept
        where it can run the call, else the real SDPA (cuDNN first on Hopper)."""
        if not dense_kernel_reasons(q, k, v, lp, kw, self.backend):
            from . import sparse_attention

            return sparse_attention(q, k, v, lp, backend="hopper", scale=kw.get("scale"),
                                    enable_gqa=bool(kw.get("enable_gqa", False)))
        return SdpaBackend.run_call(q, k, v, kw)

