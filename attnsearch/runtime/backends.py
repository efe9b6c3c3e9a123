"""The backends that run attention, each declaring what it supports (as xformers' fmha ops do), and
dispatch: ``backend="auto"`` takes the first of hopper, triton, torch that supports a call and does
not yield it to a later one (``auto_yields``: calls another backend was measured to run faster).

    hopper  warp-specialised block-sparse flash attention in Gluon (FlashAttention-3's schedule):
            Hopper GPUs (sm_90), head_dim 64 or 128, block size 128, fp16 / bf16, TMA-aligned strides;
            products in FP8 too ("auto" sends FP8 heads of head_dim 64 to triton, faster there)
    triton  block-sparse flash attention (CUDA; or CPU under TRITON_INTERPRET=1)
            head_dim 64 or 128, fp16 / bf16 / fp32; products in FP8 too (compute capability ≥ 8.9)
    torch   reference-quality chunked gather in PyTorch: any device, head_dim, floating dtype; FP8
            emulated (the quantization definition, float32 arithmetic)
    sdpa    dense attention (``runtime.dense``: PyTorch's SDPA, cuDNN's kernel first on Hopper):
            every SDPA keyword; runs all-dense layers the block-sparse kernels do not

Each class answers ``not_supported_reasons(...)`` from its class attributes and the call's
properties (device, capability, dtype, head_dim, block size), so the runtime's dispatch, ``apply``,
the dense routing and the cost model ask one place. ``call_reasons`` adds what only a real call
shows (the environment, tensor strides); ``keyword_reasons`` the SDPA keywords it cannot honour.

On CUDA, "auto" falling back to torch is a performance surprise, so it warns once per distinct
reason (falling from hopper to triton is expected on other GPUs and block size 64, and is silent).
Naming a backend that cannot run the call raises with its reasons.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch

from ..plan import LayerPlan
from .block_tables import get_block_tables
from .device_caps import tma_compatible
from ..layer_plan import PRECISIONS

BackendName = Literal["auto", "hopper", "triton", "torch"]
#: SDPA keywords a block-sparse kernel honours (the rest: ``keyword_reasons``).
SPARSE_KEYWORDS = frozenset({"scale", "enable_gqa"})


def interpreter_requested() -> bool:
    """TRITON_INTERPRET=1 is set (Triton kernels then run on CPU tensors, Gluon ones not at all)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _device_capability(device: torch.device) -> tuple[int, int] | None:
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


