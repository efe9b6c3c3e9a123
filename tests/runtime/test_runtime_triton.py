"""The Triton kernel under TRITON_INTERPRET=1 on CPU (fp32 / fp16, tiny sizes).

Triton decides interpreter or compiler when a function is decorated — its own standard library
(``tl.zeros`` …) included, i.e. when ``triton.language`` is first imported, which other test
modules (transformers, torch.compile) may do first. So the checks run in a Python started with
TRITON_INTERPRET=1 set: one per test module (the ``interpreter`` fixture), which takes checks as
JSON lines on stdin and answers each with one line. One check by hand:
``TRITON_INTERPRET=1 python tests/runtime/test_runtime_triton.py CHECK ARGS_JSON``.
Same reference as test_runtime.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from attnsearch.plan import LayerPlan
from attnsearch.runtime import sparse_attention
from attnsearch.runtime.block_tables import build_block_tables, get_block_tables
from attnsearch.runtime.device_caps import num_sms
from reference import exact_fp8_inputs
from test_runtime import all_patterns, geometry, poisoned, qkv, reference, rel_err

ROOT = Path(__file__).resolve().parents[2]


TIMEOUT_S = 600  # per check


class Interpreter:
    """A Python started with TRITON_INTERPRET=1 running the checks of ``script`` (a test module that
    ends in ``serve(globals())``; default this one) one at a time; a check that fails answers with
    its traceback, one that kills the Python fails with its log (the next check starts a new one)."""

    def __init__(self, script: str = __file__) -> None:
        self.script = script
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"),
                                                           os.environ.get("PYTHONPATH")]))}
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, self.script], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run(self, check: str, *args) -> None:
        """Run ``check(launch module, *args)`` of this module under the interpreter."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps([check, args]) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT_S)
        reply = self.proc.stdout.readline() if ready else ""
        if not reply:  # died or hung: its log says why
            self.close()
            self.log.seek(0)
            pytest.fail(f"{check}{args}: the interpreter Python ended without an answer:\n"
                        f"{self.log.read()[-4000:]}")
        reply = json.loads(reply)
        assert reply["ok"], f"{check}{args} failed under the interpreter:\n{reply['error'][-4000:]}"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def interpreter():
    """``interpreter(check, *args)``: runs a check of this module in the interpreter-mode Python."""
    python = Interpreter()
    yield python.run
    python.close()


@pytest.mark.slow
@pytest.mark.parametrize("where,block_size,dtype,tol", [
    ("prefix", 64, torch.float32, 1e-3),
    ("suffix", 64, torch.float16, 5e-3),
    ("suffix", 128, torch.float32, 1e-3),
])
def test_kernel_matches_reference(interpreter, where, block_size, dtype, tol):
    """Every pattern, batch 2, N % B ≠ 0, transposed [B, N, H, D] views, poisoned output."""
    dtype_name = str(dtype).removeprefix("torch.")
    interpreter("check_kernel_matches_reference", where, block_size, dtype_name, tol)


def check_kernel_matches_reference(tk, where, block_size, dtype, tol):
    dtype = getattr(torch, dtype)
    geom = geometry(where, block_size)
    lp = all_patterns(geom, block_size)
    q, k, v = qkv(2, 6, geom.num_tokens, 64, dtype=dtype, seed=block_size + 1)
    assert q.stride(2) != 64 and not q.is_contiguous()  # really a strided view
    out = sparse_attention(q, k, v, lp, backend="triton", out=poisoned(q))
    assert out.dtype == dtype
    assert rel_err(out, reference(q, k, v, lp)) <= tol
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))  # skip head zero, never computed


@pytest.mark.slow
@pytest.mark.parametrize("where,block_size,dtype,tol,block_m,persistent", [
    ("prefix", 64, torch.float32, 1e-3, 64, 1),
    ("suffix", 64, torch.float16, 5e-3, 64, 3),
    ("suffix", 128, torch.float32, 1e-3, 64, 2),
])
def test_persistent_grid_matches_reference(interpreter, where, block_size, dtype, tol, block_m, persistent):
    """Persistent grid (k × #SMs programs taking tiles from a counter; the interpreter counts 4 SMs): every
    pattern incl. skip heads, batch 2, N % B ≠ 0, strided views, sub-tiles, poisoned output."""
    dtype_name = str(dtype).removeprefix("torch.")
    interpreter("check_persistent_grid_matches_reference", where, block_size, dtype_name, tol, block_m,
                persistent)


