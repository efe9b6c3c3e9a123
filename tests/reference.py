"""Independent brute-force references: token-level masks straight from docs/design.md's definitions,
list scheduling simulated one time unit at a time, and attention inputs whose FP8 forms are exact.

Deliberately naive (Python/NumPy loops over token pairs): the point is to share no code with the
package's interval/segment arithmetic.
"""

from __future__ import annotations

import math

import numpy as np


def token_layout(geom):
    """Per token: is_text, video index v (−1 for text)."""
    n = geom.num_tokens
    is_text = np.zeros(n, dtype=bool)
    if geom.text_position == "prefix":
        is_text[: geom.text_tokens] = True
    else:
        is_text[geom.video_tokens:] = True
    v = np.full(n, -1, dtype=np.int64)
    v[~is_text] = np.arange(geom.video_tokens)
    return is_text, v


def token_mask(name, params, geom):
    """Token-level keep mask [N, N] by docs/design.md's definitions (vertical_stripe is block-defined)."""
    is_text, v = token_layout(geom)
    n, s, w_ = geom.num_tokens, geom.frame_size, geom.width
    vi, vj = v[:, None], v[None, :]
    if name == "dense":
        keep = np.ones((n, n), dtype=bool)
    elif name == "skip":
        return np.zeros((n, n), dtype=bool)
    elif name == "diagonal":
        w = math.ceil(params["rows"] * w_)
        keep = np.abs(vi - vj) <= w
    elif name == "multi_diagonal":
        w = math.ceil(params["rows"] * w_)
        k = geom.frames - 1 if params.get("frames") is None else params["frames"]
        keep = np.zeros((n, n), dtype=bool)
        for m in range(-k, k + 1):
            keep |= np.abs((vi - vj) - m * s) <= w
    elif name == "energy_decay":
        B = params["_block_size"]
        f, p = np.divmod(np.maximum(v, 0), s)
        d = np.abs(f[:, None] - f[None, :])
        dp = np.abs(p[:, None] - p[None, :])
        keep = d == 0
        for dist in range(1, geom.frames):
            r = int(math.floor(math.log2(dist)))
            c = params["decay"] * s / 2**r
            if c >= B:
                band = dp < c
            else:
                band = (dp < B) & (dist % math.ceil(B / c) == 0)
            keep |= (d == dist) & band
        if params.get("sink"):
            keep |= (f == 0)[None, :]
    else:
        raise ValueError(name)
    video = (~is_text)[:, None] & (~is_text)[None, :]
    keep &= video
    keep |= is_text[:, None] | is_text[None, :]
    return keep


def round_to_blocks(keep, block_size):
    """Block (bq, bk) kept iff any token pair in it is kept."""
    n = keep.shape[0]
    nb = math.ceil(n / block_size)
    out = np.zeros((nb, nb), dtype=bool)
    for a in range(nb):
        for b in range(nb):
            out[a, b] = keep[a * block_size:(a + 1) * block_size, b * block_size:(b + 1) * block_size].any()
    return out


def vertical_stripe_blocks(params, geom, block_size):
    """vertical_stripe straight from its block-level definition."""
    n = geom.num_tokens
    nb = math.ceil(n / block_size)
    out = np.zeros((nb, nb), dtype=bool)
    out[:, params["key_blocks"]] = True
    np.fill_diagonal(out, True)
    if params.get("rows", 0) > 0:
        out |= round_to_blocks(token_mask("diagonal", {"rows": params["rows"]}, geom), block_size)
    return out | round_to_blocks(_text_any(geom), block_size)


def _text_any(geom):
    is_text, _ = token_layout(geom)
    return is_text[:, None] | is_text[None, :]


def list_schedule_by_steps(durations, slots):
    """List scheduling simulated one time unit at a time (integer durations): at every instant each
    free worker, lowest first, takes the next item in order. (makespan, items each worker ran)."""
    remaining, owned, queue, t = [0] * slots, [[] for _ in range(slots)], list(enumerate(durations)), 0
    while queue or any(remaining):
        for s in range(slots):
            while remaining[s] == 0 and queue:  # a zero-length item frees the worker at once
                item, length = queue.pop(0)
                owned[s].append(item)
                remaining[s] = int(length)
        if not any(remaining):
            break
        remaining = [max(0, r - 1) for r in remaining]
        t += 1
    return t, owned


def _cells_overlap(a, n_a, b, n_b):
    """Cell a of n_a equal cells of [0, 1) and cell b of n_b overlap (arrays broadcast)."""
    return (a * n_b < (b + 1) * n_a) & (b * n_a < (a + 1) * n_b)


def _frames_overlap(f, n_f, g, n_g):
    """docs/design.md's frame rule for stripes at another geometry: frame 0 is frame 0, frames 1..
    map proportionally onto 1..; a one-frame target takes every frame onto its frame 0."""
    if n_g == 1:
        return np.ones(np.broadcast_shapes(np.shape(f), np.shape(g)), dtype=bool)
    zero = (f == 0) & (g == 0)
    rest = (f >= 1) & (g >= 1) & _cells_overlap(np.maximum(f - 1, 0), max(n_f - 1, 1), np.maximum(g - 1, 0), n_g - 1)
    return zero | rest


def stripe_blocks_at(key_blocks, source, target, block_size):
    """Key blocks at ``target`` of a stripe whose key blocks at ``source`` are ``key_blocks``, by brute
    force over token pairs: a target video token is covered iff its (frame, row, column) cell
    overlaps that of a source video token the key blocks hold."""
    is_text, v = token_layout(source)
    tok = np.arange(source.num_tokens)
    held = np.isin(tok // block_size, list(key_blocks)) & ~is_text
    f, rest = np.divmod(v[held], source.frame_size)
    y, x = np.divmod(rest, source.width)
    t_text, tv = token_layout(target)
    g, trest = np.divmod(tv[~t_text], target.frame_size)
    yy, xx = np.divmod(trest, target.width)
    cover = (_frames_overlap(f[:, None], source.frames, g[None, :], target.frames)
             & _cells_overlap(y[:, None], source.height, yy[None, :], target.height)
             & _cells_overlap(x[:, None], source.width, xx[None, :], target.width)).any(0)
    covered_tokens = np.flatnonzero(~t_text)[cover]
    return sorted({int(t) // block_size for t in covered_tokens})


def exact_fp8_inputs(n: int, heads: int, kv_heads: int, seed: int, device: str = "cpu", batch: int = 1,
                     head_dim: int = 64):
    """fp16 q, k whose e4m3 forms are exact and whose scaled products are integers (entries 0, ±1 or
    ±2, the magnitude per 64 rows, so blocks get different scales), so under scale ln 2 every softmax
    weight is a power of two that e4m3 holds down to 2^-15 of the row's largest; v random. An FP8
    kernel must then equal attention on the dequantized operands up to fp32 accumulation."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)

    def ternary(h):
        shape = (batch, h, n, head_dim)
        t = torch.randint(-1, 2, shape, generator=g, device=device) * (torch.rand(shape, generator=g, device=device) < 0.3)
        per_64_rows = torch.randint(1, 3, (batch, h, -(-n // 64), 1), generator=g, device=device)
        return (t * per_64_rows.repeat_interleave(64, 2)[:, :, :n]).half()

    return ternary(heads), ternary(kv_heads), torch.randn(batch, kv_heads, n, head_dim, generator=g, device=device).half()