class Backend:
    """What a backend supports, as class attributes; None: any."""

    name: ClassVar[str] = ""
    #: Which block-table fusion the backend consumes ("layer": one launch per layer).
    fusion: ClassVar[str] = "layer"
    dtypes: ClassVar[tuple[torch.dtype, ...] | None] = None
    head_dims: ClassVar[tuple[int, ...] | None] = None
    block_sizes: ClassVar[tuple[int, ...] | None] = None
    #: Device types it runs on (None: any).
    devices: ClassVar[tuple[str, ...] | None] = None
    #: CUDA compute-capability majors it runs on.
    capabilities: ClassVar[tuple[int, ...] | None] = None
    #: It also runs CPU tensors under TRITON_INTERPRET=1 (its only CPU mode).
    interpreter: ClassVar[bool] = False
    #: The dtypes it computes correctly under TRITON_INTERPRET=1 (None: every dtype it supports).
    interpreter_dtypes: ClassVar[tuple[torch.dtype, ...] | None] = None
    #: It cannot run under TRITON_INTERPRET=1 at all.
    no_interpreter: ClassVar[bool] = False
    #: Its tensors need strides TMA can read.
    needs_tma: ClassVar[bool] = False
    #: SDPA keywords it honours (None: all); it needs self-attention unless it honours all.
    keywords: ClassVar[frozenset[str] | None] = SPARSE_KEYWORDS
    #: What its products run in: "native" (the inputs' dtype), "fp8" (e4m3, ``runtime/quantize.py``).
    precisions: ClassVar[tuple[str, ...]] = ("native",)
    #: The compute capability its FP8 path needs on CUDA (FP8 tensor cores); None: none.
    fp8_capability: ClassVar[tuple[int, int] | None] = (8, 9)
    #: The order of V's keys its FP8 kernel reads (``quantize.KEY_ORDERS``).
    fp8_key_order: ClassVar[str] = "natural"
    #: Calls it runs that "auto" leaves to a later backend all the same, by (precision, head_dim),
    #: each with the measurement that says why (naming the backend still runs them).
    auto_yields: ClassVar[Mapping[tuple[str, int], str]] = {}

    @classmethod
    def not_supported_reasons(cls, *, device: str, dtype: torch.dtype, head_dim: int, block_size: int,
                              capability: tuple[int, int] | None = None, interpret: bool = False,
                              precision: str = "native") -> list[str]:
        """Why this backend cannot run a call of these properties (empty: it can)."""
        reasons = []
        if precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
        if precision not in cls.precisions:
            reasons.append(f"precision {precision!r}: the {cls.name} kernel runs {' / '.join(cls.precisions)} only")
        elif (precision == "fp8" and device == "cuda" and cls.fp8_capability is not None
              and (capability is None or capability < cls.fp8_capability)):
            reasons.append(f"precision 'fp8': FP8 tensor cores need compute capability "
                           f"{'.'.join(map(str, cls.fp8_capability))} or newer")
        if not cls.runs_on(device, interpret):
            reasons.append(cls.device_reason(device))
        elif cls.no_interpreter and interpret:
            reasons.append("TRITON_INTERPRET=1: Gluon kernels do not run under the interpreter")
        elif device == "cuda" and cls.capabilities is not None and (capability is None
                                                                    or capability[0] not in cls.capabilities):
            reasons.append(f"the {cls.name} kernel is built for compute capability "
                           f"{' / '.join(f'{c}.x' for c in cls.capabilities)}")
        if cls.dtypes is not None and dtype not in cls.dtypes:
            names = ", ".join(str(d).removeprefix("torch.").replace("float", "fp").replace("bfp", "bf")
                              for d in cls.dtypes)
            reasons.append(f"dtype {dtype} is not one of {names}")
        elif not dtype.is_floating_point:
            reasons.append(f"dtype {dtype} is not a floating-point type")
        elif (interpret and device == "cpu" and cls.interpreter_dtypes is not None
              and dtype not in cls.interpreter_dtypes):
            reasons.append(f"dtype {dtype} under TRITON_INTERPRET=1: the interpreter computes it wrongly "
                           "(NumPy has no bfloat16)")
        if cls.head_dims is not None and head_dim not in cls.head_dims:
            reasons.append(f"head_dim {head_dim} is not one of {cls.head_dims}")
        if cls.block_sizes is not None and block_size not in cls.block_sizes:
            reasons.append(f"block size {block_size} is not one of {cls.block_sizes}")
        return reasons

    @classmethod
    def auto_reasons(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int,
                     precision: str = "native") -> list[str]:
        """Why ``backend="auto"`` does not run this call here (empty: it may): what stops the
        backend (``call_reasons``), else the measured reason it yields the call (``auto_yields``)."""
        reasons = cls.call_reasons(q, k, v, block_size, precision)
        why = cls.auto_yields.get((precision, q.shape[-1]))
        if not reasons and why is not None:
            reasons = [f"precision {precision!r} at head_dim {q.shape[-1]}: left to a later backend: {why}"]
        return reasons

    @classmethod
    def runs_on(cls, device: str, interpret: bool = False) -> bool:
        """Whether it runs tensors of this device type at all."""
        return cls.devices is None or device in cls.devices or (cls.interpreter and device == "cpu" and interpret)

    @classmethod
    def device_reason(cls, device: str) -> str:
        return f"tensors are on {device}; the {cls.name} backend runs on {' / '.join(cls.devices)}"

    @classmethod
    def environment_reasons(cls, device: torch.device) -> list[str]:
        """What this process lacks to run the backend on ``device`` (a module, an import order)."""
        return []

    @classmethod
    def call_reasons(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int,
                     precision: str = "native") -> list[str]:
        """Why this backend cannot run a call on these tensors (empty: it can)."""
        interpret = interpreter_requested()
        reasons = cls.not_supported_reasons(device=q.device.type, dtype=q.dtype, head_dim=q.shape[-1],
                                            block_size=block_size, capability=_device_capability(q.device),
                                            interpret=interpret, precision=precision)
        if not cls.runs_on(q.device.type, interpret):
            return reasons  # no point asking the environment for a device it cannot use
        reasons = cls.environment_reasons(q.device) + reasons
        if cls.needs_tma:
            reasons += [f"{name}: TMA needs a unit last stride and 16-byte aligned base and strides"
                        for name, t in (("q", q), ("k", k), ("v", v)) if not tma_compatible(t)]
        return reasons

    @classmethod
    def keyword_reasons(cls, q: torch.Tensor, k: torch.Tensor, kwargs: Mapping[str, object]) -> list[str]:
        """The SDPA call's properties (``kwargs``: its keywords) this backend cannot honour, each as
        "field: why"."""
        if cls.keywords is None:
            return []
        reasons = []
        if kwargs.get("attn_mask") is not None:
            reasons.append("attn_mask: the call passes an attn_mask, which a block-sparse layer plan cannot honour")
        if kwargs.get("is_causal", False):
            reasons.append("is_causal: the call is causal, which a block-sparse layer plan cannot honour")
        if kwargs.get("dropout_p", 0.0):
            reasons.append(f"dropout_p: dropout_p {kwargs['dropout_p']} > 0 is not supported by the sparse runtime")
        unknown = sorted(set(kwargs) - cls.keywords - {"attn_mask", "is_causal", "dropout_p"})
        if unknown:
            reasons.append(f"keywords: the call passes keywords {unknown}")
        if k.dim() != 4 or k.shape[2] != q.shape[2]:
            reasons.append(f"key: {tuple(k.shape)} for query {tuple(q.shape)}: cross-attention; a block-sparse "
                           "layer plan needs self-attention (same N for queries and keys)")
        elif k.shape[1] != q.shape[1] and not (kwargs.get("enable_gqa", False) and q.shape[1] % k.shape[1] == 0):
            reasons.append(f"key: {k.shape[1]} key heads for {q.shape[1]} query heads")
        return reasons

    @classmethod
    def forward(cls, q, k, v, layer_plan: LayerPlan, scale: float, out: torch.Tensor | None,
                precision: str = "native") -> torch.Tensor:
        """Run the call's heads of ``precision`` (every computed head where the layer plan has one
        precision); ``out`` (optional) receives the result."""
        return cls.run_tables(q, k, v, get_block_tables(layer_plan, q.device, cls.fusion), scale, out,
                              precision=precision)

    @classmethod
    def run_tables(cls, q, k, v, tables, scale: float, out: torch.Tensor | None, **options) -> torch.Tensor:
        """Run a layer's launches of one precision from its block tables (``options``: ``precision``,
        default native, and the kernel's own, e.g. a Triton config)."""
        raise NotImplementedError

    @classmethod
    def run_launch(cls, q, k, v, out, tables, work, scale: float, **options) -> None:
        """One kernel launch over the work items ``work`` (skip heads not zeroed)."""
        raise NotImplementedError(f"the {cls.name} backend has no single launches")

    @classmethod
    def run_quantized(cls, q8, k8, v8, scales, out, tables, scale: float) -> None:
        """The tables' FP8 launches on operands ``quantize_fp8(..., key_order=cls.fp8_key_order)``
        made (skip heads not zeroed): what an FP8 call runs after its quantization pass, after a
        first call through ``run_tables`` has compiled (and tuned) the kernel."""
        raise NotImplementedError(f"the {cls.name} backend has no FP8 kernel")

    @classmethod
    def tuned_config(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int):
        """The kernel configuration this process runs such calls with (None: none, or not tuned yet)."""
        return None


