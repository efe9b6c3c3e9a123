"""Choosing the plan to ship from a finished study: by the user's error budget and speed target,
by a density cap, or the knee of the Pareto front; and the front as a table.

Every choice returns the trial and a one-line reason (stored in the plan); a request nothing meets
raises :class:`BudgetError` naming the best that was achievable.
"""

from __future__ import annotations

import pandas as pd

from .space import SearchError


class BudgetError(SearchError):
    """No plan found meets the error budget / speed target; the message names the best achievable."""


def front_table(front) -> pd.DataFrame:
    rows = []
    for t in front:
        rows.append({"trial": t.number, "attention_ms": t.values[0], "error": t.values[1],
                     "speedup": t.user_attrs.get("speedup"), "rel_err": t.user_attrs.get("rel_err"),
                     "rel_l2": t.user_attrs.get("rel_l2"), "psnr_db": t.user_attrs.get("psnr_db"),
                     **{f"knob_{k}": v for k, v in t.params.items()}})
    return pd.DataFrame(rows).sort_values(["attention_ms", "trial"], ignore_index=True)


def error_metric(validate: int, validate_mode: str, weighted: bool = False) -> str:
    """What a search's error objective is, in words (stored in the plan)."""
    if not validate:
        return ("RMS rel_err over every (step, layer, head), from the profile" +
                (", weighted by the output's sensitivity" if weighted else ""))
    if validate_mode == "trajectory":
        return "measured relative L2 of whole trajectories' final outputs vs dense"
    return "measured relative L2 of the model output vs dense"


def choose_by_density(trials, problem_of, search, max_density: float, *, validate: bool = False):
    """The lowest-error completed trial whose plan keeps at most ``max_density`` of the blocks (ties:
    the faster, then the lower trial number), and why; BudgetError when none does."""
    what = "measured output error" if validate else "error"
    fits = []
    least = None
    for t in trials:
        pb = problem_of(t)
        pb._lam_hint.clear()  # each trial's plan as a fresh process rebuilds it
        density = pb.plan(pb.solve(search.knobs_of(t.params))).mean_density
        least = density if least is None else min(least, density)
        if density <= max_density:
            fits.append((t.values[1], t.values[0], t.number, t, density))
    if not fits:
        why = "run more trials, or allow a higher density"
        if least is not None and least >= 1.0 and pb.host_max_ms > 0:
            why = ("costed eagerly, no sparse layer here beats dense: the calls are host-bound; for CUDA-graph "
                   "or compiled runs search with execution graph")
        raise BudgetError(f"no trial's plan keeps at most {max_density:g} of the blocks: the sparsest keeps "
                          f"{least:.3f} ({why})")
    err, _, _, t, density = min(fits, key=lambda f: f[:3])
    return t, (f"lowest {what} ({err:.4g}) among the {len(fits)} trials at mean density ≤ {max_density:g}: "
               f"density {density:.3f}, {t.user_attrs.get('speedup', 0.0):.2f}× predicted")


def choose(front, max_error: float | None, target_speedup: float | None, *, validate: bool = False):
    """The Pareto trial to ship, and why (raises BudgetError when nothing meets the request)."""
    what = "measured output error" if validate else "error"
    speed = lambda t: t.user_attrs.get("speedup", 0.0)  # noqa: E731
    err = lambda t: t.values[1]  # noqa: E731
    ms = lambda t: t.values[0]  # noqa: E731
    if max_error is not None or target_speedup is not None:
        ok = [t for t in front if (max_error is None or err(t) <= max_error)
              and (target_speedup is None or speed(t) >= target_speedup)]
        if not ok:
            if max_error is not None and target_speedup is not None:
                within = [t for t in front if err(t) <= max_error]
                best = max(within, key=speed) if within else min(front, key=err)
                raise BudgetError(f"no plan found reaches {target_speedup:g}× within {what} {max_error:g}: the best "
                                  f"achievable is {speed(best):.2f}× at {what} {err(best):.4g} (trial {best.number})")
            if max_error is not None:
                best = min(front, key=err)
                raise BudgetError(f"no plan found meets {what} ≤ {max_error:g}: the least achievable is "
                                  f"{err(best):.4g} at {speed(best):.2f}× (trial {best.number})")
            best = max(front, key=speed)
            raise BudgetError(f"no plan found reaches {target_speedup:g}× predicted speedup: the best achievable is "
                              f"{speed(best):.2f}× at {what} {err(best):.4g} (trial {best.number})")
        if target_speedup is not None:
            t = min(ok, key=lambda t: (err(t), ms(t)))
            cond = f" and {what} ≤ {max_error:g}" if max_error is not None else ""
            return t, (f"lowest {what} ({err(t):.4g}) among the {len(ok)} Pareto plans reaching "
                       f"{target_speedup:g}×{cond}; it predicts {speed(t):.2f}×")
        t = min(ok, key=lambda t: (ms(t), err(t)))
        return t, (f"fastest Pareto plan within {what} ≤ {max_error:g}: {speed(t):.2f}× predicted at "
                   f"{what} {err(t):.4g} ({len(ok)} of {len(front)} Pareto plans qualify)")
    if len(front) == 1:
        t = front[0]
        return t, f"the only Pareto plan: {speed(t):.2f}× at {what} {err(t):.4g}"
    # Knee: farthest below the chord joining the front's two ends, in normalised (ms, error).
    xs = [ms(t) for t in front]
    ys = [err(t) for t in front]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    nx = lambda x: (x - x0) / (x1 - x0 or 1)  # noqa: E731
    ny = lambda y: (y - y0) / (y1 - y0 or 1)  # noqa: E731
    t = max(front, key=lambda t: 1 - nx(ms(t)) - ny(err(t)))
    return t, (f"knee of the Pareto front (no max_error or target_speedup given): {speed(t):.2f}× predicted at "
               f"{what} {err(t):.4g}, the best normalised trade-off of {len(front)} Pareto plans")


__all__ = ["BudgetError", "choose", "choose_by_density", "error_metric", "front_table"]
