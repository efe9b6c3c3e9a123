"""Model registry: a name or ``module:function`` becomes a ModelSpec (model, inputs, geometry).

    >>> spec = load_model("toy-vdit", seed=0, steps=2)
    >>> spec.run()                  # each input is one root forward (one denoising step)

Registered names map to factories in this package, imported only when asked for (MiniLM pulls in
transformers). Anything else is ``package.module:function`` or ``path/to/file.py:function``: the
function takes the options as keyword arguments and returns a ModelSpec or a
``(model, inputs, geometry)`` tuple, which is wrapped into one (fingerprint computed here).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..geometry import Geometry

if TYPE_CHECKING:  # pragma: no cover - pandas is imported lazily by the models that have ground truth
    import pandas as pd

#: Registered model names → "module:function" of their factory.
REGISTRY: dict[str, str] = {
    "toy-vdit": "attnsearch.models.toy_vdit:build",
    "minilm": "attnsearch.models.minilm:build",
    "mini-vdit": "attnsearch.models.mini_vdit:build",
}

#: Spec prefixes ``<prefix>:<argument>`` → factory "module:function", called as factory(argument, **options).
PREFIXES: dict[str, str] = {
    "diffusers": "attnsearch.models.diffusers:load_pretrained",          # diffusers:<local path or repo id>
    "diffusers-random": "attnsearch.models.diffusers:load_random",       # diffusers-random:<preset>
}


class ModelUnavailableError(ImportError, ValueError):
    """A registered model's optional dependency is not installed (a ValueError for the CLI, an
    ImportError for ``except ImportError`` callers)."""


#: Elements sampled per tensor for the fingerprint: enough to see any fine-tune, cheap at 14B.
_FINGERPRINT_SAMPLES = 4096
#: HF config entries that vary with the install, not the model.
_VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "name_or_path", "torch_dtype", "dtype"})


def split_input(entry: Any) -> tuple[tuple, dict[str, Any]]:
    """One input entry → (args, kwargs) of a root forward.

    A dict is keyword arguments; ``(tuple_or_list, dict)`` is (args, kwargs); any other tuple or
    list is positional arguments; anything else (e.g. a lone tensor) is the single argument.
    """
    if isinstance(entry, dict):
        return (), dict(entry)
    if (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], (tuple, list))
            and isinstance(entry[1], dict)):
        return tuple(entry[0]), dict(entry[1])
    if isinstance(entry, (tuple, list)):
        return tuple(entry), {}
    return (entry,), {}


@dataclass
class ModelSpec:
    """A model ready to profile.

    ``inputs``: one entry per step (a denoising step is one root forward), in the forms
    ``split_input`` accepts. ``fingerprint``: stable hash of architecture and weights.
    ``ground_truth``: planted patterns, for models that have them (toy-vdit): columns layer,
    head, pattern, params (canonical JSON). ``prompts``: the prompts every step's batch holds, in
    equal consecutive shares (prompt i: batch elements [i·B/P, (i+1)·B/P), its CFG branches
    included); empty when the inputs are not split by prompt. ``experts``: for a pipeline of
    several transformers (Wan2.2), which one runs which steps (:mod:`attnsearch.experts`).

    Whole trajectories, for models with a sampler (trajectory validation): ``trajectories(n)``
    runs the first ``n`` (≤ ``num_trajectories``) of the spec's denoising trajectories — its fixed
    noise and conditions, one root forward per step, as ``inputs`` number them, all ``n`` in one
    batch — with whatever attention is active, and returns their final outputs (frames in [0, 1]
    for video models); ``trajectory_range`` is their data range (None: the dense reference's);
    ``pipeline``: the object a plan is applied to while they run, where that is not ``model`` (a
    diffusers pipeline: ``apply(pipeline, plan)`` numbers its steps by timestep, CFG branches one
    step, and routes Wan2.2's experts).
    """

    name: str
    model: torch.nn.Module
    geometry: Geometry
    inputs: list
    fingerprint: str
    ground_truth: pd.DataFrame | None = None
    prompts: tuple[str, ...] = ()
    experts: tuple = ()
    trajectories: Callable[[int], torch.Tensor] | None = None
    num_trajectories: int = 0
    trajectory_range: float | None = None
    pipeline: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise ValueError(f"model {self.name!r}: model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not isinstance(self.geometry, Geometry):
            raise ValueError(f"model {self.name!r}: geometry must be an attnsearch.Geometry, "
                             f"got {type(self.geometry).__name__}")
        if not isinstance(self.inputs, (list, tuple)) or not self.inputs:
            raise ValueError(f"model {self.name!r}: inputs must be a non-empty list (one entry per step)")
        self.inputs = list(self.inputs)
        if (self.trajectories is None) != (self.num_trajectories == 0):
            raise ValueError(f"model {self.name!r}: trajectories and num_trajectories ≥ 1 go together")
        self.prompts = tuple(self.prompts)
        self.experts = tuple(self.experts)

    @property
    def num_steps(self) -> int:
        return len(self.inputs)

    def run(self, steps: int | None = None) -> Any:
        """Run the first ``steps`` inputs in order (all when None), one root forward each, under
        ``torch.no_grad``; return the last output."""
        n = self.num_steps if steps is None else steps
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.num_steps:
            raise ValueError(f"model {self.name!r}: steps must be an integer in [1, {self.num_steps}], got {steps!r}")
        out = None
        with torch.no_grad():
            for entry in self.inputs[:n]:
                args, kwargs = split_input(entry)
                out = self.model(*args, **kwargs)
        return out


def fingerprint(model: torch.nn.Module, config: Any = None) -> str:
    """Stable 16-hex-digit hash of a model's architecture and weights.

    Hashes the module tree (every submodule's name and class name), ``config`` (JSON, or the
    model's own HF-style ``config``), and for every parameter and buffer its name, dtype, shape and
    the exact bytes of up to 4096 evenly spaced elements — exact and deterministic, and cheap even
    for billions of parameters (it never reduces a whole tensor). Same weights → same fingerprint,
    on every machine and torch version: nothing hashed is a module's ``repr``, whose text changes
    between torch releases.
    """
    h = hashlib.sha256()
    h.update(type(model).__qualname__.encode())
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__qualname__};".encode())
    if config is None and hasattr(model, "config") and hasattr(model.config, "to_dict"):
        config = {k: v for k, v in model.config.to_dict().items()  # drop paths and library versions
                  if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    if config is not None:
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for name, t in tensors:
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > _FINGERPRINT_SAMPLES:
            idx = torch.arange(_FINGERPRINT_SAMPLES, device=flat.device) * (flat.numel() - 1) // (_FINGERPRINT_SAMPLES - 1)
            flat = flat[idx]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _resolve(spec: str) -> tuple[str, Callable[..., Any]]:
    """Registered name or ``module:function`` / ``file.py:function`` → (display name, factory)."""
    target = REGISTRY.get(spec)
    prefix, _, argument = spec.partition(":")
    if target is None and prefix in PREFIXES:
        if not argument:
            raise ValueError(f"model spec {spec!r}: give {prefix}:<argument>")
        _, factory = _resolve(PREFIXES[prefix])
        return spec, functools.partial(factory, argument)
    if target is None and ":" not in spec:
        raise ValueError(f"unknown model {spec!r} (known: {', '.join(REGISTRY)}; or give module:function "
                         "or path/to/file.py:function)")
    location, _, func_name = (target or spec).rpartition(":")
    if not location or not func_name:
        raise ValueError(f"model spec {spec!r} must be module:function or path/to/file.py:function")
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location)
        if not path.is_file():
            raise ValueError(f"model spec {spec!r}: file {location} does not exist")
        mod_name = f"_attnsearch_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ValueError(f"model spec {spec!r}: importing {location} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except Exception as exc:
            raise ValueError(f"model spec {spec!r}: cannot import module {location!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"model spec {spec!r}: {location} has no callable {func_name!r}")
    return spec, func


def _check_options(spec: str, func: Callable[..., Any], options: dict[str, Any]) -> None:
    """Name the options a factory does not accept, instead of a TypeError from deep inside."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"model {spec!r} does not accept option(s) {', '.join(unknown)} "
                         f"(accepts: {', '.join(accepted) or 'none'})")


def geometry_hint(spec: str, **options: Any) -> Geometry | None:
    """The geometry a model will have, read from the factory's ``frames``/``height``/``width``
    (``text_tokens``) options and defaults without building it; None when the factory does not
    take them. For checks before an expensive build (a size estimate)."""
    if not isinstance(spec, str) or not spec:
        return None
    _, factory = _resolve(spec)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    values = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    values.update(options)
    fields = {k: values.get(k) for k in ("frames", "height", "width", "text_tokens")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for k, v in fields.items()
               if k != "text_tokens"):
        return None
    text = fields["text_tokens"] if isinstance(fields["text_tokens"], int) and fields["text_tokens"] > 0 else 0
    try:
        return Geometry(fields["frames"], fields["height"], fields["width"], text)
    except ValueError:
        return None


def load_model(spec: str, **options: Any) -> ModelSpec:
    """Build the model named by ``spec`` with factory ``options`` (e.g. seed, steps, frames)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    name, factory = _resolve(spec)
    _check_options(spec, factory, options)
    try:
        result = factory(**options)
    except (ValueError, ModelUnavailableError, KeyboardInterrupt):
        raise  # the factory's own word on bad options
    except Exception as exc:  # noqa: BLE001  (user code: its failure is one line naming it)
        raise ValueError(f"model {spec!r}: the factory raised {type(exc).__name__}: "
                         f"{str(exc).strip()[:300]}") from None
    if isinstance(result, ModelSpec):
        return result
    if not (isinstance(result, tuple) and len(result) == 3):
        raise ValueError(f"model {spec!r}: factory must return a ModelSpec or (model, inputs, geometry), "
                         f"got {type(result).__name__}")
    model, inputs, geometry = result
    if isinstance(geometry, dict):
        geometry = Geometry.from_dict(geometry)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model {spec!r}: factory returned {type(model).__name__} as the model, "
                         "expected a torch.nn.Module")
    return ModelSpec(name=name, model=model, geometry=geometry, inputs=inputs, fingerprint=fingerprint(model))


__all__ = ["PREFIXES", "REGISTRY", "ModelSpec", "ModelUnavailableError", "fingerprint", "geometry_hint", "load_model",
           "split_input"]