class HopperBackend(Backend):
    """Where it runs, faster than the Triton kernel on an H100 at both head dims (docs/hopper-kernel.md)."""

    name = "hopper"
    dtypes = (torch.float16, torch.bfloat16)
    precisions = ("native", "fp8")
    fp8_key_order = "wgmma"
    auto_yields = {("fp8", 64): "the Triton kernel's FP8 build is 5-11% faster there "
                                "(reports/fp8_layers, H100: 485-523 against 460-471 TFLOP/s)"}
    head_dims = (64, 128)
    block_sizes = (128,)  # two 64-row consumer warpgroups per block
    devices = ("cuda",)
    capabilities = (9,)
    no_interpreter = True
    needs_tma = True

    @classmethod
    def device_reason(cls, device):
        return f"tensors are on {device}; the Hopper kernel needs a CUDA GPU of compute capability 9.x"

    @classmethod
    def environment_reasons(cls, device):
        try:
            from .hopper import launch  # noqa: F401
        except (ImportError, AttributeError) as err:  # no Gluon, or a Gluon without warp specialisation
            return [f"triton.experimental.gluon with Hopper support is not importable ({err})"]
        return []

    @classmethod
    def run_tables(cls, q, k, v, tables, scale, out, **options):
        from .hopper import launch

        return launch.forward(q, k, v, tables, scale, out, **options)

    @classmethod
    def run_launch(cls, q, k, v, out, tables, work, scale, **options):
        from .hopper import launch

        launch.launch(q, k, v, out, tables, work, scale, **options)

    @classmethod
    def run_quantized(cls, q8, k8, v8, scales, out, tables, scale):
        from .hopper import launch

        launch.launch_all(q8, k8, v8, out, tables, scale, "fp8", fp8_scales=scales)


