"""Experts: the transformers of a pipeline that each run a share of the denoising steps.

Wan2.2 A14B holds two transformers with the same architecture: ``transformer`` runs the
high-noise steps (timestep ≥ boundary_ratio · num_train_timesteps) and ``transformer_2`` the
low-noise ones. One profile, and one plan, covers both: step s is run by the expert whose
``steps`` range holds it, and layer l of step s is the l-th self-attention call of *that* expert
(layers are numbered per expert). The record, in a profile's ``model`` metadata and a plan's
``model`` object (plan format version 1 unchanged: ``model`` is free-form metadata):

    "experts": [{"name": "transformer",   "steps": [0, 20],  "fingerprint": "…"},
                {"name": "transformer_2", "steps": [20, 40], "fingerprint": "…"}]

The ranges are [start, stop), in step order, contiguous from 0; names are distinct. A model
without the key is one transformer running every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


class ExpertError(ValueError):
    """A malformed ``experts`` record; the message starts with the offending field."""


@dataclass(frozen=True)
class Expert:
    """One transformer of a pipeline and the denoising steps [start, stop) it runs."""

    name: str
    start: int
    stop: int
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "steps": [self.start, self.stop]}
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        return out


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ExpertError(f"{where}: must be an integer ≥ 0, got {value!r}")
    return value


def parse_experts(data: Any, where: str = "model.experts") -> tuple[Expert, ...]:
    """The experts of a JSON ``experts`` list (the module docstring's rules), or ExpertError."""
    if not isinstance(data, (list, tuple)) or not data:
        raise ExpertError(f"{where}: must be a non-empty list of {{name, steps}} objects, got {data!r}")
    out: list[Expert] = []
    for i, item in enumerate(data):
        at = f"{where}[{i}]"
        if isinstance(item, Expert):
            item = item.to_dict()
        if not isinstance(item, dict):
            raise ExpertError(f"{at}: must be an object with name and steps, got {item!r}")
        unknown = sorted(set(item) - {"name", "steps", "fingerprint"})
        if unknown:
            raise ExpertError(f"{at}: unknown key(s) {', '.join(unknown)} (known: name, steps, fingerprint)")
        name, steps, fp = item.get("name"), item.get("steps"), item.get("fingerprint", "")
        if not isinstance(name, str) or not name:
            raise ExpertError(f"{at}.name: must be a non-empty string, got {name!r}")
        if not isinstance(fp, str):
            raise ExpertError(f"{at}.fingerprint: must be a string, got {fp!r}")
        if not isinstance(steps, (list, tuple)) or len(steps) != 2:
            raise ExpertError(f"{at}.steps: must be [start, stop], got {steps!r}")
        start, stop = _int(steps[0], f"{at}.steps[0]"), _int(steps[1], f"{at}.steps[1]")
        expected = out[-1].stop if out else 0
        if start != expected:
            raise ExpertError(f"{at}.steps: starts at {start}, expected {expected} (ranges are contiguous from 0, "
                              "in step order)")
        if stop <= start:
            raise ExpertError(f"{at}.steps: [{start}, {stop}) is empty")
        if any(e.name == name for e in out):
            raise ExpertError(f"{at}.name: {name!r} is named twice")
        out.append(Expert(name, start, stop, fp))
    return tuple(out)


def experts_of(model_meta: Any, where: str = "model") -> tuple[Expert, ...]:
    """The experts a profile's or plan's ``model`` metadata names; () when it names none."""
    if not isinstance(model_meta, dict) or "experts" not in model_meta:
        return ()
    return parse_experts(model_meta["experts"], f"{where}.experts")


def expert_at(experts: Sequence[Expert], step: int) -> Expert | None:
    """The expert that runs ``step`` (None: no experts, or a step past the last range)."""
    for e in experts:
        if e.start <= step < e.stop:
            return e
    return None


def boundaries(experts: Sequence[Expert]) -> tuple[int, ...]:
    """The steps where one expert hands over to the next (each expert's start but the first)."""
    return tuple(e.start for e in experts[1:])


__all__ = ["Expert", "ExpertError", "boundaries", "expert_at", "experts_of", "parse_experts"]
