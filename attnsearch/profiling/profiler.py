"""The profiler: per-head attention statistics of every candidate, from exact softmax rows.

For each attention call and head, a seeded stratified sample of query rows gets its exact softmax
over all N keys (fp32; peak memory O(heads_per_chunk · sampled · N), never N×N). From those rows,
for every candidate of the grid:

- ``density``: kept blocks / all blocks of the candidate's block mask,
- ``recall``: mean over sampled queries of the softmax mass inside the kept blocks,
- ``rel_err``: ‖O_cand − O_full‖_F / ‖O_full‖_F, O_cand renormalising softmax over kept blocks;
- ``rel_err_fp8`` (with ``fp8`` in the settings' precisions): the same error of O_cand,fp8, what
  the FP8 kernel computes over the kept blocks (:func:`fp8_partials`).

The work per head is three batched products over the sample: logits (Q·N·D), per-block partial
outputs U[q, b] = Σ_{j∈b} p_qj v_j (Q·N·D) and the candidate outputs (C·Q·nb·D), so the pass costs
a few percent of the dense attention it profiles; ``fp8`` repeats the three on the quantized
operands.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from functools import lru_cache
from typing import Callable, Sequence

import pandas as pd
import torch

from ..geometry import Geometry, GeometryError
from ..runtime.quantize import fp8_operands, round_probabilities
from .candidates import CandidateGrid, StripeCandidates, candidate_label, static_candidates, stripe_candidates
from .profile_io import Profile, ProfileError, ProfileSettings, table_columns
from .reuse import ReuseTracker

#: Cap on the fp32 working set of one head chunk (logits + per-block partial outputs).
DEFAULT_CHUNK_BYTES = 1 << 30


def default_block_size(num_tokens: int) -> int:
    """The block size a profile uses unless told: 64 for N ≤ 8192, else 128. Short sequences need
    the finer tiling to show any structure; long ones run faster at 128."""
    return 64 if num_tokens <= 8192 else 128


# --- sampling ------------------------------------------------------------------------------------


def sample_queries(num_tokens: int, count: int, seed: int, step: int, layer: int) -> torch.Tensor:
    """Stratified sample: one uniformly drawn row from each of ``count`` equal strata of [0, N).

    Seeded by (seed, step, layer) so a call's sample does not depend on which other calls were
    profiled before it (sharded and single-process runs agree)."""
    if count >= num_tokens:
        return torch.arange(num_tokens)
    digest = hashlib.blake2b(f"{seed}:{step}:{layer}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
    edges = torch.linspace(0, num_tokens, count + 1, dtype=torch.float64)
    lo, hi = edges[:-1].floor().long(), edges[1:].floor().long()
    return lo + (torch.rand(count, generator=gen, dtype=torch.float64) * (hi - lo)).long()


# --- measurement (pure tensor functions) -------------------------------------------------------


def _candidate_stats(keep: torch.Tensor, p_blk: torch.Tensor, u: torch.Tensor, o_full: torch.Tensor,
                     diffs: list | None = None):
    """recall and rel_err of candidates for one head chunk.

    keep: [h or 1, C, Q, nb] float (1 = block kept for that query's row); p_blk: [h, Q, nb] softmax
    mass per key block; u: [h, Q, nb, D] per-block partial outputs; o_full: [h, Q, D].
    Returns recall [h, C], rel_err [h, C]. The candidate's output per row is Σ_kept u / Σ_kept p_blk,
    so p_blk may be any positive multiple per row of the softmax mass (unnormalised weights, as
    :func:`fp8_partials` gives): rel_err is the same, recall is then not a share. ``diffs``: a list
    the candidates' outputs minus ``o_full`` [h, C, Q, D] are appended to.
    """
    mass = torch.einsum("hcqn,hqn->hcq", keep.expand(p_blk.shape[0], -1, -1, -1), p_blk)
    num = torch.einsum("hcqn,hqnd->hcqd", keep.expand(p_blk.shape[0], -1, -1, -1), u)
    # A row with no kept mass (only `skip`) outputs zero, as the runtime does.
    o_cand = num.div_(mass.clamp_min(1e-30)[..., None]).masked_fill_(~(mass[..., None] > 0), 0.0)
    o_cand.sub_(o_full[:, None])
    if diffs is not None:
        diffs.append(o_cand)
    err = o_cand.flatten(2).norm(dim=2)
    ref = o_full.flatten(1).norm(dim=1).clamp_min(1e-30)
    return mass.mean(-1), err / ref[:, None]


def _measure(keep: torch.Tensor, partials: list[tuple[torch.Tensor, torch.Tensor]],
             o_full: torch.Tensor, diffs: list | None = None) -> list[torch.Tensor]:
    """recall and rel_err [h, C] of the candidates ``keep`` from the first (native) partials
    (p_blk, u), then the rel_err of each further precision's partials (``diffs``: see
    :func:`_candidate_stats`, native only)."""
    (p_blk, u), *others = partials
    return [*_candidate_stats(keep, p_blk, u, o_full, diffs),
            *(_candidate_stats(keep, pb, ub, o_full)[1] for pb, ub in others)]


def _block_map(p_blk: torch.Tensor, qblock: torch.Tensor, nb: int, size: int) -> torch.Tensor:
    """Downsample [h, Q, nb] block mass to [h, m, m]: mean over the sampled queries of a row group of
    the mass summed over a column group; m = min(size, nb)."""
    m = min(size, nb)
    col_group = torch.arange(nb, device=p_blk.device) * m // nb
    row_group = qblock.to(p_blk.device) * m // nb
    cols = torch.zeros(*p_blk.shape[:2], m, device=p_blk.device, dtype=p_blk.dtype).index_add_(2, col_group, p_blk)
    rows = torch.zeros(p_blk.shape[0], m, m, device=p_blk.device, dtype=p_blk.dtype).index_add_(1, row_group, cols)
    counts = torch.zeros(m, device=p_blk.device, dtype=p_blk.dtype).index_add_(
        0, row_group, torch.ones_like(row_group, dtype=p_blk.dtype))
    return rows / counts.clamp_min(1)[None, :, None]


@lru_cache(maxsize=8)
def _device_masks(geometry: Geometry, block_size: int, grid: CandidateGrid, device: str) -> torch.Tensor:
    """The static candidates' masks on the profiling device, copied once per geometry."""
    return static_candidates(geometry, block_size, grid).masks.to(device)