class TritonBackend(Backend):
    name = "triton"
    dtypes = (torch.float16, torch.bfloat16, torch.float32)
    precisions = ("native", "fp8")
    head_dims = (64, 128)  # a power of two its tiles hold whole
    devices = ("cuda",)
    interpreter = True
    # Measured: bf16 under the interpreter is off by ~1e9 against fp32 SDPA (fp16, fp32 within 4e-4).
    interpreter_dtypes = (torch.float16, torch.float32)

    @classmethod
    def device_reason(cls, device):
        return (f"tensors are on {device}; the Triton kernel needs CUDA "
                "(or CPU tensors with TRITON_INTERPRET=1)")

    @classmethod
    def environment_reasons(cls, device):
        try:
            from .triton import launch
        except ImportError as err:  # triton missing or broken on this platform
            return [f"triton is not importable ({err})"]
        if device.type == "cpu" and not launch.interpreter_active():
            return ["TRITON_INTERPRET=1 was set after triton (or the kernel module) was imported"]
        if device.type == "cuda" and launch.interpreter_active():
            return ["the kernel was imported under TRITON_INTERPRET=1 and cannot run on CUDA"]
        return []

    @classmethod
    def run_tables(cls, q, k, v, tables, scale, out, **options):
        from .triton import launch

        return launch.forward(q, k, v, tables, scale, out, **options)

    @classmethod
    def run_launch(cls, q, k, v, out, tables, work, scale, config=None):
        from .triton import launch

        launch.launch(q, k, v, out, tables, work, scale, config or cls.tuned_config(q, k, v, tables.block_size))

    @classmethod
    def run_quantized(cls, q8, k8, v8, scales, out, tables, scale):
        from .triton import launch

        config = launch.quantized_config(q8, k8, v8, tables.block_size)
        if config is None:
            raise RuntimeError("no FP8 kernel config tuned yet: run the call through run_tables first")
        launch.launch_all(q8, k8, v8, out, tables, scale, config, scales)

    @classmethod
    def tuned_config(cls, q, k, v, block_size):
        from .triton import launch

        return launch.tuned_config(q.shape[-1], block_size, q.dtype, launch.tma_supported(q, k, v), q.device.index)