def check_persistent_grid_matches_reference(tk, where, block_size, dtype, tol, block_m, persistent):
    dtype = getattr(torch, dtype)
    geom = geometry(where, block_size)
    lp = all_patterns(geom, block_size)
    q, k, v = qkv(2, 6, geom.num_tokens, 64, dtype=dtype, seed=block_size + 3)
    assert geom.num_tokens % block_size and not q.is_contiguous()
    tables = get_block_tables(lp, "cpu")
    cfg = tk.KernelConfig(block_m, 64, num_warps=4, num_stages=1, use_tma=False, persistent=persistent)
    tiles = tables.launches[0].num_items * (block_size // block_m) * 2
    assert tiles > cfg.persistent * num_sms(q.device)  # every program runs several tiles
    out = tk.forward(q, k, v, tables, 64 ** -0.5, out=poisoned(q), config=cfg)
    assert out.dtype == dtype and not torch.isnan(out).any()
    assert rel_err(out, reference(q, k, v, lp)) <= tol
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))  # skip head zero, never computed
    plain = tk.forward(q, k, v, tables, 64 ** -0.5, config=dataclasses.replace(cfg, persistent=0))
    assert torch.equal(out, plain)  # same tiles, same arithmetic: bit-identical to the plain grid


@pytest.mark.parametrize("block_size,block_m,block_n", [(64, 32, 32), (128, 64, 32), (128, 32, 64), (128, 64, 128)])
def test_sub_tiles_of_a_block(interpreter, block_size, block_m, block_n):
    """BLOCK_M/BLOCK_N smaller than the plan block: sub-tile decode and the masked tail stage."""
    interpreter("check_sub_tiles_of_a_block", block_size, block_m, block_n)


def check_sub_tiles_of_a_block(tk, block_size, block_m, block_n):
    geom = geometry("suffix", block_size)
    lp = LayerPlan.from_heads([("energy_decay", {"decay": 0.25}), ("vertical_stripe", {"key_blocks": [0]})],
                              geom, block_size)
    assert (lp.head_densities() < 1).all()
    q, k, v = qkv(1, 2, geom.num_tokens, 64, layout="bhnd", seed=7)
    tables = get_block_tables(lp, "cpu")
    cfg = tk.KernelConfig(block_m, block_n, num_warps=4, num_stages=1, use_tma=False)
    out = tk.forward(q, k, v, tables, 64 ** -0.5, out=poisoned(q), config=cfg)
    assert rel_err(out, reference(q, k, v, lp)) <= 1e-3


def test_gqa_scale_and_non_contiguous_head_dim(interpreter):
    interpreter("check_gqa_scale_and_non_contiguous_head_dim")


def check_gqa_scale_and_non_contiguous_head_dim(tk):
    geom = geometry("prefix", 64)
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 64, kv_heads=2, layout="bhdn", seed=11)
    assert q.stride(3) != 1
    out = sparse_attention(q, k, v, lp, backend="triton", scale=0.2, enable_gqa=True)
    assert rel_err(out, reference(q, k, v, lp, scale=0.2, enable_gqa=True)) <= 1e-3


@pytest.mark.slow
def test_group_launches_equal_one_fused_launch(interpreter):
    interpreter("check_group_launches_equal_one_fused_launch")


def check_group_launches_equal_one_fused_launch(tk):
    geom = geometry("prefix", 64)
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 64, seed=13)
    fused = tk.forward(q, k, v, build_block_tables(lp, "cpu", "layer"), 0.125)
    grouped = tk.forward(q, k, v, build_block_tables(lp, "cpu", "group"), 0.125, out=poisoned(q))
    assert torch.allclose(fused, grouped, rtol=0, atol=1e-6)


def test_row_with_no_kept_block_outputs_zero(interpreter):
    """Only skip heads have empty rows by plan; the kernel must still write zeros, not NaN."""
    interpreter("check_row_with_no_kept_block_outputs_zero")


def check_row_with_no_kept_block_outputs_zero(tk):
    geom = geometry("prefix", 64)
    lp = LayerPlan.single("diagonal", {"rows": 1}, geom, 2, 64)
    tables = build_block_tables(lp, "cpu")
    counts = tables.counts.clone()
    counts[1, 2] = 0  # head 1, query block 2: nothing kept
    emptied = dataclasses.replace(tables, counts=counts)
    q, k, v = qkv(1, 2, geom.num_tokens, 64, seed=17)
    out = tk.forward(q, k, v, emptied, 0.125, out=poisoned(q))
    assert torch.equal(out[0, 1, 128:192], torch.zeros(64, 64))
    ref = reference(q, k, v, lp)
    assert rel_err(out[0, 0], ref[0, 0]) <= 1e-3 and rel_err(out[0, 1, :128], ref[0, 1, :128]) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("block_size,block_m,kv_heads", [(64, 64, 6), (128, 64, 2)])
def test_fp8_kernel_is_attention_on_its_quantized_operands(interpreter, block_size, block_m, kv_heads):
    """precision="fp8" on inputs whose e4m3 rounding is exact except V's (``exact_fp8_inputs``): equal
    to masked SDPA in fp64 on the dequantized operands (q, K block scales and V channel scales all
    applied), skip heads zero; GQA, N % B ≠ 0, sub-tiles."""
    interpreter("check_fp8_exact", block_size, block_m, kv_heads)


