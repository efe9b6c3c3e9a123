"""Host side of the Triton block-sparse kernel: tile configurations, their autotuning (with the
on-disk ``tuning_cache``), the launch, and ``forward`` (what ``backends.TritonBackend`` calls: zero
fills the skip heads, one launch per ``Launch`` of the block tables).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import triton

from .. import tuning_cache
from ..block_tables import BlockTables
from ..device_caps import num_sms, tma_compatible
from ...layer_plan import PRECISIONS
from ..quantize import FP8, Fp8Scales, quantize_fp8
from . import kernel

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634


def interpreter_active() -> bool:
    """Kernels were decorated under TRITON_INTERPRET=1 (they then run on CPU tensors)."""
    return _INTERPRETED


_INTERPRETED = not isinstance(kernel.block_sparse_attn_fwd, triton.runtime.JITFunction)


# --- configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and schedule of one launch. BLOCK_M and BLOCK_N must divide the plan's block size."""

    block_m: int
    block_n: int
    num_warps: int = 8
    num_stages: int = 3
    use_tma: bool | None = None  # None: TMA when the device and strides allow it
    warp_specialize: bool = False
    #: 0: one program per tile. k > 0: a persistent grid of k × #SMs programs taking tiles from an
    #: atomic counter (docs/hopper-kernel.md).
    persistent: int = 0

    def check(self, block_size: int) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if v not in (16, 32, 64, 128) or block_size % v:
                raise ValueError(f"KernelConfig.{name}: must be 16..128 and divide block_size {block_size}, "
                                 f"got {v}")
        if self.persistent < 0:
            raise ValueError(f"KernelConfig.persistent: must be ≥ 0, got {self.persistent}")


#: Fixed config of the CPU interpreter (speed there does not matter; small tiles keep it quick).
INTERPRETER_CONFIG = KernelConfig(64, 64, num_warps=4, num_stages=1, use_tma=False)

#: Per (head_dim, block_size) the configs autotuning tries on CUDA, best-measured first. The key of
#: the tuning cache adds dtype and TMA use.
#:
#: 64-row tiles with one warpgroup and a single K/V buffer lead on Hopper (H100,
#: docs/hopper-kernel.md): 168 registers and 50 KB of shared memory
#: let 3 programs share an SM, and the warp schedulers overlap one program's softmax with another's
#: wgmma — the overlap Triton 3.6 does not build inside one program (it waits on each QK wgmma
#: before the softmax). +4-22% over 128×128 / 8 warps at head_dim 128, +33-45% at head_dim 64.
#: 128×128 / 8 warps (one program per SM; the earlier default, 2-3 stages), its persistent grid
#: (atomic tile counter) and 128×64 stay as candidates for other GPUs.
TUNING_CONFIGS: dict[tuple[int, int], tuple[KernelConfig, ...]] = {
    (128, 128): (KernelConfig(64, 128, 4, 1), KernelConfig(128, 128, 8, 2), KernelConfig(128, 128, 8, 3),
                 KernelConfig(128, 64, 8, 3), KernelConfig(128, 128, 8, 2, persistent=1)),
    (128, 64): (KernelConfig(64, 64, 4, 1), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 4),
                KernelConfig(64, 64, 8, 3)),
    (64, 128): (KernelConfig(64, 128, 4, 1), KernelConfig(128, 128, 8, 3), KernelConfig(128, 128, 8, 2),
                KernelConfig(128, 64, 4, 3), KernelConfig(128, 128, 4, 3)),
    (64, 64): (KernelConfig(64, 64, 4, 1), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 4),
               KernelConfig(64, 64, 8, 3)),
}

#: The FP8 kernel's candidates (heads of precision "fp8"): e4m3 tiles take half the shared memory of
#: bf16 ones, so larger tiles and deeper pipelines are tried too. On an H100 tuning picked 64 × 128,
#: 4 warps, 1 stage at head_dim 128 and 128 × 128, 4 warps, 3 stages at 64 (reports/fp8_layers).
FP8_TUNING_CONFIGS: dict[tuple[int, int], tuple[KernelConfig, ...]] = {
    (128, 128): (KernelConfig(128, 128, 8, 2), KernelConfig(128, 128, 8, 3),
                 KernelConfig(128, 128, 8, 2, persistent=1), KernelConfig(64, 128, 4, 2), KernelConfig(64, 128, 4, 1)),
    (64, 128): (KernelConfig(128, 64, 4, 3), KernelConfig(128, 128, 8, 3), KernelConfig(128, 128, 8, 4),
                KernelConfig(64, 128, 4, 2), KernelConfig(128, 128, 4, 3)),
    (128, 64): (KernelConfig(64, 64, 4, 2), KernelConfig(64, 64, 4, 3)),
    (64, 64): (KernelConfig(64, 64, 4, 2), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 4)),
}