def fp8_partials(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, scale: float,
                 block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-key-block sums of what the FP8 kernel computes for the sampled query ``rows``.

    q, k, v: [h, N, D], every row (q's scales cover its query blocks, so q is quantized before
    the rows are sampled). The operands are those of :func:`~attnsearch.runtime.quantize.fp8_operands`
    (per head, as the scales are); s = scale · q_deq · k_deqᵀ, p = exp(s − m) with m the row's
    maximum over all N keys. Returns p_blk [h, Q, nb], the block sums of the unrounded p (the
    kernel's row sum), and u [h, Q, nb, D] = Σ_{j∈b} round(p_j) · v_deq,j
    (:func:`~attnsearch.runtime.quantize.round_probabilities`): a candidate's FP8 output per row is
    Σ_kept u / Σ_kept p_blk (:func:`_candidate_stats`).

    No one-pass definition reproduces the kernel's roundings value by value: it rounds p against its
    running maximum and rescales the sums by factors that are not powers of two. Rounding against
    m gives errors of the same size. Against the torch backend's emulation
    (:func:`~attnsearch.runtime.quantize.fp8_attention_rows`, m over the kept keys) this agrees to
    ~1e-4 relative for rows whose maximum is kept; for the others the small weights round on a
    coarser grid (p · 448 subnormal in e4m3 below p < 2^-6 / 448, zero below 2^-10 / 448)."""
    h, n, d = k.shape
    nb = math.ceil(n / block_size)
    qd, kd, vd = fp8_operands(q[None], k[None], v[None], block_size)
    s = torch.einsum("hqd,hnd->hqn", qd[0][:, rows], kd[0]).mul_(scale)
    del qd, kd
    p = s.sub_(s.amax(-1, keepdim=True)).exp_()
    p = torch.nn.functional.pad(p, (0, nb * block_size - n)).view(h, len(rows), nb, block_size)
    vd = torch.nn.functional.pad(vd[0], (0, 0, 0, nb * block_size - n)).view(h, nb, block_size, d)
    return p.sum(-1), torch.einsum("hqnb,hnbd->hqnd", round_probabilities(p), vd)


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite. A finite sum holds no NaN or ±inf (either would
    make it NaN or infinite), so one reduction decides; only a sum that is not finite (a NaN or inf
    inside, or finite values overflowing it) is checked element by element."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _head_chunk(num_heads: int, queries: int, padded: int, head_dim: int, budget: int,
                fp8: bool = False) -> int:
    per_head = 4 * queries * padded * (2 + head_dim / 128 * 2)  # logits/probs + U (fp32), rough
    if fp8:  # the rounded weights, a second U, and the quantized and dequantized operands of all N rows
        per_head += 4 * queries * padded * (1 + head_dim / 64) + 4 * 6 * padded * head_dim
    return max(1, min(num_heads, int(budget // max(per_head, 1))))


@torch.no_grad()
def profile_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry: Geometry, *,
                    layer: int = 0, step: int = 0, block_size: int = 128, queries: int = 256, seed: int = 0,
                    grid: CandidateGrid | None = None, map_size: int = 64, scale: float | None = None,
                    settings: ProfileSettings | None = None, precisions: Sequence[str] = ("native",),
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES, prompts: int = 0,
                    reuse: ReuseTracker | None = None) -> Profile:
    """Profile one attention call.

    q, k, v: [batch, heads, N, D] (k/v may have fewer heads that divide ``heads``: GQA), any dtype
    and device; statistics are computed in fp32 on that device and averaged over the batch.
    Returns a Profile with one row per (head, candidate). With ``prompts`` = P ≥ 1 the batch is P
    equal consecutive shares, one per prompt: the table also holds each prompt's recall and
    rel_err (columns :func:`~attnsearch.profiling.profile_io.prompt_columns`), the share's mean.
    With ``fp8`` in the precisions (``settings.precisions``, else ``precisions``) the table also
    holds ``rel_err_fp8`` (and per prompt ``prompt{i}.rel_err_fp8``): the error of the candidate
    with its kept blocks in FP8, the operands quantized per batch element and head over the whole
    call (:func:`fp8_partials`). With ``settings.residual_steps`` the table also holds
    ``rel_err_reuse`` (:mod:`attnsearch.profiling.reuse`), measured against what ``reuse`` (the
    trajectory's tracker, given the calls in step order) kept at the span's exact step.
    """
    settings = settings or ProfileSettings(queries, seed, block_size, map_size, grid or CandidateGrid(),
                                           tuple(precisions))
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ProfileError(f"q, k, v must be [batch, heads, N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    bsz, heads, n, d = q.shape
    if k.shape[0] != bsz or k.shape[2] != n or v.shape[:3] != k.shape[:3] or k.shape[3] != d:
        raise ProfileError(f"k/v shapes {tuple(k.shape)}, {tuple(v.shape)} do not match q {tuple(q.shape)} "
                           "(self-attention with equal query and key lengths is required)")
    if heads % k.shape[1]:
        raise ProfileError(f"query heads ({heads}) must be a multiple of key heads ({k.shape[1]})")
    geometry.check_tokens(n)
    where = f"step {step} layer {layer}"
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not _all_finite(t):
            raise ProfileError(f"{where}: the attention {name} holds non-finite values (NaN or ±inf); "
                               "a profile of them would be meaningless")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ProfileError(f"{where}: the attention scale {scale!r} is not a finite number")
    if prompts and bsz % prompts:
        raise ProfileError(f"{where}: a batch of {bsz} cannot be split into {prompts} equal prompt shares")
    shares = max(prompts, 1)
    bs = settings.block_size
    nb = math.ceil(n / bs)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    started = time.perf_counter()
    device = q.device

    if settings.residual_steps and reuse is None:
        raise ProfileError(f"{where}: residual reuse is measured along a trajectory: profile the model's steps "
                           "(profile_model), whose calls share one ReuseTracker")
    anchor = reuse.anchor(step) if reuse is not None else None
    ordinal = reuse.begin(step, layer) if reuse is not None else 0
    # Every step of a reuse span samples its exact step's rows: drift is measured on the same rows.
    rows = sample_queries(n, settings.queries, settings.seed, step if anchor is None else anchor, layer).to(device)
    qblock = rows // bs
    static = static_candidates(geometry, bs, settings.grid)
    keep_static = _device_masks(geometry, bs, settings.grid, str(device))[:, qblock].float()[None] \
        if len(static.patterns) else None
    group = heads // k.shape[1]
    fp8 = "fp8" in settings.precisions
    chunk = _head_chunk(heads, len(rows), nb * bs, d, chunk_bytes, fp8)

    # Sums over batch elements per prompt share: [shares, heads, C] of recall, rel_err, then
    # rel_err_fp8 where measured (the static candidates', and the stripes' once their C is known).
    static_sums = [torch.zeros(shares, heads, len(static.patterns), device=device, dtype=torch.float64)
                   for _ in range(3 if fp8 else 2)]
    # Stripes are chosen from the first batch element's column mass and kept for the others, so
    # every batch element measures the same candidate.
    stripes: dict[int, StripeCandidates] = {}
    vs_sums: list[torch.Tensor] = []
    # Sums over batch elements of the error under reuse [heads, C] (batch mean only).
    static_reuse = torch.zeros(heads, len(static.patterns), device=device, dtype=torch.float64)
    vs_reuse: torch.Tensor | None = None
    map_sum = None
    for b in range(bsz):
        share = b * shares // bsz
        for h0 in range(0, heads, chunk):
            hs = slice(h0, min(h0 + chunk, heads))
            # Each query head's key/value head: a view where they are the same heads (no GQA).
            kv_heads = hs if group == 1 else torch.arange(hs.start, hs.stop, device=device) // group
            qs = q[b, hs][:, rows].float()                        # [h, Q, D]
            kk = k[b, kv_heads].float()                           # [h, N, D]
            vv = torch.nn.functional.pad(v[b, kv_heads].float(), (0, 0, 0, nb * bs - n))
            p = torch.softmax(torch.einsum("hqd,hnd->hqn", qs, kk) * scale, dim=-1)
            p = torch.nn.functional.pad(p, (0, nb * bs - n)).view(p.shape[0], len(rows), nb, bs)
            p_blk = p.sum(-1)                                     # [h, Q, nb]
            u = torch.einsum("hqnb,hnbd->hqnd", p, vv.view(-1, nb, bs, d))
            del p
            o_full = u.sum(2)
            partials = [(p_blk, u)]
            if fp8:
                partials.append(fp8_partials(q[b, hs], k[b, kv_heads], v[b, kv_heads], rows, scale, bs))
            if keep_static is not None:
                diffs: list | None = [] if reuse is not None else None
                values = _measure(keep_static, partials, o_full, diffs)
                for total, value in zip(static_sums, values):
                    total[share, hs] += value
                if reuse is not None:
                    static_reuse[hs] += reuse.error((layer, ordinal, b, h0, "static"), step, diffs[0], o_full,
                                                    values[1])
            if b == 0:
                def make(pb=p_blk):
                    return stripe_candidates(pb.mean(1), geometry, bs, settings.grid)

                stripes[h0] = make() if reuse is None else reuse.stripes((layer, ordinal, h0), step, make)
            vs = stripes[h0]
            if vs.masks.shape[1]:
                diffs = [] if reuse is not None else None
                values = _measure(vs.masks[:, :, qblock].float(), partials, o_full, diffs)
                if not vs_sums:
                    vs_sums = [torch.zeros(shares, heads, values[0].shape[1], device=device,
                                           dtype=torch.float64) for _ in values]
                    vs_reuse = torch.zeros(heads, values[0].shape[1], device=device, dtype=torch.float64)
                for total, value in zip(vs_sums, values):
                    total[share, hs] += value
                if reuse is not None:
                    vs_reuse[hs] += reuse.error((layer, ordinal, b, h0, "stripes"), step, diffs[0], o_full,
                                                values[1])
            bmap = _block_map(p_blk, qblock, nb, settings.map_size)
            if map_sum is None:
                map_sum = torch.zeros(heads, *bmap.shape[1:], device=device)
            map_sum[hs] += bmap
            del u, p_blk, o_full, partials

    finite = torch.isfinite(map_sum).all()
    for total in static_sums + vs_sums:
        finite &= torch.isfinite(total).all()
    if not bool(finite):
        raise ProfileError(f"{where}: the attention output statistics are not finite (the softmax overflowed?)")
    # One host transfer per statistic, then plain Python floats: per-element tensor indexing here
    # would cost more than the whole GPU pass.
    # [heads, C, k·(1 + P)]: the k means (recall, rel_err[, rel_err_fp8]), then each prompt's k.
    stats = _share_stats(static_sums, bsz, prompts, static_reuse if reuse is not None else None).tolist()
    static_density = static.density.tolist()
    if vs_sums:
        vs_stats = _share_stats(vs_sums, bsz, prompts, vs_reuse if reuse is not None else None).tolist()
    records: list[tuple] = []
    for h0, vs in stripes.items():
        vs_density = vs.density.tolist()
        for i, ids in enumerate(vs.ids):
            h = h0 + i
            records += [(step, layer, h, name, params, static_density[c], *stats[h][c])
                        for c, (name, params) in enumerate(zip(static.patterns, static.params))]
            records += [(step, layer, h, name, params, vs_density[i][c], *vs_stats[h][c])
                        for c, (name, params) in enumerate(ids)]
    table = _make_table(records, prompts, settings.precisions, reuse is not None)
    maps = {(layer, h): (map_sum[h] / bsz).float().cpu() for h in range(heads)}
    elapsed = time.perf_counter() - started
    return Profile(table, geometry, settings, maps=maps, map_steps={key: 1 for key in maps},
                   timing={"profile_s": elapsed, "calls": 1},
                   attention={"batch": bsz, "heads": heads, "kv_heads": int(k.shape[1]), "head_dim": d,
                              "dtype": str(q.dtype).removeprefix("torch.")})


def _share_stats(sums: list[torch.Tensor], bsz: int, prompts: int, reuse: torch.Tensor | None = None) -> torch.Tensor:
    """k statistics' [shares, heads, C] sums over each share's batch elements → [heads, C,
    k·(1 + prompts) (+ 1)]: the batch means of the k, the batch mean of ``reuse`` ([heads, C] sums)
    where given, then per prompt its share's means of the k (the order of
    :func:`~attnsearch.profiling.profile_io.table_columns`)."""
    per_share = bsz // sums[0].shape[0]
    out = [total.sum(0) / bsz for total in sums]
    if reuse is not None:
        out.append(reuse / bsz)
    for i in range(prompts):
        out += [total[i] / per_share for total in sums]
    return torch.stack(out, dim=-1)


def _make_table(records: list[tuple], prompts: int = 0,
                precisions: tuple[str, ...] = ("native",), reuse: bool = False) -> pd.DataFrame:
    columns = table_columns(prompts, precisions, reuse)
    df = pd.DataFrame.from_records(records, columns=[c for c in columns if c != "candidate"])
    df.insert(5, "candidate", [candidate_label(p, json.loads(j)) for p, j in zip(df["pattern"], df["params"])])
    stats = columns[columns.index("density"):]
    return df.astype({"step": "int32", "layer": "int32", "head": "int32", **{c: "float64" for c in stats}})


# --- models -----------------------------------------------------------------------------------


def profile_calls(spec, step_indices: Sequence[int], settings: ProfileSettings,
                  on_call: Callable[[int, int], None] | None = None) -> list[Profile]:
    """Profile the SDPA calls of the model forwards ``step_indices`` (input i is step i), one Profile
    per call, in call order. The steps are set explicitly, so any subset (a shard) gives the same
    per-call results as a full run: sampling is seeded by (seed, step, layer) alone."""
    from .capture import capture_attention
    from ..models import split_input

    parts: list[Profile] = []
    reuse = ReuseTracker(settings.residual_steps) if settings.residual_steps else None
    if reuse is not None and list(step_indices) != sorted(step_indices):
        raise ProfileError("residual_steps: a profile of residual reuse runs its steps in order")

    def consumer(call) -> None:
        kw = call.kwargs
        if kw.get("attn_mask") is not None or kw.get("is_causal"):
            raise ProfileError(
                f"step {call.step} layer {call.layer}: attention with attn_mask/is_causal is not supported "
                "by the profiler (the patterns describe full bidirectional attention)")
        parts.append(profile_tensors(call.query, call.key, call.value, spec.geometry, layer=call.layer,
                                     step=call.step, scale=kw.get("scale"), settings=settings,
                                     prompts=len(getattr(spec, "prompts", ())), reuse=reuse))
        if on_call is not None:
            on_call(call.step, call.layer)
        return None

    first: tuple[int, int] | None = None  # (step, attention calls) of the first profiled step
    with capture_attention(spec.model, consumer, auto_step=False) as cap, torch.no_grad():
        for step in step_indices:
            if not 0 <= step < len(spec.inputs):
                raise ProfileError(f"step {step} is outside the model's {len(spec.inputs)} inputs")
            cap.set_step(step)
            args, kwargs = split_input(spec.inputs[step])
            before = len(parts)
            try:
                spec.model(*args, **kwargs)
            except (ProfileError, GeometryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001  (user code: its failure is one line naming it)
                raise ProfileError(f"model {spec.name!r} step {step}: the forward raised "
                                   f"{type(exc).__name__}: {str(exc).strip()[:300]}") from None
            calls = len(parts) - before
            if first is None:
                first = (step, calls)
            elif calls != first[1]:
                raise ProfileError(f"model {spec.name!r} step {step}: {calls} attention call(s), but step "
                                   f"{first[0]} made {first[1]}; every step must run every layer")
    return parts


def profile_model(spec, *, steps: int | None = None, settings: ProfileSettings | None = None,
                  on_call: Callable[[int, int], None] | None = None,
                  step_indices: Sequence[int] | None = None) -> Profile:
    """Profile every SDPA call of the model's first ``steps`` inputs (or of ``step_indices``).

    ``spec`` is an ``attnsearch.models.ModelSpec``; one input = one model forward = one step.
    ``on_call(step, layer)`` is called after each profiled call (progress bars)."""
    settings = settings or ProfileSettings()
    if step_indices is None:
        step_indices = range(len(spec.inputs) if steps is None else steps)
    started = time.perf_counter()
    step_indices = list(step_indices)
    late = [s for s in settings.residual_steps if s > max(step_indices, default=-1)]
    if late:
        raise ProfileError(f"residual_steps: exact step {late[0]} is past the profiled steps (0–{max(step_indices)})")
    parts = profile_calls(spec, step_indices, settings, on_call)
    if not parts:
        raise ProfileError(f"model {spec.name!r} made no scaled_dot_product_attention call")
    return finish_profile(parts, spec, time.perf_counter() - started, max(step_indices) + 1)


def finish_profile(parts: list[Profile], spec, wall_s: float, num_steps: int | None = None) -> Profile:
    """Join per-call parts in (step, layer) order — the order of a single-process run, so the map
    averages are computed in the same float order whichever process profiled which call. The
    model record names the spec's experts over the ``num_steps`` profiled steps (default: up to
    the last step in ``parts``) and the profile keeps the spec's prompts."""
    parts = sorted(parts, key=lambda p: (int(p.table["step"].iloc[0]), int(p.table["layer"].iloc[0])))
    prof = Profile.concat(parts)
    prof.model = {"name": spec.name, "fingerprint": spec.fingerprint}
    if num_steps is None:
        num_steps = prof.num_steps
    experts = [e.to_dict() for e in getattr(spec, "experts", ()) if e.start < num_steps]
    if experts:
        experts[-1]["steps"][1] = min(experts[-1]["steps"][1], num_steps)
        prof.model["experts"] = experts
    prof.prompts = tuple(getattr(spec, "prompts", ()))
    prof.timing["wall_s"] = wall_s
    return prof
