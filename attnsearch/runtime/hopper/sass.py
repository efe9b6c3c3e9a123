"""Compile both kernels (and the FP8 quantization kernels) for Hopper (sm_90a) on a machine without a
GPU and read what decides their speed from the binary: registers and spills per thread, shared
memory, programs per SM, global store widths, and in the SASS where the waits on wgmma groups sit
(``tests/runtime/test_kernel_compile.py`` holds the kernels to them). Uses Triton's bundled ptxas and cuobjdump; use the device's Triton version for numbers that
match it. Programs per SM = min over registers (65,536 per SM, allocated per warp in units of 256),
shared memory (227 KB per SM usable) and 64 warps.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

from ..triton import kernel as triton_kernel
from ..triton.launch import KernelConfig

HOPPER = GPUTarget("cuda", 90, 32)
REGS_PER_SM, SMEM_PER_SM, WARPS_PER_SM = 65536, 232448, 64
INT_ARGS = ("N", "NB", "BATCH", "KV_GROUP", "NUM_HEADS", "NUM_TILES")
#: The Triton kernel's FP8 scales (float32; ``runtime/quantize.py``).
SCALE_ARGS = ("QScale", "KScale", "VScale")
INDEX_ARGS = ("Counts", "Indices", "Work", "Counter", "Tiles", "Probe")  # Probe: the hopper kernel's cycle counts


ALIGNED = [["tt.divisibility", 16]]


def _other_args(fn, dtype: str, sig: dict, const: dict, attrs: dict) -> None:
    """The arguments both kernels share, typed as a CUDA launch specialises them: the output and
    index pointers (16-byte aligned), strides (aligned; the last dim's specialised to 1), the scale,
    integer sizes; everything else not yet in ``sig`` is a constexpr."""
    for i, name in enumerate(fn.arg_names):
        if name in sig:
            continue
        if name == "Out":
            sig[name], attrs[(i,)] = f"*{dtype}", ALIGNED
        elif name in INDEX_ARGS:
            sig[name], attrs[(i,)] = "*i32", ALIGNED
        elif name in SCALE_ARGS:
            sig[name], attrs[(i,)] = "*fp32", ALIGNED
        elif name.startswith("stride_") and name.endswith("d"):  # unit stride: specialised to 1
            sig[name], const[name] = "constexpr", 1
        elif name.startswith("stride_"):
            sig[name], attrs[(i,)] = "i32", ALIGNED
        elif name == "qk_scale":
            sig[name] = "fp32"
        elif name in INT_ARGS:
            sig[name] = "i32"
        else:
            sig[name] = "constexpr"


def signature(cfg: KernelConfig, head_dim: int, block: int, dtype: str = "bf16", tma: bool = True):
    """Argument types, constexprs and 16-byte alignment hints as a CUDA launch would specialise them
    (``dtype`` "fp8e4nv": the FP8 build, V's descriptor over its channel-major [.., D, N] layout)."""
    fn = triton_kernel.block_sparse_attn_fwd
    sig, const, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name == "Q" or (name in ("K", "V") and not tma):
            sig[name], attrs[(i,)] = f"*{dtype}", ALIGNED
        elif name == "V" and dtype == "fp8e4nv":  # channel-major V: [.., D, N] boxes
            sig[name] = f"tensordesc<{dtype}[1, 1, {head_dim}, {cfg.block_n}]>"
        elif name in ("K", "V"):
            sig[name] = f"tensordesc<{dtype}[1, 1, {cfg.block_n}, {head_dim}]>"
    _other_args(fn, "bf16" if dtype == "fp8e4nv" else dtype, sig, const, attrs)
    const.update(HEAD_DIM=head_dim, BLOCK=block, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, USE_TMA=tma,
                 INPUT_PRECISION="tf32", WARP_SPECIALIZE=cfg.warp_specialize, PERSISTENT=cfg.persistent > 0,
                 FP8=dtype == "fp8e4nv")
    return fn, sig, {k: v for k, v in const.items() if k in fn.arg_names}, attrs


def probe_triton(cfg: KernelConfig, head_dim: int, block: int, dtype: str = "bf16") -> dict:
    """Compile the Triton kernel in ``cfg`` for sm_90a: registers, spilled bytes, shared KB, programs per
    SM (min over registers, shared memory and warps), the PTX's wgmma waits and operand types ("bf16.bf16",
    "e4m3.e4m3"; ``dtype`` as in :func:`signature`)."""
    fn, sig, const, attrs = signature(cfg, head_dim, block, dtype)
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs)
    options = triton.compiler.make_backend(HOPPER).parse_options(
        {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    kernel = triton.compile(src, target=HOPPER, options=options.__dict__)
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        usage = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    finally:
        os.unlink(f.name)
    regs = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    shared = kernel.metadata.shared
    regs_per_warp = -(-regs * 32 // 256) * 256
    programs = min(REGS_PER_SM // (regs_per_warp * cfg.num_warps), SMEM_PER_SM // max(shared, 1),
                   WARPS_PER_SM // cfg.num_warps)
    waits = re.findall(r"wgmma.wait_group.sync.aligned (\d+)", kernel.asm["ptx"])
    types = {f"{a}.{b}" for a, b in re.findall(r"wgmma\.mma_async\.sync\.aligned\.m\d+n\d+k\d+\.f32\.(\w+)\.(\w+)",
                                                kernel.asm["ptx"])}
    return {"registers": regs, "spill_bytes": stack, "shared_kb": shared / 1024, "programs_per_sm": programs,
            "waits": " ".join(waits), "wgmma_types": types}


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes: spills) of a cubin, read by the bundled cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        usage = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    finally:
        os.unlink(f.name)
    return int(re.search(r"REG:(\d+)", usage).group(1)), int(re.search(r"STACK:(\d+)", usage).group(1))


def probe_quantize(head_dim: int, block: int, group: int = 1, listed: bool = True, dtype: str = "bf16") -> dict:
    """Compile the FP8 quantization kernels (``triton/quantize_kernel.py``) for sm_90a as
    ``quantize._quantize_triton`` launches them: per kernel its registers, spilled bytes, shared KB
    and the widths of its global stores and loads in the PTX ("v4.b32": 16 bytes a thread)."""
    from ..quantize import CHANNEL_ROWS, _warps
    from ..triton import quantize_kernel as qk

    out = {}
    for fn, rows in ((qk.quantize_rows, block), (qk.quantize_channels, CHANNEL_ROWS)):
        const = {"HEAD_DIM": head_dim, "GROUP": group, "LISTED": listed, "HEADS_PAD": 16,
                 ("BLOCK" if fn is qk.quantize_rows else "ROWS"): rows}
        sig, attrs = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in const:
                sig[name] = "constexpr"
            elif name in ("Q", "K", "V"):
                sig[name], attrs[(i,)] = f"*{dtype}", ALIGNED
            elif name in ("Q8", "K8", "V8"):
                sig[name], attrs[(i,)] = "*fp8e4nv", ALIGNED
            elif name == "Heads" and not listed:
                sig[name], const[name] = "constexpr", None
            elif name == "Heads":
                sig[name], attrs[(i,)] = "*i32", ALIGNED
            elif name in ("QScale", "KScale", "VScale", "Amax"):
                sig[name], attrs[(i,)] = "*fp32", ALIGNED
            elif name.startswith("stride_") and name.endswith("d"):
                sig[name], const[name] = "constexpr", 1
            elif name.startswith("stride_") or name == "N_PAD":  # N_PAD: a multiple of 16
                sig[name], attrs[(i,)] = "i32", ALIGNED
            else:
                sig[name] = "i32"
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs)
        options = triton.compiler.make_backend(HOPPER).parse_options({"num_warps": _warps(rows, head_dim)})
        kernel = triton.compile(src, target=HOPPER, options=options.__dict__)
        regs, stack = _resource_usage(kernel.asm["cubin"])
        ptx = kernel.asm["ptx"]
        out[fn.__name__] = {"registers": regs, "spill_bytes": stack, "shared_kb": kernel.metadata.shared / 1024,
                            "stores": sorted(set(re.findall(r"st\.global((?:\.v\d)?\.b\d+)", ptx))),
                            "loads": sorted(set(re.findall(r"ld\.global(?:\.\w+)*?((?:\.v\d)?\.b\d+)", ptx)))}
    return out


def ptx_to_sass(ptx: str, verbose: bool = False) -> tuple[bool, str, str]:
    """Assemble ``ptx`` for sm_90a with Triton's bundled ptxas and disassemble it with cuobjdump:
    (assembled, ptxas's log, SASS; "" when it did not assemble)."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.ptx").write_text(ptx)
        # Newer Tritons emit PTX only their second (Blackwell-era) ptxas reads.
        for tool in ("ptxas", "ptxas-blackwell"):
            res = subprocess.run([str(bin_dir / tool), "-arch=sm_90a", *(["-v"] if verbose else []),
                                  str(Path(tmp) / "k.ptx"), "-o", str(Path(tmp) / "k.cubin")],
                                 capture_output=True, text=True)
            if res.returncode == 0 or not (bin_dir / "ptxas-blackwell").exists():
                break
        sass = subprocess.run([str(bin_dir / "cuobjdump"), "-sass", str(Path(tmp) / "k.cubin")], capture_output=True,
                              text=True).stdout if res.returncode == 0 else ""
    return res.returncode == 0, res.stdout + res.stderr, sass


def sass_ops(sass: str) -> list[tuple[int, str]]:
    """(address, instruction) of every instruction in cuobjdump's SASS listing."""
    return [(int(m.group(1), 16), m.group(2).strip()) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]


def opcode(op: str) -> str:
    """An instruction's opcode, without its predicate guard."""
    return re.sub(r"^@!?U?P\w+\s+", "", op).split()[0]


def innermost_loops(ops: list[tuple[int, str]], has: tuple[str, ...] = ()) -> list[list[str]]:
    """The instructions of each innermost loop (a backward branch's target through the branch, with
    no such loop inside it) whose body contains every substring of ``has``, in code order."""
    at = {addr: i for i, (addr, _) in enumerate(ops)}
    loops = []
    for i, (addr, op) in enumerate(ops):
        back = re.match(r"@!?U?P\d BRA 0x([0-9a-f]+)", op)
        target = int(back.group(1), 16) if back else addr
        if target < addr and target in at:
            body = [o for _, o in ops[at[target]:i + 1]]
            if all(any(h in o for o in body) for h in has):
                loops.append((at[target], i))
    return [[o for _, o in ops[lo:hi + 1]] for lo, hi in loops
            if not any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in loops)]


#: What marks a consumer's steady-state turn loop: an innermost loop that issues wgmmas (HGMMA in
#: 16 bits, QGMMA in FP8) and runs a softmax.
TURN_LOOP = ("GMMA", "MUFU.EX2")


def turn_loops(sass: str) -> list[list[str]]:
    """The instructions of each consumer's steady-state turn loop, in code order."""
    return innermost_loops(sass_ops(sass), has=TURN_LOOP)


def pv_wait_after_softmax(sass: str) -> list[bool]:
    """For each consumer's turn loop, whether its full wgmma wait (``WARPGROUP.DEPBAR.LE gsb0,
    0x0``) comes after the loop's last ``MUFU.EX2``: the consumer's softmax then runs beside its own
    PV product. One entry per consumer loop, in code order."""
    found = []
    for body in turn_loops(sass):
        last_exp = max(k for k, o in enumerate(body) if "MUFU.EX2" in o)
        waits = [k for k, o in enumerate(body) if "WARPGROUP.DEPBAR.LE gsb0, 0x0" in o]
        found.append(bool(waits) and min(waits) > last_exp)
    return found


def turn_loop_moves(sass: str) -> list[int]:
    """Register-to-register moves (``MOV``, ``IMAD.MOV``) in each consumer's steady-state loop (the
    innermost loops that issue a PV product and run a softmax), in code order. A handful is loop
    bookkeeping; 32 or 64 means ptxas copies P into the PV product's operand registers on every
    turn, while the consumer holds the tensor cores."""
    return [sum(opcode(o) in ("MOV", "IMAD.MOV.U32", "IMAD.MOV") for o in body) for body in turn_loops(sass)]


def turn_loop_ops(sass: str, *opcodes: str) -> list[int]:
    """How many instructions of each consumer's turn loop have one of ``opcodes`` (all of them when
    none is named), in code order."""
    return [sum(not opcodes or opcode(o) in opcodes for o in body) for body in turn_loops(sass)]


def qk_operand_a(sass: str) -> set[str]:
    """Where the QK products' A operand (Q) comes from: "registers" or "shared" (a descriptor), over
    every wgmma of the SASS that does not transpose B (the PV products do)."""
    found = set()
    for op in re.findall(r"HGMMA\.64x\d+x16\.F32\.\w+ (R\d+, [^;]*);", sass):
        if "tnspB" not in op:
            found.add("shared" if op.split(",")[1].strip().startswith("gdesc") else "registers")
    return found


def probe_gluon_ws(head_dim: int, stages: int, consumer_regs: int, producer_regs: int = 24, q_bufs: int = 2,
                   flat: bool = True, probe: bool = False, dtype: str = "bf16", maxnreg: int | None = None,
                   **constexprs) -> dict:
    """Compile the Hopper kernel (``hopper/kernel.py``, block size 128, ``constexprs`` overriding the
    launcher's choices) for sm_90a and run ptxas on its PTX: register moves per partition, any wgmma
    serialisation warning (C7514), wgmma waits, clock reads, the lazy-rescale branches, where the
    PV wait sits, where Q comes from, turn-loop moves and register spills."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    from . import kernel as ws
    from .launch import MAXNREG, q_in_registers

    fn = ws.ws_block_sparse_fwd
    gl_dtypes = {"bf16": gl.bfloat16, "fp16": gl.float16, "fp8e4nv": gl.float8e4nv}
    out_dtype = "bf16" if dtype == "fp8e4nv" else dtype  # FP8 operands, output in the caller's dtype
    sig, const, attrs = {}, {}, {}
    for name in fn.arg_names:
        if name.endswith("_desc"):
            box = [1, 1, int(ws.HALF_M.value) if name in ("q_desc", "o_desc") else 128, head_dim]
            if name == "v_desc" and dtype == "fp8e4nv":
                box = [1, 1, head_dim, 128]  # V channel-major
            desc_dtype = out_dtype if name == "o_desc" else dtype
            layout = gl.NVMMASharedLayout.get_default_for(box, gl_dtypes[desc_dtype])
            sig[name] = f"tensordesc<{desc_dtype}[{', '.join(map(str, box))}],{layout!r}>"
    _other_args(fn, out_dtype, sig, const, attrs)
    constexprs = {"Q_REGS": q_in_registers(head_dim), **constexprs}  # as ``launch`` decides, unless overridden
    const.update(HEAD_DIM=head_dim, BLOCK=128, STAGES=stages, Q_BUFS=q_bufs, FLAT=flat, PROBE=probe,
                 CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs, **constexprs)
    src = GluonASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs)
    options = triton.compiler.make_backend(HOPPER).parse_options({"num_warps": 4, "maxnreg": maxnreg or MAXNREG})
    kernel = triton.compile(src, target=HOPPER, options=options.__dict__)
    ptx = kernel.asm["ptx"]
    ok, log, sass = ptx_to_sass(ptx, verbose=True)
    return {"setmaxnreg": re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx),
            "c7514": "C7514" in log, "ptxas": " ".join(re.findall(r"Used \d+ registers[^\n]*", log)),
            "warnings": [ln for ln in log.splitlines() if "warning" in ln][:3], "ptxas_ok": ok,
            "shared_kb": kernel.metadata.shared / 1024,
            "waits": " ".join(re.findall(r"wgmma.wait_group.sync.aligned (\d+)", ptx)),
            "clock_reads": len(re.findall(r"%clock\b", ptx)),
            "lazy_rescales": len(re.findall(r"^\s*RESCALE_SKIP:", ptx, re.M)),
            "pv_wait_after_softmax": pv_wait_after_softmax(sass),
            "qk_operand_a": qk_operand_a(sass),
            "turn_loop_moves": turn_loop_moves(sass),
            "turn_loop_ops": turn_loop_ops(sass),
            # P's e4m3 operand built without moving values between threads or repacking bytes
            "turn_loop_shuffles_and_permutes": turn_loop_ops(sass, "SHFL.IDX", "PRMT"),
            "turn_loop_spills": turn_loop_ops(sass, "STL", "LDL", "LDL.LU"),
            "wgmma_types": {f"{a}.{b}" for a, b in re.findall(
                r"wgmma\.mma_async\.sync\.aligned\.m\d+n\d+k\d+\.f32\.(\w+)\.(\w+)", ptx)},
            "local_stores": len(re.findall(r"\bSTL(\.\w+)*\s", sass))}  # register spills


__all__ = ["HOPPER", "TURN_LOOP", "innermost_loops", "opcode", "probe_gluon_ws", "probe_quantize", "probe_triton",
           "ptx_to_sass", "pv_wait_after_softmax", "qk_operand_a", "sass_ops", "signature", "turn_loop_moves",
           "turn_loop_ops", "turn_loops"]