_TUNED: dict[tuple, KernelConfig] = {}


def tuned_config(head_dim: int, block_size: int, dtype: torch.dtype, use_tma: bool,
                 device_index: int | None) -> KernelConfig | None:
    """The config this process picked for that call shape (None: not tuned yet)."""
    return _TUNED.get((head_dim, block_size, dtype, use_tma, device_index))


def tuned_configs() -> dict[str, dict]:
    """Every config this process picked, keyed "d{head_dim}_b{block}_{dtype}_tma{0|1}"."""
    return {f"d{k[0]}_b{k[1]}_{str(k[2]).removeprefix('torch.')}_tma{int(bool(k[3]))}": vars(v)
            for k, v in _TUNED.items()}


def tma_supported(*tensors: torch.Tensor) -> bool:
    """TMA needs Hopper or newer, a contiguous last dim, 16-byte-aligned base and strides."""
    if _INTERPRETED or not all(t.is_cuda for t in tensors):
        return False
    if torch.cuda.get_device_capability(tensors[0].device)[0] < 9:
        return False
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return all(tma_compatible(t) for t in tensors)


def operands_tma(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether a launch on these operands reads K and V through TMA: FP8's V (e4m3, stored
    channel-major) is read as its [.., D, N] storage, the other operands as they are."""
    return tma_supported(q, k, v.transpose(-1, -2) if v.dtype == FP8 else v)


def quantized_config(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, block_size: int) -> KernelConfig | None:
    """The config this process's FP8 calls run on ``quantize_fp8``'s operands with (None: none tuned yet)."""
    return tuned_config(q8.shape[-1], block_size, q8.dtype, operands_tma(q8, k8, v8), q8.device.index)


# --- launcher -----------------------------------------------------------------------------------


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
           work: torch.Tensor, scale: float, config: KernelConfig, fp8_scales: Fp8Scales | None = None) -> None:
    """Run one kernel launch over ``work`` (int32 items ``head * nb + qb``).

    Args:
        q: [batch, H, N, D]; k, v: [batch, H_kv, N, D] (H % H_kv == 0), any strides, one dtype.
        out: [batch, H, N, D] output (written for the launch's heads, rows < N).
        tables: block tables of the layer plan, on q's device.
        work: the launch's ordered work items.
        fp8_scales: q, k, v are ``quantize.quantize_fp8``'s e4m3 operands and these their scales
            (quantized with the tables' block size); V channel-major, read by TMA as [.., D, N].
    """
    batch, num_heads, n, d = q.shape
    bs = tables.block_size
    config.check(bs)
    fp8 = fp8_scales is not None
    if fp8 and not all(t.dtype == FP8 for t in (q, k, v)):
        raise ValueError(f"fp8_scales given for {q.dtype} / {k.dtype} / {v.dtype} operands; expected {FP8}")
    v_rows = v.transpose(-1, -2) if fp8 else v          # FP8's V: [B, H_kv, D, N] in memory
    use_tma = operands_tma(q, k, v) if config.use_tma is None else config.use_tma
    k_arg, v_arg = k, v
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        box = [1, 1, config.block_n, d]
        k_arg = TensorDescriptor(k, list(k.shape), list(k.stride()), box)
        v_arg = TensorDescriptor(v_rows, list(v_rows.shape), list(v_rows.stride()),
                                 [1, 1, d, config.block_n] if fp8 else box)
    num_tiles = work.numel() * (bs // config.block_m) * batch
    num_programs, counter = num_tiles, tables.counts  # counter: unused unless persistent
    if config.persistent:
        num_programs = min(num_tiles, config.persistent * num_sms(q.device))
        counter = torch.zeros(1, dtype=torch.int32, device=q.device)
    qs, ks, vs = fp8_scales if fp8 else (tables.counts,) * 3     # unread unless FP8
    kernel.block_sparse_attn_fwd[(num_programs,)](
        q, k_arg, v_arg, out, tables.counts, tables.indices, work, qs, ks, vs,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        tables.counts.stride(0), tables.indices.stride(0), tables.indices.stride(1),
        scale * LOG2E, n, tables.num_blocks, batch, num_heads // k.shape[1], num_heads, num_tiles, counter,
        HEAD_DIM=d, BLOCK=bs, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        USE_TMA=use_tma, INPUT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        WARP_SPECIALIZE=config.warp_specialize, FP8=fp8, PERSISTENT=config.persistent > 0,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )


def launch_all(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
               scale: float, config: KernelConfig, fp8_scales: Fp8Scales | None = None) -> None:
    """Every launch of the tables in the operands' precision: the native ones, or with
    ``fp8_scales`` the FP8 ones on ``quantize_fp8``'s operands (skip heads not zeroed)."""
    for item in tables.launches_of("native" if fp8_scales is None else "fp8"):
        launch(q, k, v, out, tables, item.work, scale, config, fp8_scales)


def choose_config(disk_key: str, candidates: Sequence[KernelConfig],
                  time_ms: Callable[[KernelConfig], float]) -> KernelConfig:
    """The config stored for ``disk_key`` in the tuning cache if it is still one of ``candidates``;
    else time every candidate (``time_ms``; out-of-resources ones are skipped), store the fastest
    and return it."""
    cached = tuning_cache.lookup(disk_key)
    if cached is not None:
        for cfg in candidates:
            if vars(cfg) == cached:
                return cfg
    best, best_ms = None, float("inf")
    for cfg in candidates:
        try:
            ms = time_ms(cfg)
        except triton.runtime.errors.OutOfResources:
            continue
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError(f"no Triton config fits ({disk_key}) on this device")
    tuning_cache.store(disk_key, vars(best))
    return best


def source_hash() -> str:
    """Identifies this kernel's code in tuning-cache keys (a changed kernel is tuned again)."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        _SOURCE_HASH = hashlib.sha256(Path(kernel.__file__).read_bytes()).hexdigest()[:16]
    return _SOURCE_HASH


_SOURCE_HASH: str | None = None


def _tune(q, k, v, out, tables, scale, use_tma, fp8_scales: Fp8Scales | None = None) -> KernelConfig:
    """The config for this call's (device, head_dim, block size, dtype, TMA): from this process's
    picks, else the on-disk tuning cache, else timed on this call's data."""
    d, bs = q.shape[-1], tables.block_size
    key = (d, bs, q.dtype, use_tma, q.device.index)
    if key in _TUNED:
        return _TUNED[key]
    table = FP8_TUNING_CONFIGS if fp8_scales is not None else TUNING_CONFIGS
    candidates = [dataclasses.replace(base, use_tma=use_tma)
                  for base in table.get((d, bs), (KernelConfig(min(bs, 128), 64, 4, 2),))]
    disk_key = tuning_cache.make_key(torch.cuda.get_device_name(q.device), torch.cuda.get_device_capability(q.device),
                                     triton.__version__, source_hash(), d, bs, str(q.dtype).removeprefix("torch."),
                                     use_tma)

    def time_ms(cfg: KernelConfig) -> float:
        def run() -> None:
            launch_all(q, k, v, out, tables, scale, cfg, fp8_scales)
        return triton.testing.do_bench(run, warmup=10, rep=40, return_mode="median")

    _TUNED[key] = choose_config(disk_key, candidates, time_ms)
    return _TUNED[key]


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, config: KernelConfig | None = None,
            precision: str = "native") -> torch.Tensor:
    """The tables' launches of one precision → [batch, H, N, D] (``out``, or contiguous): every head
    of the layer plan when it has one precision; a layer of native and FP8 heads runs both.

    ``config`` None: the interpreter's fixed config on CPU, else the tuned config for this
    (head_dim, block size, dtype, TMA): from the on-disk tuning cache (``tuning_cache``) or timed
    on the first call that needs it. ``precision``: "native" (products in q's dtype) or "fp8" (the
    launches' heads quantized to e4m3 by ``quantize_fp8`` first, one pass over each operand; output in
    q's dtype). Skip heads are zeroed by the run of the tables' first precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
    batch, num_heads, n, d = q.shape
    if out is None:
        out = torch.empty(batch, num_heads, n, d, dtype=q.dtype, device=q.device)
    tables.prepare_output(out, precision)
    launches = tables.launches_of(precision)
    if not launches:
        return out
    scales = None
    if precision == "fp8":
        q, k, v, scales = quantize_fp8(q, k, v, tables.block_size, heads=tables.head_index("fp8"))
    if config is None:
        if _INTERPRETED:
            config = INTERPRETER_CONFIG
        else:
            config = _tune(q, k, v, out, tables, scale, operands_tma(q, k, v), scales)
    launch_all(q, k, v, out, tables, scale, config, scales)
    return out
