"""Reference-quality block-sparse attention in plain PyTorch (the CPU default; any head_dim, dtype).

Per head group and chunk of query blocks: gather the kept key blocks of every (head, query block)
from the block tables, softmax over them in float32, and scatter the rows back. Work and memory
are proportional to the kept blocks (chunked to ``chunk_bytes``); no N×N tensor ever exists.
"""

from __future__ import annotations

import torch

from .block_tables import BlockTables
from .quantize import fp8_attention_rows, fp8_operands

#: Upper bound on the float32 working set of one chunk (gathered K/V and scores).
DEFAULT_CHUNK_BYTES = 256 << 20


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
            precision: str = "native") -> torch.Tensor:
    """Same contract as the Triton backend's ``forward``.

    Args:
        q: [batch, H, N, D]; k, v: [batch, H_kv, N, D] with H % H_kv == 0 (any strides).
        tables: block tables of the layer plan, on q's device.
        scale: softmax scale.
        out: optional [batch, H, N, D] output of q's dtype; allocated contiguous when None.
        precision: the launches run ("native", or "fp8": the operands quantized and dequantized by
            the definition, ``quantize.fp8_operands``, and the FP8 kernel's rounding of P,
            ``quantize.fp8_attention_rows``).
    Returns:
        out, with skip heads zero (by the run of the tables' first precision).
    """
    batch, num_heads, n, d = q.shape
    bs, nb = tables.block_size, tables.num_blocks
    if out is None:
        out = torch.empty(batch, num_heads, n, d, dtype=q.dtype, device=q.device)
    tables.prepare_output(out, precision)
    launches = tables.launches_of(precision)
    fp8 = precision == "fp8"
    if fp8 and launches:
        q, k, v = fp8_operands(q, k, v, bs)
    group = num_heads // k.shape[1]
    offs = torch.arange(bs, device=q.device)
    for launch in launches:
        heads = torch.tensor(launch.heads, device=q.device)
        counts = tables.counts[heads].long()                      # [h, nb]
        mc = max(int(counts.max()), 1)
        idx = tables.indices[heads, :, :mc].long()                # [h, nb, mc]
        h = len(launch.heads)
        # fp32 bytes per query block: gathered K and V, scores and probabilities.
        per_block = batch * h * mc * bs * (2 * d + 2 * bs) * 4
        chunk = max(1, min(nb, chunk_bytes // max(per_block, 1)))
        for qb0 in range(0, nb, chunk):
            qb1 = min(nb, qb0 + chunk)
            c = qb1 - qb0
            # Query rows of the chunk: [batch, h, c·B, D]; rows ≥ N are clamped and dropped below.
            q_tok = (torch.arange(qb0 * bs, qb1 * bs, device=q.device)).clamp(max=n - 1)
            qc = q[:, heads[:, None], q_tok[None, :]].float()
            # Key tokens of each kept block: [h, c, mc·B]; positions ≥ N and padding slots masked.
            blk = idx[:, qb0:qb1]                                 # [h, c, mc]
            pos = (blk[..., None] * bs + offs).flatten(-2)        # [h, c, mc·B]
            valid = (torch.arange(mc, device=q.device) < counts[:, qb0:qb1, None])
            valid = valid[..., None].expand(-1, -1, -1, bs).flatten(-2) & (pos < n)
            pos = pos.clamp(max=n - 1)
            kvh = (heads // group)[:, None, None]
            kg = k[:, kvh, pos].float()                            # [batch, h, c, mc·B, D]
            vg = v[:, kvh, pos].float()
            s = torch.einsum("bhcqd,bhckd->bhcqk", qc.view(batch, h, c, bs, d), kg) * scale
            s = s.masked_fill(~valid[None, :, :, None, :], float("-inf"))
            if fp8:
                o = fp8_attention_rows(s, vg)
            else:
                p = torch.softmax(s, dim=-1)
                # A row with no kept key (all −inf) is NaN after softmax and outputs zero (docs/design.md);
                # only those rows are zeroed, so non-finite inputs stay non-finite, as SDPA's do.
                p = p.masked_fill(~valid.any(-1)[None, :, :, None, None], 0.0)
                o = torch.einsum("bhcqk,bhckd->bhcqd", p, vg)
            o = o.reshape(batch, h, c * bs, d)
            rows = min(qb1 * bs, n) - qb0 * bs
            out[:, heads, qb0 * bs: qb0 * bs + rows] = o[:, :, :rows].to(out.dtype)
    return out
