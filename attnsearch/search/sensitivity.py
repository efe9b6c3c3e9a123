"""Output sensitivity: how much a head's attention error at a step moves the model's final output.

The profile's ``rel_err`` says how far a candidate moves one head's attention output at one step.
A user sees the final output (a video after every denoising step), and the two are far from
proportional: on mini-vdit an error at step 2 of 20 moves the video 25× more per unit of attention
error than one at step 13, and one head 240× more than another (reports/mini_vdit_weighted). A search
that sums the errors alike spends kept blocks where the output does not need them.

Measured by *ablation on whole trajectories*, with the kind of error a plan makes (the profile's
own candidates dropping blocks), since that is the error whose effect the search must predict: on
mini-vdit dropped blocks at early steps change what the sampler draws (reports/mini_vdit_steps).
For every head a probe candidate is taken from the profile (the lowest-error sparse candidate at ≤
``density`` mean density); a run of ``trajectories`` whole trajectories applies the probes on one
*site* only, everything else dense, and its final outputs' mean squared change against dense is
the site's response R. Two axes of sites, S + L·H runs in all (not S·L·H): every head of step s,
and head (l, h) at every step (``sites="layers"``: every head of layer l at every step, S + L
runs). A site's *gain* is R over the probes' profiled error on it, Σ rel_err², the output's
squared change per unit of squared attention error. The weight of (s, l, h) is
``step_gain[s] · head_gain[l, h]``, scaled to mean 1 (:meth:`Sensitivity.weights`), so λ and the
error budget of a weighted search keep the scale of an unweighted rel_err.

    sens = measure_sensitivity(profile, spec, density=0.3, trajectories=2)
    sens.save("sensitivity.json"); optimize(profile, sensitivity="sensitivity.json", ...)
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..atomic_io import write_json_atomic
from ..jsondata import JSONDataError, check_data, read_json
from ..patterns import SPARSE_FAMILIES
from .space import SearchError, SearchSpace, build_space

FORMAT = "attnsearch-sensitivity"
VERSION = 1
#: Mean density of the probe candidates unless told: the range most plans are searched in.
DEFAULT_DENSITY = 0.3
#: What the second axis probes: each head alone, or each layer's heads together.
SITES = ("heads", "layers")


class SensitivityError(SearchError):
    """A sensitivity record that cannot be made, read or used (one line, naming the problem)."""


@dataclass(frozen=True)
class Sensitivity:
    """Gains of the final output per unit of squared attention error, along steps and heads.

    ``step_gain`` [S], ``head_gain`` [L, H]: response / probe error per site (≥ 0; a site whose
    probes err by nothing, where no gain can be read, takes the mean gain of its axis and is listed
    in ``unmeasured``); ``step_response``, ``head_response``: the responses (mean squared change of
    the final outputs); ``probes`` [L][H]: the candidate each head was probed with; ``model``:
    the profile's model record (name, fingerprint); ``block_size``, ``density``, ``trajectories``:
    how it was measured; ``sites``: "heads" (one run per head) or "layers" (one run per layer, its
    gain every head's)."""

    step_gain: np.ndarray
    head_gain: np.ndarray
    step_response: np.ndarray
    head_response: np.ndarray
    probes: tuple[tuple[str, ...], ...]
    model: dict[str, str]
    block_size: int
    density: float
    trajectories: int
    unmeasured: tuple[str, ...] = ()
    sites: str = "heads"
    #: The sampler steps the step gains were measured at, when :meth:`resampled` mapped them to
    #: others (``unmeasured`` then names sites of the measured steps).
    measured_steps: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.step_gain), *self.head_gain.shape)

    def weights(self) -> np.ndarray:
        """[S, L, H] float64 weight of each site's squared error: step gain × head gain, mean 1."""
        w = self.step_gain[:, None, None] * self.head_gain[None]
        return w / w.mean()

    def resampled(self, num_steps: int) -> Sensitivity:
        """The record for a sampler of ``num_steps`` steps over the same time grid: each new step's
        gain read off the measured ones at its position in the grid (step s of S covers [s/S,
        (s + 1)/S) of the unshifted grid; gains sit at the middles, linear in between, held past the
        ends), head gains unchanged. Gains per step scale with the square of the step's length, the
        same for every step of a sampler, which the mean-1 weights drop. An approximation of a record
        measured at ``num_steps``: where gains change fast between two measured steps (the first
        ones), the new steps in between read a line."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise SensitivityError(f"sensitivity: steps to resample to must be an integer ≥ 1, got {num_steps!r}")
        S = len(self.step_gain)
        if num_steps == S:
            return self
        old, new = (np.arange(S) + 0.5) / S, (np.arange(num_steps) + 0.5) / num_steps
        return Sensitivity(np.interp(new, old, self.step_gain), self.head_gain, np.interp(new, old, self.step_response),
                           self.head_response, self.probes, self.model, self.block_size, self.density,
                           self.trajectories, self.unmeasured, self.sites, self.measured_steps or S)

    def check_matches(self, space: SearchSpace, model: dict[str, Any]) -> None:
        """SensitivityError unless these weights were measured for ``space``'s steps, layers and
        heads on the model ``model`` (a profile's model record) names."""
        if self.shape != space.shape[:3]:
            raise SensitivityError(f"sensitivity: measured over {self.shape} (steps, layers, heads), the profile "
                                   f"has {space.shape[:3]}")
        mine, theirs = self.model.get("fingerprint"), model.get("fingerprint")
        if mine and theirs and mine != theirs:
            raise SensitivityError(f"sensitivity: measured on model fingerprint {mine}, the profile is of {theirs}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": dict(self.model), "block_size": self.block_size,
                "density": self.density, "trajectories": self.trajectories, "shape": list(self.shape),
                "step_gain": self.step_gain.tolist(), "head_gain": self.head_gain.tolist(),
                "step_response": self.step_response.tolist(), "head_response": self.head_response.tolist(),
                "probes": [list(row) for row in self.probes], "unmeasured": list(self.unmeasured),
                "sites": self.sites, **({"measured_steps": self.measured_steps} if self.measured_steps else {})}

    def digest(self) -> str:
        """12 hex digits naming these weights exactly (a weighted study's name depends on them)."""
        return hashlib.sha256(np.ascontiguousarray(self.weights()).tobytes()).hexdigest()[:12]

    def summary(self) -> dict[str, Any]:
        """What a plan records of the weights its search used."""
        return {"digest": self.digest(), "model": self.model.get("fingerprint", ""), "density": self.density,
                "trajectories": self.trajectories, "sites": self.sites,
                **({"measured_steps": self.measured_steps} if self.measured_steps else {}),
                "step_gain_ratio": _ratio(self.step_gain), "head_gain_ratio": _ratio(self.head_gain)}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "sensitivity") -> Sensitivity:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SensitivityError(f"{source}: not an attnsearch sensitivity record (format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise SensitivityError(f"{source}: version {data.get('version')!r} is not {VERSION}")
        try:
            check_data(data)
            out = cls(_array(data, "step_gain", 1), _array(data, "head_gain", 2), _array(data, "step_response", 1),
                      _array(data, "head_response", 2), tuple(tuple(str(c) for c in row) for row in data["probes"]),
                      {str(k): str(v) for k, v in dict(data["model"]).items()}, int(data["block_size"]),
                      float(data["density"]), int(data["trajectories"]), tuple(str(u) for u in data["unmeasured"]),
                      str(data.get("sites", "heads")),  # records before "sites" probed per head
                      None if data.get("measured_steps") is None else int(data["measured_steps"]))
        except (KeyError, TypeError, ValueError, JSONDataError) as exc:
            raise SensitivityError(f"{source}: malformed sensitivity record ({type(exc).__name__}: {exc})") from None
        out.check(source)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sensitivity:
        try:
            data = read_json(path, "sensitivity record")
        except JSONDataError as exc:
            raise SensitivityError(str(exc)) from None
        return cls.from_dict(data, str(path))

    def check(self, source: str = "sensitivity") -> None:
        """SensitivityError unless the arrays agree in shape and every gain and response is finite
        and ≥ 0, with some gain > 0 on each axis."""
        S, (L, H) = len(self.step_gain), self.head_gain.shape
        if self.step_response.shape != (S,) or self.head_response.shape != (L, H) or \
                len(self.probes) != L or any(len(row) != H for row in self.probes) or not S * L * H:
            raise SensitivityError(f"{source}: gains, responses and probes disagree in shape")
        for name, a in (("step_gain", self.step_gain), ("head_gain", self.head_gain),
                        ("step_response", self.step_response), ("head_response", self.head_response)):
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise SensitivityError(f"{source}: {name} must be finite and ≥ 0")
        if self.sites not in SITES:
            raise SensitivityError(f"{source}: sites must be one of {', '.join(SITES)}, got {self.sites!r}")
        if not (self.step_gain.max() > 0 and self.head_gain.max() > 0):
            raise SensitivityError(f"{source}: every gain is 0: no probe moved the output, nothing to weigh by")


def _array(data: dict, key: str, ndim: int) -> np.ndarray:
    a = np.asarray(data[key], dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{key} must have {ndim} dimension(s)")
    return a


def _ratio(a: np.ndarray) -> float | None:
    """Largest over smallest positive gain (None: fewer than two positive gains)."""
    pos = a[a > 0]
    return float(pos.max() / pos.min()) if pos.size > 1 else None


def probe_candidates(space: SearchSpace, density: float) -> np.ndarray:
    """int [L, H]: per head, the sparse candidate of least mean rel_err (over steps) among those of
    mean density ≤ ``density``; a head with none there takes its sparsest sparse candidate."""
    sparse = np.array([f in SPARSE_FAMILIES for f in space.families])
    if not sparse.any():
        raise SensitivityError("sensitivity: the profile has no sparse candidate to probe with")
    with np.errstate(all="ignore"):
        dens = np.nanmean(space.density, 0)
        err = np.nanmean(space.rel_err, 0)
    usable = sparse & np.isfinite(dens) & np.isfinite(err)
    within = np.where(usable & (dens <= density), err, np.inf)
    fallback = np.where(usable, dens, np.inf).argmin(-1)
    best = within.argmin(-1)
    out = np.where(np.isfinite(within.min(-1)), best, fallback)
    if not np.isfinite(np.take_along_axis(np.where(usable, dens, np.inf), out[..., None], -1)).all():
        raise SensitivityError("sensitivity: a head has no measured sparse candidate to probe with")
    return out


def site_plans(space: SearchSpace, probes: np.ndarray, model: dict[str, Any] | None = None,
               sites: str = "heads"):
    """(label, plan) of every site: step s (all heads probed at s), then (l, h) (head h of layer l
    probed at every step; ``sites="layers"``: every head of layer l); everything else dense.
    ``model``: the profile's model record, which the plans carry (Wan2.2's experts: ``apply`` on
    the pipeline needs them)."""
    from ..layer_plan import LayerPlan
    from ..plan import Plan, ScheduleEntry

    S, L, H, _ = space.shape
    g, bs = space.geometry, space.block_size
    dense = LayerPlan.dense(g, H, bs)

    def layer(s: int, l_: int, heads) -> LayerPlan:
        return LayerPlan.from_heads([(space.families[probes[l_, h]],
                                      space.candidate_params(int(probes[l_, h]), range(s, s + 1), l_, h))
                                     if h in heads else ("dense", {}) for h in range(H)], g, bs)

    def plan(entries) -> Plan:
        return Plan(g, bs, S, L, H, tuple(entries), model=dict(model or {}))

    for s in range(S):
        entries = [ScheduleEntry(0, s, None)] if s else []
        entries.append(ScheduleEntry(s, s + 1, tuple(layer(s, l_, range(H)) for l_ in range(L))))
        if s + 1 < S:
            entries.append(ScheduleEntry(s + 1, S, None))
        yield f"step {s}", plan(entries)
    groups = [(h,) for h in range(H)] if sites == "heads" else [tuple(range(H))]
    for l_ in range(L):
        for heads in groups:
            yield f"layer {l_}" + (f" head {heads[0]}" if sites == "heads" else ""), plan(
                [ScheduleEntry(s, s + 1, tuple(layer(s, k, heads) if k == l_ else dense for k in range(L)))
                 for s in range(S)])


def _gains(response: np.ndarray, err2: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """response / err2 where err2 > 0; elsewhere the mean of the measured gains (and their labels)."""
    ok = err2 > 0
    if not ok.any():
        raise SensitivityError("sensitivity: the probes err by nothing on the profile: no gain can be read")
    gain = np.where(ok, response / np.where(ok, err2, 1.0), 0.0)
    gain[~ok] = gain[ok].mean()
    return gain, [lab for lab, o in zip(labels, ok.reshape(-1)) if not o]


def check_inputs(profile, spec, density: float, trajectories: int | None) -> int:
    """SensitivityError unless ``spec`` can be probed for ``profile`` (the profiled model, geometry
    and steps, a sampler, ``density`` in (0, 1]); returns the trajectory count to run (None: up to 2)."""
    if not (isinstance(density, (int, float)) and not isinstance(density, bool) and 0 < density <= 1):
        raise SensitivityError(f"sensitivity: density must be in (0, 1], got {density!r}")
    if not spec.num_trajectories:
        raise SensitivityError(f"sensitivity: model {spec.name!r} has no sampler to run whole trajectories with")
    if trajectories is None:
        trajectories = min(2, spec.num_trajectories)
    if not isinstance(trajectories, int) or isinstance(trajectories, bool) or \
            not 1 <= trajectories <= spec.num_trajectories:
        raise SensitivityError(f"sensitivity: trajectories must be an integer in [1, {spec.num_trajectories}] (the "
                               f"model's trajectories), got {trajectories!r}")
    fp = profile.model.get("fingerprint")
    if fp and spec.fingerprint != fp:
        raise SensitivityError(f"sensitivity: model {spec.name!r} (fingerprint {spec.fingerprint}) is not the "
                               f"profiled model (fingerprint {fp})")
    if spec.geometry != profile.geometry:
        raise SensitivityError(f"sensitivity: the model runs at {spec.geometry}, the profile is of {profile.geometry} "
                               "(pass the factory options it was profiled with)")
    if spec.num_steps != profile.num_steps:
        raise SensitivityError(f"sensitivity: the model runs {spec.num_steps} steps, the profile has "
                               f"{profile.num_steps}")
    return trajectories


def measure_sensitivity(profile, spec, *, density: float = DEFAULT_DENSITY, trajectories: int | None = None,
                        sites: str = "heads", backend: str = "auto",
                        progress: Callable[[dict[str, Any]], None] | None = None) -> Sensitivity:
    """Measure the step and head gains of the profiled model ``spec`` (a ModelSpec with a sampler)
    on its first ``trajectories`` trajectories (None: up to 2), probing with the profile's
    candidates at ≤ ``density`` (see the module docstring): S + L·H runs, or S + L with
    ``sites="layers"`` (each layer's heads probed together, the layer's gain every head's: for
    models whose L·H runs cost too much). ``progress`` gets {"done", "total", "site"} after every run."""
    from .validate import Validator

    trajectories = check_inputs(profile, spec, density, trajectories)
    if sites not in SITES:
        raise SensitivityError(f"sensitivity: sites must be one of {', '.join(SITES)}, got {sites!r}")
    fp = profile.model.get("fingerprint")
    space = build_space(profile)
    S, L, H, _ = space.shape
    probes = probe_candidates(space, float(density))
    validator = Validator(spec, trajectories, backend, "trajectory")
    responses, labels = [], []
    per = H if sites == "heads" else 1
    total = S + L * per
    for i, (label, plan) in enumerate(site_plans(space, probes, profile.model, sites)):
        mse = validator.measure(plan)["mse"]
        if not math.isfinite(mse):
            raise SensitivityError(f"sensitivity: {label}: the probed model's output is not finite")
        responses.append(mse)
        labels.append(label)
        if progress is not None:
            progress({"done": i + 1, "total": total, "site": label})
    e2 = np.take_along_axis(np.nan_to_num(space.rel_err, nan=0.0), probes[None, ..., None], -1)[..., 0] ** 2
    step_r, head_r = np.array(responses[:S]), np.array(responses[S:]).reshape(L, per)
    step_g, un_s = _gains(step_r, e2.sum((1, 2)), labels[:S])
    head_e2 = e2.sum(0) if sites == "heads" else e2.sum((0, 2))[:, None]
    head_g, un_h = _gains(head_r, head_e2, labels[S:])
    head_r, head_g = np.broadcast_to(head_r, (L, H)).copy(), np.broadcast_to(head_g, (L, H)).copy()
    out = Sensitivity(step_g, head_g, step_r, head_r,
                      tuple(tuple(space.names[c] for c in row) for row in probes),
                      {"name": str(profile.model.get("name", "")), "fingerprint": str(fp or spec.fingerprint)},
                      space.block_size, float(density), trajectories, tuple(un_s + un_h), sites)
    out.check()
    return out


def resolve_sensitivity(value) -> Sensitivity | None:
    """None, a Sensitivity, or the path of a saved one → a Sensitivity (or None)."""
    if value is None or isinstance(value, Sensitivity):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Sensitivity.load(value)
    raise SensitivityError(f"sensitivity: expected a Sensitivity or a path, got {type(value).__name__}")


__all__ = ["DEFAULT_DENSITY", "SITES", "Sensitivity", "SensitivityError", "check_inputs", "measure_sensitivity",
           "probe_candidates", "resolve_sensitivity", "site_plans"]