def check_fp8_exact(tk, block_size, block_m, kv_heads):
    import math

    from attnsearch.runtime.quantize import dequantize, quantize_fp8

    geom = geometry("suffix", block_size)
    lp = all_patterns(geom, block_size).with_precision("fp8")
    q, k, v = exact_fp8_inputs(geom.num_tokens, 6, kv_heads, seed=block_size)
    gqa = kv_heads != 6
    tables = get_block_tables(lp, "cpu")
    cfg = tk.KernelConfig(block_m, 64, num_warps=4, num_stages=1, use_tma=False)
    out = tk.forward(q, k, v, tables, math.log(2), out=poisoned(q), config=cfg, precision="fp8")
    assert out.dtype == torch.float16
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
    q8, k8, v8, s = quantize_fp8(q, k, v, block_size)
    assert torch.equal(dequantize(q8, s.q, block_size), q.float()) and len(s.k.unique()) == 2  # exact, two K scales
    deq_v = dequantize(v8, s.v, None)
    assert rel_err(out, reference(q, k, deq_v, lp, scale=math.log(2), enable_gqa=gqa)) <= 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [64])
def test_fp8_error_on_random_inputs_is_bounded(interpreter, block_size):
    """Gaussian q, k, v (near-uniform attention, FP8's hard case): within 8% of exact attention, and
    about ten times the fp16 kernel's error or more (the rounding really happens in FP8). The
    interpreter's e4m3 cast of P drops some round-ups a binade (``quantize.quantize_fp8``); the
    GPU's error on such inputs is 5.3-5.5% (``benchmarks/fp8_layers``)."""
    interpreter("check_fp8_random", block_size)


def check_fp8_random(tk, block_size):
    geom = geometry("suffix", block_size)
    lp = all_patterns(geom, block_size)
    q, k, v = qkv(2, 6, geom.num_tokens, 64, dtype=torch.float16, seed=block_size + 5)
    cfg = tk.KernelConfig(64, 64, num_warps=4, num_stages=1, use_tma=False)
    fp8 = tk.forward(q, k, v, get_block_tables(lp.with_precision("fp8"), "cpu"), 0.125, config=cfg, precision="fp8")
    native = tk.forward(q, k, v, get_block_tables(lp, "cpu"), 0.125, config=cfg)
    exact = reference(q, k, v, lp, scale=0.125)
    assert rel_err(fp8, exact) <= 0.08
    assert rel_err(native, exact) * 10 < rel_err(fp8, exact)
    # the public call: "auto" passes over the native-only backends to the FP8 kernel
    public = sparse_attention(q, k, v, lp.with_precision("fp8"), scale=0.125)
    assert rel_err(public, exact) <= 0.08


def list_builtins_once() -> None:
    """Make Triton's interpreter list each language namespace's builtins once, not on every call.

    On every call of a ``@triton.jit`` helper from inside a kernel, the interpreter patches
    ``triton.language`` again: ``_patch_builtin`` walks every member of each namespace with
    ``inspect.getmembers`` to find the builtins, a third of these checks' time. Which names are
    builtins never changes, so here they are found once per namespace; each call still patches
    exactly what the interpreter's own would (a member already patched is no longer a builtin
    and is skipped, as before). Left alone where the interpreter's internals differ.
    """
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_builtin", None)
    if (original is None or not hasattr(interpreter, "_patch_attr")
            or list(inspect.signature(original).parameters) != ["pkg", "builder", "scope"]):
        return
    names: dict[int, list[str]] = {}

    def patch_builtin(pkg, builder, scope):
        if id(pkg) not in names:
            names[id(pkg)] = [name for name, member in inspect.getmembers(pkg) if tl.core.is_builtin(member)]
        for name in names[id(pkg)]:
            member = getattr(pkg, name)
            if tl.core.is_builtin(member):
                interpreter._patch_attr(pkg, name, member, builder, scope)

    interpreter._patch_builtin = patch_builtin


def serve(checks: dict) -> None:
    """The interpreter Python's side of :class:`Interpreter`: runs ``checks[name](launch module,
    *args)`` for the check named on the command line, or for each JSON line on stdin."""
    import traceback

    from attnsearch.runtime.triton import launch as triton_kernel

    list_builtins_once()

    assert triton_kernel.interpreter_active(), "run with TRITON_INTERPRET=1 set before Python starts"
    if len(sys.argv) > 1:  # one check, named on the command line
        checks[sys.argv[1]](triton_kernel, *json.loads(sys.argv[2]))
        print(f"{sys.argv[1]} ok")
        sys.exit()
    replies, sys.stdout = sys.stdout, sys.stderr  # stdout carries the answers only
    for line in sys.stdin:  # [check, args] per line; {"ok": bool, "error": traceback} per answer
        check, args = json.loads(line)
        try:
            checks[check](triton_kernel, *args)
            answer = {"ok": True}
        except BaseException:
            answer = {"ok": False, "error": traceback.format_exc()}
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


if __name__ == "__main__":  # in a Python started with TRITON_INTERPRET=1
    serve(globals())
