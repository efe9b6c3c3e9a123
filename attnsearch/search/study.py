"""The outer search: an Optuna study over the knobs, two objectives, the Pareto front kept.

Each trial samples :class:`~attnsearch.search.problem.Knobs`, solves the inner problem exactly
(:mod:`attnsearch.search.inner`) and reports (predicted attention ms, error): error is the plan's
RMS rel_err over every (step, layer, head) from the profile, or — with ``validate = N`` — the
measured relative L2 error of the model's own outputs against dense on N inputs (teacher-forced
steps) or N whole denoising trajectories (``validate_mode="trajectory"``, see
:mod:`attnsearch.search.validate`). The study lives
in an Optuna storage (default: SQLite beside the plan), named after the profile's content and the
settings, so rerunning the same command continues it. The final plan is the Pareto trial that
best fits what was asked (``max_error``, ``target_speedup``, or the knee of the front), rebuilt
from its knobs (the inner solve is deterministic) and costed with the full model.

Several profiles of one model are several problems: one per block size, or, with
``residual_steps="profiled"``, one per (block size, set of exact steps the profile measured reuse
at); a trial's ``block_size`` or ``variant`` knob picks the one it solves (``_Search.problem_of``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from ..costmodel import CostModel, HardwareError
from ..plan import Plan, write_plan
from ..profiling.profile_check import check_steps_complete, check_table
from ..profiling.profile_io import Profile, ProfileError
from .choose import BudgetError, choose, choose_by_density, error_metric, front_table
from .problem import RESIDUAL_HEADS, Knobs, Problem
from .sensitivity import Sensitivity, resolve_sensitivity
from .space import SearchError, build_space
from .outputs import check_outputs_of, holds_no_trial, missing_folders, remove_new_study
from .workers import (HEARTBEAT_S, claim_lock, file_lock, open_storage, run_trials, spawn, start_run,
                      public_url, storage_error, storage_kind, worker_id)

#: Relative λ range (× one head's dense attention per step; see Knobs).
LAM_RANGE = (1e-3, 1e3)
TAU_CHOICES = (0.0, 0.8, 0.9, 0.95)
#: λ values the first trials of a new study take (spreading the front from the start). Ordered
#: ends-first, so even a short study holds a near-dense plan (any budget has an answer) and an
#: aggressive one before it fills in the middle.
SEED_LAMS = (1000.0, 1.0, 0.01, 10.0, 0.1)
#: ``residual_steps`` value under which each profile's own exact steps (``profile --residual-steps``;
#: none: no reuse) are a choice of the search.
PROFILED = "profiled"


@dataclass
class OptimizeResult:
    plan: Plan
    path: Path
    trial: int
    reason: str
    figures: dict[str, float]
    pareto: pd.DataFrame
    study_name: str
    storage: str
    hardware: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    #: Of this call (not in the plan, which depends only on the stored study and the settings).
    seconds: float = 0.0
    trials_run: int = 0


# --- inputs ----------------------------------------------------------------------------------------


def _load_profiles(profile_path, residual_steps=None) -> list[Profile]:
    paths = [profile_path] if isinstance(profile_path, (str, os.PathLike, Profile)) else list(profile_path)
    if not paths:
        raise SearchError("optimize: no profile given")
    profs = [p if isinstance(p, Profile) else Profile.load(p) for p in paths]
    for p, path in zip(profs, paths):  # a plan covers steps [0, S): every one must be measured
        where = "profile" if isinstance(path, Profile) else path
        check_table(p.table, where)
        check_steps_complete(p.table, where)
    first = profs[0]
    for p in profs[1:]:
        if p.geometry != first.geometry or p.model.get("fingerprint") != first.model.get("fingerprint"):
            raise SearchError("optimize: the profiles are of different models or geometries")
        if (p.num_steps, p.num_layers, p.num_heads) != (first.num_steps, first.num_layers, first.num_heads):
            raise SearchError("optimize: the profiles cover different steps, layers or heads")
    if residual_steps == PROFILED:
        if not any(p.settings.residual_steps for p in profs):
            raise SearchError("residual_steps 'profiled': none of the profiles measured residual reuse (profile "
                              "with --residual-steps, once per set of exact steps to choose from)")
        keys = [(p.settings.block_size, _steps_label(p.settings.residual_steps)) for p in profs]
        if len(set(keys)) != len(keys):
            twice = next(k for k in keys if keys.count(k) > 1)
            raise SearchError(f"optimize: two profiles at block size {twice[0]} with exact steps {twice[1]}; give one "
                              "per block size and set of exact steps")
        return profs
    sizes = [p.settings.block_size for p in profs]
    if len(set(sizes)) != len(sizes):
        raise SearchError(f"optimize: two profiles at the same block size ({sizes}); give one per block size"
                          + (" (several sets of exact steps: residual_steps='profiled')"
                             if len({p.settings.residual_steps for p in profs}) > 1 else ""))
    return profs


def _fingerprint(profs: Sequence[Profile], settings: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in profs:
        h.update(str(int(pd.util.hash_pandas_object(p.table, index=False).sum() & (2**63 - 1))).encode())
        h.update(json.dumps(p.model, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _open_study(storage, name: str, seed: int | None):
    """Create or load the study (``storage``: a URL or an RDBStorage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                   directions=["minimize", "minimize"],
                                   sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    except Exception as err:  # noqa: BLE001  (sqlalchemy/driver errors differ by backend: one clear message)
        url = storage if isinstance(storage, str) else str(getattr(storage, "url", storage))
        raise storage_error(url, err) from None


def _sampler_seed(seed: int, index: int) -> int:
    """A sampler seed per worker process: workers seeded alike would propose the same parameters."""
    import socket

    key = f"{seed}:{socket.gethostname()}:{os.getpid()}:{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


class _Search:
    """The knob space and objective of one search (built alike in the parent and every worker)."""

    def __init__(self, problems: dict[tuple[int, tuple[int, ...] | None], Problem], *, budgeted: bool,
                 max_error: float | None, validator) -> None:
        self.problems, self.budgeted, self.max_error, self.validator = problems, budgeted, max_error, validator
        S, L, _ = next(iter(problems.values())).space.shape[:3]
        self.S, self.L = S, L
        self.max_dense_layers = L // 4
        self.sizes = sorted({size for size, _ in problems})
        #: The sets of exact steps the problems reuse residuals at (None: no reuse); several with
        #: ``residual_steps="profiled"``, where the set is a knob ("variant": block size and set).
        self.sets = sorted({steps for _, steps in problems}, key=lambda s: (s is not None, s or ()))
        self.variants = {f"{size}:{_steps_label(steps)}": (size, steps) for size, steps in sorted(
            problems, key=lambda k: (k[0], k[1] is not None, k[1] or ()))} if len(self.sets) > 1 else {}
        self._warm = {steps: _warm_choices(S, steps) for steps in self.sets}
        self._ranges = {steps: [1] if steps is not None else sorted({1, *(r for r in (2, 4) if r < S), S})
                        for steps in self.sets}
        self.warm_choices, self.range_choices = self._warm[self.sets[0]], self._ranges[self.sets[0]]

    def key_of(self, params: dict[str, Any]) -> tuple[int, tuple[int, ...] | None]:
        """The (block size, exact steps) of a trial's parameters: which problem it solves."""
        if self.variants:
            return self.variants[params["variant"]]
        return params.get("block_size", self.sizes[-1]), self.sets[0]

    def problem_of(self, params: dict[str, Any]) -> Problem:
        return self.problems[self.key_of(params)]

    @classmethod
    def build(cls, profs: Sequence[Profile], cm: CostModel, *, max_error: float | None, validate: int, spec,
              backend: str, validate_mode: str = "steps", ulysses: int = 1,
              precisions: Sequence[str] | None = None, sensitivity: Sensitivity | None = None,
              residual_steps: Sequence[int] | str | None = None, residual_heads: str = "all") -> "_Search":
        problems = {}
        for p in profs:
            space = build_space(p)
            if sensitivity is not None:
                sensitivity.check_matches(space, p.model)
            steps = (tuple(p.settings.residual_steps) or None) if residual_steps == PROFILED else (
                None if residual_steps is None else tuple(residual_steps))
            pb = Problem(space, cm, ulysses=ulysses, precisions=None if precisions is None else tuple(precisions),
                         weights=None if sensitivity is None else sensitivity.weights(), residual_steps=steps,
                         residual_heads=residual_heads)
            problems[(p.settings.block_size, pb.residual_steps)] = pb
        validator = None
        if validate:
            from .validate import Validator

            validator = Validator(spec, validate, backend, validate_mode)
        return cls(problems, budgeted=max_error is not None and not validate, max_error=max_error,
                   validator=validator)

    def prepare(self) -> None:
        """Compute what every trial needs before the first one is claimed: the validator's dense
        reference (so a model that fails is reported before the study holds a trial). A search
        that runs no trial here skips it and never runs the model."""
        if self.validator is not None:
            self.validator.reference  # a cached property: runs the dense model once

    def knobs_of(self, params: dict[str, Any]) -> Knobs:
        size, steps = self.key_of(params)
        at = f"@{_steps_label(steps)}" if self.variants else ""
        return Knobs(lam=None if self.budgeted else params["lam"],
                     budget=self.max_error * params["budget_frac"] if self.budgeted else None,
                     tau=params.get("tau", 0.0), warmup=params.get(f"warmup{at}", 0),
                     dense_layers=params.get("dense_layers", 0), ranges=params.get(f"ranges{at}", 1),
                     block_size=size)

    def objective(self, trial) -> tuple[float, float]:
        if self.budgeted:
            trial.suggest_float("budget_frac", 0.25, 1.0)
        else:
            trial.suggest_float("lam", *LAM_RANGE, log=True)
        trial.suggest_categorical("tau", TAU_CHOICES)
        if self.variants:  # the set of exact steps (and block size) is a knob; warm-up and ranges depend on it
            _, steps = self.variants[trial.suggest_categorical("variant", list(self.variants))]
            trial.suggest_categorical(f"warmup@{_steps_label(steps)}", self._warm[steps])
            trial.suggest_int("dense_layers", 0, self.max_dense_layers)
            trial.suggest_categorical(f"ranges@{_steps_label(steps)}", self._ranges[steps])
        else:
            trial.suggest_categorical("warmup", self.warm_choices)
            trial.suggest_int("dense_layers", 0, self.max_dense_layers)
            trial.suggest_categorical("ranges", self.range_choices)
            trial.suggest_categorical("block_size", self.sizes)
        k = self.knobs_of(trial.params)
        pb = self.problem_of(trial.params)
        a = pb.solve(k)
        dense_ms = pb.dense_baseline_ms
        trial.set_user_attr("speedup", dense_ms / a.cost_ms)
        trial.set_user_attr("rel_err", a.rel_err)
        trial.set_user_attr("dense_attention_ms", dense_ms)
        error = a.rel_err
        if self.validator is not None:
            measured = self.validator.measure(pb.plan(a))
            trial.set_user_attr("rel_l2", measured["rel_l2"])
            trial.set_user_attr("psnr_db", measured["psnr_db"])
            error = measured["rel_l2"]
        return a.cost_ms, error

    def seed_params(self, trials: int) -> list[dict[str, Any]]:
        """A new study starts from a spread of λ (or budgets) at default knobs; with several sets of
        exact steps, the same spread at every set (each λ at every set before the next λ), so that
        no set depends on the sampler's first draws to be tried at all."""
        labels = list(self.variants) or [None]
        fracs = (1.0, 0.625, 0.25, 0.8125, 0.4375)
        out = []
        for i in range(max(1, min(trials, len(SEED_LAMS) * len(labels)))):
            spread, which = divmod(i, len(labels))
            label = labels[which]
            base = {"tau": 0.0, "dense_layers": 0}
            if label is None:
                base.update({"warmup": 0, "ranges": 1, "block_size": self.sizes[-1]})
            else:
                at = f"@{_steps_label(self.variants[label][1])}"
                base.update({"variant": label, f"warmup{at}": 0, f"ranges{at}": 1})
            base.update({"budget_frac": fracs[spread]} if self.budgeted else {"lam": SEED_LAMS[spread]})
            out.append(base)
        return out


def _steps_label(steps) -> str:
    """A set of exact steps as text: "0,2,5,10", "none" for no reuse."""
    return ",".join(map(str, steps)) if steps else "none"


def _warm_choices(S: int, exact: tuple[int, ...] | None) -> list[int]:
    """Dense warm-up lengths a trial may take: few values, as for every knob that changes the
    per-range sums (each combination is aggregated once). Under residual reuse a plan's step ranges
    are the spans between its exact steps, and a warm-up ends at one: a range cut elsewhere would
    start without a residual, where the error model counts one."""
    if exact is not None:
        return sorted({0, *(w for w in exact if 0 < w < S)})
    return sorted({0, *(w for w in (round(S * f) for f in (0.05, 0.1, 0.2)) if 0 < w < S)})


def _progress(study, trial, trials: int) -> dict[str, Any]:
    return {"trial": trial.number, "trials": trials, "attention_ms": trial.values[0],
            "speedup": trial.user_attrs.get("speedup"), "error": trial.values[1], "front": len(study.best_trials)}


def worker_main(cfg: dict[str, Any], index: int, report: Callable[[dict[str, Any]], None]) -> None:
    """One worker process of ``optimize(workers=K)``: rebuild the search, claim and run trials."""
    started = time.monotonic()
    profs = _load_profiles(cfg["profile"], cfg["residual_steps"])
    spec = _load_spec(cfg["model"]) if cfg["model"] is not None else None
    cm = CostModel(cfg["hardware"], head_dim=cfg["head_dim"], batch=cfg["batch"], execution=cfg["execution"])
    search = _Search.build(profs, cm, max_error=cfg["max_error"], validate=cfg["validate"], spec=spec,
                           backend=cfg["backend"], validate_mode=cfg["validate_mode"], ulysses=cfg["ulysses"],
                           precisions=cfg["precisions"], sensitivity=cfg["sensitivity"],
                           residual_steps=cfg["residual_steps"], residual_heads=cfg["residual_heads"])
    rdb = open_storage(cfg["storage"], cfg["heartbeat_s"])
    study = _open_study(rdb, cfg["study"], _sampler_seed(cfg["seed"], index))
    deadline = started + cfg["timeout"] if cfg["timeout"] else None
    search.prepare()
    run_trials(study, rdb, lambda: claim_lock(cfg["storage"], rdb, cfg["study"]), cfg["target"], search.objective,
               worker=worker_id(index), deadline=deadline,
               on_trial=lambda t: report(_progress(study, t, cfg["trials"])))


# --- the search ------------------------------------------------------------------------------------------


#: Largest error budget that means something: errors are relative (O(1)); the exact solver squares it.
MAX_ERROR_BUDGET = 1e6


def optimize(profile_path, *, hardware=None, max_error: float | None = None, target_speedup: float | None = None,
             max_density: float | None = None, trials: int = 100, storage: str | None = None, validate: int = 0,
             validate_mode: str = "steps", out: str | os.PathLike = "plan.json",
             model=None, progress: Callable[[dict[str, Any]], None] | None = None, head_dim: int | None = None,
             batch: int = 1, seed: int = 0, study_name: str | None = None, backend: str = "auto",
             timeout: float | None = None, workers: int = 1, heartbeat_s: int = HEARTBEAT_S,
             ulysses: int = 1, portable: bool = True, precisions: Sequence[str] | None = None,
             sensitivity=None, execution: str | None = None,
             residual_steps: Sequence[int] | str | None = None, residual_heads: str = "all") -> OptimizeResult:
    """Search a plan for the profiled model and write it to ``out``.

    Args:
        profile_path: a profile file (or Profile), or several at different block sizes.
        hardware: hardware table (path, GPU name or slug); None: this GPU's, else the shipped H100.
        max_error: the error budget (RMS rel_err from the profile; measured relative L2 with
            ``validate``): the fastest plan within it is chosen.
        target_speedup: predicted attention speedup over cuDNN dense to reach: the lowest-error plan
            reaching it is chosen (with ``max_error`` too: both must hold).
        max_density: the attention compute to stay within (``Plan.mean_density``, kept blocks over
            all blocks): the lowest-error completed trial at or below it is chosen, whatever the
            other requests (a density sweep asks for one plan per density).
        trials: trials to run now (a continued study keeps its earlier ones). A run that did not
            finish (killed, or still running on other machines) is resumed/joined instead: its
            target count of complete trials stands. 0: only choose from the stored study.
        storage: Optuna storage URL; default ``sqlite:///<out>.optuna.db`` beside the plan.
        workers: worker processes to run the trials in (> 1 needs a server database, e.g.
            ``postgresql://``). The same command on several machines shares the run. The plan is
            chosen by this process after its workers ended, from the stored study's completed trials
            (ties to the lowest trial number), so every machine writes the same plan.
        heartbeat_s: a running trial's heartbeat period; one silent for 3× this is failed and its
            parameters retried (a killed worker loses no trial).
        validate: run the model (``model``) with each trial's plan on this many inputs and use its
            measured output error as the error objective.
        validate_mode: ``"steps"`` (``validate`` recorded inputs, teacher-forced: cheap, blind to
            error that compounds over steps) or ``"trajectory"`` (``validate`` whole denoising
            trajectories, final outputs compared: ``validate`` × steps forwards per trial).
        model: model name for :func:`attnsearch.models.load_model`, or a ModelSpec (for ``validate``
            and for head_dim).
        progress: called after every trial with a dict (trial, trials, attention_ms, speedup, error,
            best).
        head_dim, batch: of the attention calls (head_dim: from the model if given, else 128).
        ulysses: Ulysses context-parallel degree the plan will run under: a plan is costed by its
            slowest rank (each rank H/K heads; ``Problem``), against one rank's dense attention.
        portable: False marks the plan non-portable (``Plan.portable``): it then runs at the
            profiled geometry only. Not part of the study: the same trials serve both.
        precisions: what heads' kept blocks may run in ("native", "fp8"); None: every precision the
            profile measured (FP8 where it was profiled with ``--fp8``), each one the hardware table
            must price (``problem.resolve_precisions``).
        sensitivity: error weights per (step, layer, head) — a :class:`~attnsearch.search.sensitivity.Sensitivity`
            or the path of a saved one, measured on this profile's model and steps: each site's
            error counts by how much it moves the model's final output (``error`` and ``max_error``
            are then the weighted RMS rel_err). None: every site alike.
        execution: how the plan's calls will run, one of ``costmodel.EXECUTIONS``: "eager" (each
            call costs at least its host dispatch: small calls are host-bound, FP8's extra launches
            show; needs a table with host costs) or "graph" (device time: CUDA graphs, compiled
            with reduce-overhead, or wherever the host keeps ahead). None: graph. Recorded in the
            plan's ``hardware.execution``.
        residual_steps: reuse residuals across steps (docs/design.md, "Residual reuse"): these
            steps of a sparse range run exactly and the steps after each add what the layer plans
            missed there (``attnsearch.plan.residual_entries``); cost and density count the exact
            steps, the error figure is the layer plans' own (measured as run with ``validate``).
            None: no reuse. ``"profiled"``: where the exact steps go is a knob of the search: each
            profile's own (``profile --residual-steps``; a profile without: no reuse), so several
            profiles of one model at one block size, one per set, let each trial take one set and
            the front hold the best plan of every set (the chosen plan names its set).
        residual_heads: which inexact heads of a residual entry reuse: "all" (default), or
            "searched": the exact solver decides per head, pricing the exact call and the passes a
            reusing head adds against the error its reuse saves; the others run their masks alone
            and keep no residual (less memory).
    Returns:
        OptimizeResult: the plan, where it was written, the chosen trial and why, the Pareto front.
    """
    if not isinstance(trials, int) or trials < 0:
        raise SearchError(f"trials must be an integer ≥ 0 (0: choose from the stored study), got {trials!r}")
    if max_error is not None and not 0 <= max_error <= MAX_ERROR_BUDGET:
        raise SearchError(f"max_error must be in [0, {MAX_ERROR_BUDGET:g}] (a relative error), got {max_error}")
    if target_speedup is not None and not target_speedup > 0:
        raise SearchError(f"target_speedup must be > 0, got {target_speedup}")
    if max_density is not None and not 0 < max_density <= 1:
        raise SearchError(f"max_density must be in (0, 1], got {max_density}")
    if validate < 0:
        raise SearchError(f"validate must be ≥ 0, got {validate}")
    if isinstance(residual_steps, str) and residual_steps != PROFILED:
        raise SearchError(f"residual_steps must be exact steps or {PROFILED!r}, got {residual_steps!r}")
    if residual_heads not in RESIDUAL_HEADS:
        raise SearchError(f"residual_heads must be one of {', '.join(RESIDUAL_HEADS)}, got {residual_heads!r}")
    if residual_heads != "all" and residual_steps is None:
        raise SearchError(f"residual_heads {residual_heads!r}: give residual_steps (without reuse no head reuses)")
    from .validate import VALIDATE_MODES

    if validate_mode not in VALIDATE_MODES:
        raise SearchError(f"validate_mode must be one of {', '.join(VALIDATE_MODES)}, got {validate_mode!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SearchError(f"seed must be an integer ≥ 0, got {seed!r}")
    if not isinstance(portable, bool):
        raise SearchError(f"portable must be true or false, got {portable!r}")
    out = Path(out)
    sensitivity = resolve_sensitivity(sensitivity)
    storage, db = check_outputs_of(profile_path, out, storage, workers)
    started = time.perf_counter()
    profs = _load_profiles(profile_path, residual_steps)
    spec = _load_spec(model) if model is not None else None
    if validate and spec is None:
        raise SearchError("validate needs the model: pass model= (a name or a ModelSpec)")
    if spec is not None:
        fp = profs[0].model.get("fingerprint")
        if fp and spec.fingerprint != fp:
            raise SearchError(f"model {spec.name!r} (fingerprint {spec.fingerprint}) is not the profiled model "
                              f"(fingerprint {fp})")
    if head_dim is None:
        if profs[0].attention.get("head_dim"):
            head_dim = int(profs[0].attention["head_dim"])
        elif spec is not None:
            from .validate import attention_shape

            head_dim = int(attention_shape(spec)[3])
        else:
            head_dim = 128  # profiles written before the attention shape was recorded
    cm = CostModel(hardware, head_dim=head_dim, batch=batch, execution=execution)
    search = _Search.build(profs, cm, max_error=max_error, validate=validate, spec=spec, backend=backend,
                           validate_mode=validate_mode, ulysses=ulysses, precisions=precisions,
                           sensitivity=sensitivity, residual_steps=residual_steps, residual_heads=residual_heads)
    problems = search.problems
    used_precisions = next(iter(problems.values())).precisions

    budgeted = search.budgeted
    settings = {"head_dim": head_dim, "batch": batch, "hardware": cm.table.name, "validate": validate,
                **({"validate_mode": validate_mode} if validate and validate_mode != "steps" else {}),
                "budgeted": budgeted, "max_error": max_error if budgeted else None,
                "block_sizes": search.sizes, "knob_space": 2, **({"ulysses": ulysses} if ulysses > 1 else {}),
                # in the study's fingerprint only when it is not the default native-only search
                **({"precisions": list(used_precisions)} if used_precisions != ("native",) else {}),
                **({"error_weights": sensitivity.digest()} if sensitivity is not None else {}),
                # eager costs (host dispatch floors) are a different objective from device time
                **({"execution": cm.execution} if cm.execution != "graph" else {}),
                **({"residual_steps": PROFILED, "exact_step_sets": [_steps_label(s) for s in search.sets],
                    "reuse_errors": "profiled"} if residual_steps == PROFILED else
                   {"residual_steps": sorted(residual_steps),
                    # the error after an exact step: the profile's error under reuse, else the mask's own
                    "reuse_errors": "profiled" if next(iter(problems.values())).space.reuse_steps else "masks' own"}
                   if residual_steps is not None else {}),
                # in the study's fingerprint only when heads choose (every head reusing: as before)
                **({"residual_heads": residual_heads} if residual_heads != "all" else {})}
    fingerprint = _fingerprint(profs, settings)
    name = study_name or f"attnsearch-{profs[0].model.get('name', 'model')}-{fingerprint}"
    fresh = db is not None and not db.exists()
    made = missing_folders(db) if fresh else []
    ran = 0
    study = None
    import optuna

    try:
        for folder in made:
            folder.mkdir(exist_ok=True)
        # Creating the schema of a new SQLite study is serialised: two runs at once would both
        # create its tables ("table studies already exists").
        with file_lock(db) if db is not None else contextlib.nullcontext():
            rdb = open_storage(storage, heartbeat_s)
            shared = workers > 1 or storage_kind(storage) != "sqlite"  # other processes may sample alongside
            study = _open_study(rdb, name, _sampler_seed(seed, 0) if shared else seed)

        def lock():
            return claim_lock(storage, rdb, name)

        done_before, target = start_run(study, lock, trials, search.seed_params)
        to_run = target - done_before

        def on_trial(p: dict[str, Any]) -> None:
            nonlocal ran
            ran += 1
            if progress is not None:
                progress(p)

        if to_run > 0:
            if workers == 1:
                search.prepare()
                run_trials(study, rdb, lock, target, search.objective, worker=worker_id(0),
                           deadline=time.monotonic() + timeout if timeout else None,
                           on_trial=lambda t: on_trial(_progress(study, t, to_run)))
            else:
                cfg = {"profile": profile_path, "model": (model if isinstance(model, str) else spec) if validate else None,
                       "hardware": hardware, "head_dim": head_dim, "batch": batch, "validate": validate,
                       "validate_mode": validate_mode, "ulysses": ulysses, "precisions": precisions,
                       "backend": backend, "max_error": max_error, "storage": storage, "study": name,
                       "sensitivity": sensitivity, "execution": cm.execution, "residual_steps": residual_steps,
                       "residual_heads": residual_heads,
                       "heartbeat_s": heartbeat_s, "seed": seed, "target": target, "trials": to_run, "timeout": timeout}
                errors = spawn(cfg, workers, on_trial, entry=f"{__name__}:worker_main")
                if errors:
                    raise SearchError(f"optimize: {len(errors)} of {workers} workers failed: " + "; ".join(errors))
        search_s = time.perf_counter() - started

        # The choice: made here, after this command's workers ended, from the stored study alone (a
        # fresh read, trials in number order), so whichever worker or machine ends last, all choose alike.
        study = optuna.load_study(study_name=name, storage=rdb, sampler=optuna.samplers.RandomSampler(seed=0))
        done = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.number)
        if not done:
            raise SearchError(f"study {name!r} in {public_url(storage)} has no completed trial (run with trials ≥ 1)")
        if to_run > 0 and not timeout and len(done) < target:
            raise SearchError(f"study {name!r}: the run stopped at {len(done)} of {target} complete trials (its "
                              f"workers were killed); rerun the same command to resume it")
        front = sorted(study.best_trials, key=lambda t: t.number)
        try:
            if max_density is not None:
                chosen, reason = choose_by_density(done, lambda t: search.problem_of(t.params), search, max_density,
                                                   validate=bool(validate))
            else:
                chosen, reason = choose(front, max_error, target_speedup, validate=bool(validate))
        except BudgetError as err:  # the trials are results: kept, and said so
            raise BudgetError(f"{err}; the study's {len(done)} trials stay in {public_url(storage)} (a rerun "
                              f"with another budget chooses from them)") from None
        if study.user_attrs.get("chosen_trial") != chosen.number:
            study.set_user_attr("chosen_trial", chosen.number)  # what `attnsearch report STUDY.db` marks
        k = search.knobs_of(chosen.params)
        pb = search.problem_of(chosen.params)
        pb._lam_hint.clear()  # the rebuild must not depend on what this process solved before
        a = pb.solve(k)
        figures = pb.figures(a)
        measured = {m: chosen.user_attrs[m] for m in ("rel_l2", "psnr_db") if m in chosen.user_attrs}
        pareto = front_table(front)
        hw = {"device": cm.table.device, "calibration": cm.table.name, "execution": cm.execution}
        plan = pb.plan(a, model=dict(profs[0].model), hardware=hw, predicted=dict(figures), search={
            "study": name, "storage": public_url(storage), "trial": chosen.number, "reason": reason,
            "objectives": {"attention_ms": chosen.values[0], "error": chosen.values[1],
                           "error_metric": error_metric(validate, validate_mode, sensitivity is not None)},
            "error_weights": sensitivity.summary() if sensitivity is not None else None,
            "validation": ({"inputs": validate, "mode": validate_mode, **measured} if validate else None),
            "knobs": k.to_dict(), "lambda_abs": a.lam,
            "settings": {**settings, "max_error": max_error, "target_speedup": target_speedup,
                         "trials_total": len(done), "seed": seed},
            "hardware_note": cm.table.note, "cost_model": cm.describe(),
            "pareto": pareto.head(50).to_dict(orient="records"),
        }, portable=portable)
        path = write_plan(plan, out)  # only this (parent) process writes, atomically (temporary file + rename)
        return OptimizeResult(plan, path, chosen.number, reason, figures, pareto, name, storage, hw, settings,
                              seconds=round(search_s, 2), trials_run=ran)
    except BaseException:
        if fresh and ran == 0 and holds_no_trial(study):
            remove_new_study(db, made)  # a failed first run leaves no empty study behind
        raise


def _load_spec(model):
    if isinstance(model, str):
        from ..models import load_model

        return load_model(model)
    return model


__all__ = ["BudgetError", "OptimizeResult", "choose", "choose_by_density", "front_table", "optimize",
           "HardwareError", "ProfileError", "PROFILED"]
