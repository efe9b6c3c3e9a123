"""Search speed: a synthetic profile of 40 layers × 40 heads × 50 steps × 30 candidates, 100 trials.

    python -m benchmarks.search_speed --out reports/search_speed [--trials 100]

The profile is synthetic but shaped like a real one: geometry 21 × 45 × 80 (N = 75 600, Wan 2.1
720p), block size 128, the real candidate grid of that geometry (diagonal, multi_diagonal,
energy_decay from the pattern library, vertical_stripe top-k with per-site key blocks), dense and
skip. Each head gets a hidden "true" family and width; a candidate's error falls with its density
and is lowest in the head's family, with noise per step. Times: building the profile (not
counted), then ``optimize`` end to end (load, pivot, 100 trials on SQLite, final plan with the full
cost model, write) on this machine's CPU; writes result.json, figure.png and README.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from attnsearch.bench.output import write_outputs
from attnsearch.profiling.candidates import CandidateGrid, candidate_label, static_candidates
from attnsearch.geometry import Geometry
from attnsearch.patterns import params_key
from attnsearch.profiling import Profile, ProfileSettings

FAMS = ("diagonal", "multi_diagonal", "vertical_stripe", "energy_decay")


def synthetic_profile(steps=50, layers=40, heads=40, seed=0) -> Profile:
    geom, bs = Geometry(21, 45, 80), 128
    nb = geom.num_blocks(bs)
    grid = CandidateGrid()
    st = static_candidates(geom, bs, grid)
    static = [(p, q, float(d)) for p, q, d in zip(st.patterns, st.params, st.density.tolist()) if p != "dense"]
    static = [s for s in static if s[0] != "skip"]
    top_k, rows = (1, 2, 4, 8, 16, 32), (0.0, 1.0)
    n_static = 30 - 2 - len(top_k) * len(rows)
    static = static[:n_static]
    rng = np.random.default_rng(seed)
    S, L, H = steps, layers, heads
    true_fam = rng.integers(0, 4, (L, H))
    width = rng.uniform(0.005, 0.08, (L, H))                    # density scale at which the head is covered
    noise = rng.lognormal(0, 0.15, (S, L, H))
    sites = np.stack(np.meshgrid(np.arange(S), np.arange(L), np.arange(H), indexing="ij"), -1).reshape(-1, 3)
    s_, l_, h_ = sites[:, 0], sites[:, 1], sites[:, 2]

    def err_of(fam_idx, dens):
        match = true_fam[l_, h_] == fam_idx
        scale = np.where(match, 1.0, 3.0) * width[l_, h_]
        e = np.clip(np.exp(-dens / scale) * noise[s_, l_, h_], 0, 1)
        return e, np.clip(1 - e**2, 0, 1)

    cols = {k: [] for k in ("step", "layer", "head", "pattern", "params", "density", "recall", "rel_err")}

    def add(pattern, params, dens, e, rec):
        n = len(sites)
        cols["step"].append(s_)
        cols["layer"].append(l_)
        cols["head"].append(h_)
        cols["pattern"].append(np.full(n, pattern, dtype=object))
        cols["params"].append(params if isinstance(params, np.ndarray) else np.full(n, params, dtype=object))
        cols["density"].append(np.broadcast_to(dens, (n,)).astype(np.float64))
        cols["rel_err"].append(e)
        cols["recall"].append(rec)

    for p, q, d in static:
        e, rec = err_of(FAMS.index(p), d)
        add(p, q, d, e, rec)
    perms = np.argsort(rng.random((len(sites), nb)), axis=1)[:, :max(top_k)]
    for r in rows:
        base = 1.0 / nb if r == 0 else 3.0 / nb
        for k in top_k:
            blocks = np.sort(perms[:, :k], axis=1)
            params = np.array([params_key({"key_blocks": b.tolist(), "rows": r}) for b in blocks], dtype=object)
            dens = np.full(len(sites), base + k / nb)
            e, rec = err_of(2, dens)
            add("vertical_stripe", params, dens, e, rec)
    add("dense", "{}", 1.0, np.zeros(len(sites)), np.ones(len(sites)))
    add("skip", "{}", 0.0, np.ones(len(sites)), np.zeros(len(sites)))
    df = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    labels = {}
    for p, q in df[["pattern", "params"]].drop_duplicates().itertuples(index=False):
        labels[(p, q)] = candidate_label(p, json.loads(q))
    df.insert(5, "candidate", [labels[(p, q)] for p, q in zip(df["pattern"], df["params"])])
    df = df.astype({"step": "int32", "layer": "int32", "head": "int32"})
    return Profile(df, geom, ProfileSettings(block_size=bs), model={"name": "synthetic-wan", "fingerprint": "synthetic"})


def _md_table(df: pd.DataFrame) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def toy(trials: int, out: Path) -> None:
    """toy-vdit end to end on the CPU: profile → optimize (validate 2 inputs, ≤ 2 % output error)."""
    import warnings

    from attnsearch.models import load_model
    from attnsearch.profiling import ProfileSettings, profile_model
    from attnsearch.search import optimize

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    spec = load_model("toy-vdit", steps=4)
    prof = profile_model(spec, settings=ProfileSettings(queries=128, block_size=64))
    prof_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        res = optimize(prof, hardware="nvidia-h100-80gb-hbm3", model=spec, validate=2, max_error=0.02,
                       trials=trials, out=Path(tmp) / "toy.json")
        opt_s = time.perf_counter() - t1
    f, v = res.figures, res.plan.search["validation"]
    front = res.pareto[["trial", "attention_ms", "speedup", "error", "rel_err", "psnr_db"]]
    result = {"model": "toy-vdit", "geometry": spec.geometry.to_dict(), "steps": 4, "trials": trials,
              "profile_s": round(prof_s, 1), "optimize_s": round(opt_s, 1), "chosen_trial": res.trial,
              "reason": res.reason, "figures": f, "validation": v, "pareto": front.to_dict(orient="records")}
    md = (f"toy-vdit "
          f"({spec.geometry}, 6 layers × 8 heads, head_dim 64, 4 steps), profile at B = 64 ({prof_s:.0f} s), then "
          f"{trials} trials validated on 2 inputs against dense, max_error 0.02, H100 table ({opt_s:.0f} s).\n\n"
          f"- chosen trial {res.trial}: {res.reason}\n"
          f"- predicted attention {f['attention_ms'] * 1e3:.1f} µs vs {f['dense_attention_ms'] * 1e3:.1f} µs cuDNN dense "
          f"on H100: **{f['speedup']:.2f}×**; measured model-output error **{v['rel_l2']:.2%}** relative L2, "
          f"PSNR {v['psnr_db']:.1f} dB; profile RMS rel_err {f['rel_err']:.3f}\n\n"
          f"Why so little: at toy size one attention call is ~23 µs on an H100 and launch-bound, so block "
          f"sparsity buys little time, while toy-vdit's attention carries real weight (zeroing it moves the "
          f"output by ~125 %), so the 2 % budget is binding. The same head classes at video-DiT scale are what "
          f"reports/runtime_sweep and reports/wan_e2e measure.\n\nPareto front:\n\n{_md_table(front)}\n")
    write_outputs(out, "toy-vdit: profile → optimize on the CPU", json.loads(json.dumps(result, default=float)),
                  lambda fig: _pareto_figure(fig, front), md)
    print(md)


def _pareto_figure(fig, front) -> None:
    ax = fig.add_subplot()
    ax.plot(front["error"], front["speedup"], "o-")
    ax.set_xlabel("profile error")
    ax.set_ylabel("predicted speedup (×)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("reports/search_speed"))
    ap.add_argument("--toy", action="store_true", help="toy-vdit end to end instead of the speed benchmark")
    args = ap.parse_args()
    from attnsearch.search import optimize

    if args.toy:
        return toy(min(args.trials, 30), args.out)

    t0 = time.perf_counter()
    prof = synthetic_profile()
    build_s = time.perf_counter() - t0
    n_cand = prof.table["candidate"].nunique()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.parquet"
        prof.save(path)
        t1 = time.perf_counter()
        res = optimize(path, trials=args.trials, out=Path(tmp) / "plan.json", max_error=0.1)
        total_s = time.perf_counter() - t1
        plan_kb = (Path(tmp) / "plan.json").stat().st_size / 1024
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "profile": {"steps": 50, "layers": 40, "heads": 40, "candidates": int(n_cand), "rows": len(prof.table),
                    "geometry": prof.geometry.to_dict(), "block_size": 128},
        "trials": args.trials, "optimize_s": round(total_s, 2), "search_s": res.seconds,
        "synthetic_profile_build_s": round(build_s, 2), "chosen_trial": res.trial, "reason": res.reason,
        "figures": res.figures, "pareto_size": len(res.pareto), "plan_kib": round(plan_kb, 1),
    }
    md = (f"Synthetic profile {result['profile']['layers']} layers × {result['profile']['heads']} heads × "
          f"{result['profile']['steps']} steps × {n_cand} candidates ({len(prof.table):,} rows, N = 75 600, B = 128), "
          f"{args.trials} trials, max_error 0.1, on {os.cpu_count()} CPU cores.\n\n"
          f"- `optimize` end to end (load, pivot, {args.trials} trials with SQLite storage, final plan costed with the "
          f"full model, JSON written): **{total_s:.1f} s**\n"
          f"- of which until the last trial finished: {res.seconds:.1f} s\n"
          f"- chosen: trial {res.trial} — {res.reason}\n"
          f"- predicted {res.figures['speedup']:.2f}× ({res.figures['attention_ms']:.0f} ms vs "
          f"{res.figures['dense_attention_ms']:.0f} ms dense), RMS rel_err {res.figures['rel_err']:.4f}; "
          f"Pareto front {len(res.pareto)} trials; plan {plan_kb:.0f} KiB\n")
    write_outputs(args.out, "Search speed", result, lambda fig: _time_figure(fig, result), md)
    print(md)


def _time_figure(fig, result) -> None:
    ax = fig.add_subplot()
    ax.barh(["until the last trial", "optimize end to end"], [result["search_s"], result["optimize_s"]])
    ax.set_xlabel(f"seconds ({result['trials']} trials, {result['machine']['cores']} cores)")


if __name__ == "__main__":
    main()