class TorchBackend(Backend):
    """The reference: FP8 is the quantization definition and the FP8 kernel's arithmetic, emulated
    in float32 (``quantize.fp8_attention_rows``), so it needs no FP8 tensor cores."""

    name = "torch"
    fusion = "group"  # heads of one family have similar counts: less padding per gather
    precisions = ("native", "fp8")
    fp8_capability = None

    @classmethod
    def run_tables(cls, q, k, v, tables, scale, out, **options):
        from . import torch_backend

        return torch_backend.forward(q, k, v, tables, scale, out, **options)


class SdpaBackend(Backend):
    """Dense attention through PyTorch's SDPA (all-dense layers only; ``runtime.dense``)."""

    name = "sdpa"
    keywords = None

    @classmethod
    def run_call(cls, q, k, v, kwargs: Mapping[str, object]) -> torch.Tensor:
        """The SDPA call with every keyword it was made with (cuDNN's kernel first on Hopper)."""
        from .dense import dense_attention

        return dense_attention(q, k, v, **kwargs)

    @classmethod
    def forward(cls, q, k, v, layer_plan, scale, out, precision="native"):
        result = cls.run_call(q, k, v, {"scale": scale})
        return result if out is None else out.copy_(result)


#: The block-sparse backends, in "auto"'s order of preference.
BACKENDS: tuple[type[Backend], ...] = (HopperBackend, TritonBackend, TorchBackend)
_WARNED: set[str] = set()


def get_backend(name: str) -> type[Backend]:
    for b in BACKENDS:
        if b.name == name:
            return b
    raise ValueError(f"backend: must be 'auto' or one of {[b.name for b in BACKENDS]}, got {name!r}")


def select_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan,
                   backend: BackendName = "auto", precision: str = "native") -> type[Backend]:
    """The backend that runs this call: the named one (or raise), or the first that supports it."""
    return backend_for(q, k, v, layer_plan.block_size, backend, precision)


def backend_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int,
                backend: BackendName = "auto", precision: str = "native") -> type[Backend]:
    """``select_backend`` for calls with this block size, whatever their layer plan (the choice
    depends on the plan only through it)."""
    if backend != "auto":
        chosen = get_backend(backend)
        reasons = chosen.call_reasons(q, k, v, block_size, precision)
        if reasons:
            raise ValueError(f"backend={backend!r} cannot run this call: {'; '.join(reasons)}")
        return chosen
    skipped = []
    for b in BACKENDS:
        reasons = b.auto_reasons(q, k, v, block_size, precision)
        if not reasons:
            if b.name == "torch" and skipped and q.device.type == "cuda":
                msg = "; ".join(f"{name}: {', '.join(r)}" for name, r in skipped)
                if msg not in _WARNED:
                    _WARNED.add(msg)
                    warnings.warn(f"attnsearch.sparse_attention: using the {b.name} backend ({msg})",
                                  RuntimeWarning, stacklevel=3)
            return b
        skipped.append((b.name, reasons))
    raise ValueError("no backend can run this call: " + "; ".join(f"{n}: {', '.join(r)}" for n, r in skipped))


def dense_kernel_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan,
                         kwargs: Mapping[str, object], backend: str = "auto") -> list[str]:
    """Why an all-dense layer's SDPA call (``kwargs``: its keywords) does not run on the Hopper
    kernel with every key block kept (empty: it does). ``backend``: the one ``apply`` was given;
    a backend named other than "hopper" keeps dense layers on SDPA."""
    reasons = [] if backend in ("auto", "hopper") else [f"backend {backend!r} was asked for"]
    reasons += HopperBackend.keyword_reasons(q, k, kwargs)
    if not reasons:
        reasons += HopperBackend.call_reasons(q, k, v, layer_plan.block_size)
    return reasons


__all__ = ["BACKENDS", "Backend", "BackendName", "backend_for", "HopperBackend", "SdpaBackend", "TorchBackend", "TritonBackend",
           "dense_kernel_reasons", "get_backend", "interpreter_requested", "select_backend"]
