"""Searched plans on mini-vdit with residual reuse across steps, against the same search without it
and against global masks with and without it: the same held-out videos.

    python -m benchmarks.mini_vdit_residual --out reports/mini_vdit_residual \
        [--sensitivity-from reports/mini_vdit_weighted/result.json] [--exact-steps 0,2,5,10] [--validate 2] \
        [--profile-reuse [--profiled-only]] [--choose-from 0 0,3 0,2,5,10 ... | --choose-profiles P...] \
        [--size F H W --steps S --make-profile --profile NEW.parquet --conditions C] [--sensitivity FILE]

The committed profile (``profiles/mini-vdit.parquet``; ``--make-profile``: a new one at ``--size``,
written to ``--profile``) is searched once per setting (``--trials``
each, errors weighted by the sensitivity record of ``--sensitivity-from`` when given): without reuse,
and with each set of exact steps (``optimize --residual-steps``: those steps run exact attention, the
steps after each add what their masks missed there; docs/design.md, "Residual reuse"). With
``--validate N`` each set is also searched with every trial's plan run on N whole trajectories of
training conditions (``--validated-trials`` trials, ``optimize --validate N --validate-mode
trajectory``): the error the search then ranks plans by is the videos' own, reuse included. With
``--profile-reuse`` the model is profiled again with each set (``profile --residual-steps``: every
candidate's error under that reuse, its residual's drift) and each set also searched on that profile
(``profiled``): the search then ranks masks by their error under reuse; ``--profiled-only`` skips
the sets' searches on the committed profile (the masks' own errors). With ``--choose-from SET...``
the model is profiled with each of those sets too and one search chooses among them and no reuse
(``optimize --residual-steps profiled``: the set of exact steps is a knob; ``--choose-trials``
trials): where the exact steps go is then the search's choice, per density cap
(``--choose-profiles``: profiles of reuse made beforehand instead). For each density cap every
search's lowest-error plan at or below it generates the held-out videos (noise seeds from 10,000, held-out conditions), beside the ``energy_decay`` and ``window`` global masks at
each plan's density (a reuse plan's masks reuse residuals at the same exact steps, their density
lowered by what those steps add). The searches price the calls at ``--batch`` (default 2: the
guidance branches in one batch, as the videos are generated). Writes ``result.json`` and
``figure.png`` (PSNR and SSIM against mean density) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import add_run_options, environment, redrawn
from attnsearch.evaluate import evaluate, load_generator
from attnsearch.profiling import Profile
from attnsearch.report.style import labelled_curve, save_figure, save_quality_figure
from attnsearch.search.sensitivity import Sensitivity
from attnsearch.search.sweep import density_sweep, distinct_plans

DENSITIES = (0.2, 0.25, 0.3, 0.4)
EXACT_STEPS = ("0,2,5,10",)
BASELINES = ("energy_decay", "window")


def series_key(run: dict, runs: list[dict]) -> str:
    """The curve a run belongs to: its search's label, or "<baseline> beside <search>" (a global
    mask at the density, and with the reuse, of a plan of that search)."""
    if run["kind"] == "baseline":
        return f"{run['baseline']['baseline']} beside {series_key(runs[run['of']], runs)}"
    return run["label"].split(" @ ")[0]


def searched(key: str) -> bool:
    return key.startswith(("static", "reuse"))


def figure(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    curves: dict[str, dict[float, tuple[float, float, float, float]]] = {}
    for r in data["runs"]:
        o = r["overall"]
        speedup = (r.get("predicted") or {}).get("speedup") or float("nan")
        curves.setdefault(series_key(r, data["runs"]), {})[round(r["density"], 6)] = (
            r["density"], o["psnr_db"], o["ssim"], speedup)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    for n, key in enumerate(sorted(curves, key=lambda k: (not searched(k), k))):
        points = [curves[key][d] for d in sorted(curves[key])]
        style = "o-" if searched(key) else ("^--" if "reuse" in key else "v:")
        kw = {"ms": 4, "lw": 1.6 if searched(key) else 1.0, "color": f"C{n}",
              "label": key if searched(key) else f"global {key}"}
        for ax, (x, y) in zip(axes, ((0, 1), (0, 2), (3, 1))):
            ax.plot([p[x] for p in points], [p[y] for p in points], style, **kw)
    for ax in (axes[0], axes[2]):
        ax.axhline(30, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("PSNR vs dense video (dB)")
    axes[1].set_ylabel("SSIM vs dense video")
    axes[0].set_xlabel("mean density (an exact step's dense call counted)")
    axes[1].set_xlabel("mean density")
    axes[2].set_xlabel("predicted attention speedup over cuDNN dense")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, frameon=False)
    s = data["settings"]
    fig.suptitle(f"mini-vdit {'×'.join(map(str, s['size']))}, {len(data['seeds'])} held-out videos, {s['steps']} "
                 "steps: searched plans with and without residual reuse", fontsize=9)
    save_figure(fig, path, tight=True)


def heads_figure(data: dict, path: Path) -> None:
    """PSNR and SSIM against predicted speedup of an ``attnsearch evaluate`` result whose plans' labels
    start with the way their heads reuse ("all heads reuse, …", "heads searched, …"), one curve each,
    every point labelled with the most its residuals held."""
    import matplotlib.pyplot as plt

    curves: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in data["runs"]:
        o = r["overall"]
        curves.setdefault(r["label"].split(",")[0], []).append(
            (r["predicted"]["speedup"], o["psnr_db"], o["ssim"], r["residual_peak_bytes"] / 2**20))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for n, (name, points) in enumerate(sorted(curves.items())):
        points.sort()
        for ax, y in zip(axes, (1, 2)):
            labelled_curve(ax, [p[0] for p in points], [p[y] for p in points], [f"{p[3]:.0f} MiB" for p in points],
                           color=f"C{n}", marker="o", label=name)
    save_quality_figure(fig, axes, "predicted attention speedup (H100 table, batch 2)",
                        f"mini-vdit, {len(data['seeds'])} held-out videos: residual reuse on every inexact head or on "
                        "the heads the search picks (labels: most residual memory held)", path, legend_size=8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_residual", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--profile", type=Path, default=Path("profiles/mini-vdit.parquet"),
                   help="the profile without reuse (with --make-profile: where to write a new one)")
    p.add_argument("--make-profile", action="store_true",
                   help="profile the model at --size first (--conditions training conditions, block 64)")
    p.add_argument("--keep-profiles", type=Path, default=None, metavar="DIR",
                   help="also write each profile of reuse made here into DIR (reuse-<steps>.parquet)")
    p.add_argument("--sensitivity", type=Path, default=None, metavar="FILE",
                   help="errors weighted by this sensitivity file (attnsearch sensitivity --out)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps of the profiles (made here with "
                   "--make-profile, --profile-reuse, --choose-from, --validate; the committed one has 20); a "
                   "sensitivity record of another step count is resampled to them (Sensitivity.resampled)")
    p.add_argument("--sensitivity-from", type=Path, default=None, metavar="RESULT",
                   help="a result.json of benchmarks.mini_vdit_weighted whose sensitivity record weighs the errors")
    p.add_argument("--exact-steps", nargs="+", default=list(EXACT_STEPS), help="sets of exact steps, e.g. 0,2,5,10")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--seeds", type=int, default=16, help="held-out videos")
    p.add_argument("--trials", type=int, default=200, help="trials of each search")
    p.add_argument("--validate", type=int, default=0, help="trajectories each trial of a validated reuse search runs "
                                                          "(0: no validated search)")
    p.add_argument("--validated-trials", type=int, default=60)
    p.add_argument("--conditions", type=int, default=4, help="training conditions the profile was made with")
    p.add_argument("--profile-reuse", action="store_true", help="also profile each exact-step set's reuse errors and "
                                                                 "search on them")
    p.add_argument("--reuse-profile", type=Path, default=None, metavar="PROFILE",
                   help="a profile of reuse errors (profile --residual-steps) to search on instead of profiling")
    p.add_argument("--profiled-only", action="store_true", help="no search of the --exact-steps sets on the "
                                                                 "committed profile (the masks' own errors)")
    p.add_argument("--choose-from", nargs="+", default=[], metavar="SET",
                   help="sets of exact steps to profile and search among in one search (with no reuse)")
    p.add_argument("--choose-profiles", nargs="+", type=Path, default=[], metavar="PROFILE",
                   help="profiles of reuse errors (profile --residual-steps), each at its set of exact steps, to "
                        "search among like --choose-from's (made beforehand: no profiling here)")
    p.add_argument("--choose-trials", type=int, default=400, help="trials of the search among --choose-from")
    p.add_argument("--skip-static", action="store_true", help="no search without reuse")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--batch", type=int, default=2, help="batch of the calls the searches price (2: evaluate runs "
                                                       "mini-vdit's guidance branches as one batch)")
    p.add_argument("--heads-figure-from", type=Path, default=None, metavar="EVALUATION",
                   help="only draw heads_figure of an evaluation.json (plans labelled by how their heads reuse)")
    add_run_options(p)
    args = p.parse_args(argv)
    if args.heads_figure_from is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        heads_figure(json.loads(args.heads_figure_from.read_text()), args.out / "figure-residual-heads.png")
        return
    if redrawn(args, figure):
        return
    try:
        exact_sets = [[int(s) for s in text.split(",")] for text in args.exact_steps]
        choose_from = [[int(s) for s in text.split(",")] for text in args.choose_from]
    except ValueError:
        p.error(f"--exact-steps, --choose-from: comma-separated integers, got {args.exact_steps + args.choose_from}")
    started = time.time()
    sens = None
    if args.sensitivity_from is not None:
        record = json.loads(args.sensitivity_from.read_text())["sensitivity"]
        sens = Sensitivity.from_dict({k: v for k, v in record.items() if k != "seconds"}, str(args.sensitivity_from))
    elif args.sensitivity is not None:
        sens = Sensitivity.load(args.sensitivity)
    f, h, w = args.size
    if sens is not None and len(sens.step_gain) != args.steps:
        sens = sens.resampled(args.steps)   # measured at another step count: read off by grid position
        print(f"sensitivity resampled from {sens.measured_steps} to {args.steps} steps", flush=True)
    if args.make_profile:
        from attnsearch.models import load_model
        from attnsearch.profiling import ProfileSettings, profile_model

        spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                          device=args.device)
        profile_model(spec, settings=ProfileSettings(block_size=64)).save(args.profile)
        print(f"profiled mini-vdit at {f}x{h}x{w} into {args.profile} ({time.time() - started:.0f} s)", flush=True)
    validated = {}
    if args.validate:
        from attnsearch.models import load_model

        spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                          device=args.device)
        validated = {"trials": args.validated_trials, "model": spec, "validate": args.validate,
                     "validate_mode": "trajectory"}
    def named(s):
        return f"reuse at {','.join(map(str, s))}"

    sweeps = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = {**({} if args.skip_static else {"static": ({}, None, args.profile)}),
                    **({} if args.profiled_only else
                       {named(s): ({}, s, args.profile) for s in exact_sets}),
                    **({f"{named(s)}, validated": (validated, s, args.profile) for s in exact_sets} if validated else {})}
        reuse_profiles: dict[tuple[int, ...], Path] = {}
        if args.profile_reuse or choose_from:
            from attnsearch.models import load_model
            from attnsearch.profiling import ProfileSettings, profile_model

            spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                              device=args.device)
            for s in (exact_sets if args.profile_reuse else []) + choose_from:
                if tuple(s) not in reuse_profiles:
                    reuse_profiles[tuple(s)] = path = Path(tmp) / f"reuse{len(reuse_profiles)}.parquet"
                    profile = profile_model(spec, settings=ProfileSettings(block_size=64, residual_steps=tuple(s)))
                    profile.save(path)
                    if args.keep_profiles is not None:
                        args.keep_profiles.mkdir(parents=True, exist_ok=True)
                        profile.save(args.keep_profiles / f"reuse-{'_'.join(map(str, s))}.parquet")
            print(f"profiled reuse errors at {len(reuse_profiles)} sets of exact steps "
                  f"({time.time() - started:.0f} s)", flush=True)
        if args.profile_reuse:
            for s in exact_sets:
                settings[f"{named(s)}, profiled"] = ({}, s, reuse_profiles[tuple(s)])
        if choose_from or args.choose_profiles:
            settings["reuse, exact steps searched"] = (
                {"trials": args.choose_trials}, "profiled",
                [args.profile, *(reuse_profiles[tuple(s)] for s in choose_from), *args.choose_profiles])
        if args.reuse_profile is not None:
            exact = list(Profile.load(args.reuse_profile).settings.residual_steps)
            settings[f"{named(exact)}, profiled"] = ({}, exact, args.reuse_profile)
        for i, (name, (extra, exact, profile)) in enumerate(settings.items()):
            sweeps[name] = density_sweep(profile, args.densities, **{"trials": args.trials, **extra},
                                         folder=tmp, name=f"s{i}", sensitivity=sens, residual_steps=exact,
                                         batch=args.batch, skip_unmet=True)
            print(f"searched {name} ({time.time() - started:.0f} s)", flush=True)
    plans, labels = [], []
    for name, points in sweeps.items():
        for q in distinct_plans(points):
            plans.append(q)
            labels.append(f"{name} @ {q.mean_density:.3f}")
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    result = evaluate(plans, generator, seeds=args.seeds, baselines=BASELINES, labels=labels,
                      progress=lambda d: print(f"  video {d['done']}/{d['total']}", flush=True)
                      if d["done"] % 100 == 0 else None)
    data = result.to_dict()
    data["settings"] = {"size": list(args.size), "steps": plans[0].num_steps, "trials": args.trials,
                        "densities": sorted(args.densities), "profile": str(args.profile),
                        "profile_made": args.make_profile, "conditions": args.conditions, "batch": args.batch,
                        "sensitivity_from": None if args.sensitivity_from is None else str(args.sensitivity_from),
                        "sensitivity": None if args.sensitivity is None else str(args.sensitivity),
                        "exact_steps": exact_sets, "validate": args.validate,
                        "validated_trials": args.validated_trials if args.validate else None,
                        "profile_reuse": args.profile_reuse, "profiled_only": args.profiled_only,
                        "choose_from": choose_from + [list(Profile.load(q).settings.residual_steps)
                                                      for q in args.choose_profiles],
                        "choose_trials": args.choose_trials if choose_from or args.choose_profiles else None,
                        "reuse_profile": None if args.reuse_profile is None else str(args.reuse_profile)}
    data["search"] = {name: [q.record() for q in points] for name, points in sweeps.items()}
    data["benchmark"] = {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}
    write_text_atomic(args.out / "result.json", json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    figure(data, args.out / "figure.png")
    for r in data["runs"]:
        o = r["overall"]
        print(f"{series_key(r, data['runs']):>48} @ {r['density']:.3f}: {o['psnr_db']:.2f} dB / SSIM {o['ssim']:.3f}"
              + (f" (predicted {r['predicted']['speedup']:.2f}×)" if (r.get("predicted") or {}).get("speedup") else "")
              + (f", exact steps {','.join(map(str, r['residual_steps']))}" if r.get("residual_steps") else ""))
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
