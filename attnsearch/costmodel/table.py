"""The hardware table (``kernels/<gpu>.json``): its format, reading, writing and finding.

Format (docs/design.md): ``format``, ``version``, ``device`` {name, sm_count}, ``software``,
``date``, ``measured``, ``model`` {form, order, units}, ``params`` {sparse {variant_key(D, B,
precision): LaunchParams}, dense {d{D}: LaunchParams}, fill: FillParams, quantize: FillParams
(optional: the FP8 quantization pass), host: HostParams (optional: host dispatch costs of eager
calls)}, ``fit`` (per-kernel errors of the fit), ``extra``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..atomic_io import write_text_atomic
from ..runtime.backends import TritonBackend
from ..layer_plan import PRECISIONS
from ..runtime.schedule import ORDERS, list_schedule

FORMAT = "attnsearch-kernels"
VERSION = 1
#: The table used when none is named and no GPU is present: the H100 the project calibrated.
DEFAULT_TABLE = "nvidia-h100-80gb-hbm3"
#: Tile edge of the dense (cuDNN) model's work units.
DENSE_TILE = 128


class HardwareError(ValueError):
    """A hardware table is missing, of another format, or lacks what a prediction needs."""


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' → 'nvidia-h100-80gb-hbm3' (the table's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class LaunchParams:
    """Fitted constants of one kernel (a sparse (head_dim, block size) variant, or cuDNN at a head_dim).

    launch_us: fixed cost of a launch. tile_ns: ns per tile of one resident program.
    item_tiles: an item's fixed cost (Q load, epilogue) in tiles. slots_per_sm: resident programs
    per SM.
    """

    launch_us: float
    tile_ns: float
    item_tiles: float
    slots_per_sm: int
    #: Optional ((N, factor), ...): tile_ns × factor, log-linear in N between the listed N and flat
    #: beyond. The per-tile rate drifts with the sequence length (cuDNN's kernel choice; for the
    #: sparse kernel, K/V reuse in L2 falls as N grows): it is tabulated from the fit's residuals.
    n_scale: tuple[tuple[float, float], ...] = ()

    NAMES = ("launch_us", "tile_ns", "item_tiles", "slots_per_sm")

    def tile_ns_at(self, num_tokens) -> np.ndarray:
        if not self.n_scale:
            return np.full(np.shape(num_tokens), self.tile_ns, dtype=np.float64)
        ns, fs = zip(*self.n_scale)
        f = np.interp(np.log(np.asarray(num_tokens, dtype=np.float64)), np.log(ns), fs)
        return self.tile_ns * f

    def slots(self, sm_count: int) -> int:
        return sm_count * self.slots_per_sm

    def ms(self, lengths: np.ndarray, sm_count: int, num_tokens=None) -> float:
        """Latency of one launch whose items, in launch order, keep ``lengths`` tiles each, over a
        sequence of ``num_tokens`` (None: the untabulated tile time)."""
        lengths = np.asarray(lengths, dtype=np.float64)
        if lengths.size == 0:
            return 0.0
        span = list_schedule(lengths + self.item_tiles, self.slots(sm_count))
        return self.launch_us * 1e-3 + span * self._tile(num_tokens) * 1e-6

    def _tile(self, num_tokens):
        return self.tile_ns if num_tokens is None else self.tile_ns_at(num_tokens)

    def uniform_ms(self, items, length, sm_count: int, num_tokens=None) -> np.ndarray:
        """Latency of launches of ``items`` equal items (vectorised): ceil(items / slots) waves."""
        items, length = np.asarray(items, dtype=np.float64), np.asarray(length, dtype=np.float64)
        waves = np.ceil(items / self.slots(sm_count))
        tile = self._tile(num_tokens)
        return np.where(items > 0, self.launch_us * 1e-3 + waves * (length + self.item_tiles) * tile * 1e-6, 0.0)

    def throughput_ms(self, tiles, items, sm_count: int, num_tokens=None) -> np.ndarray:
        """The additive form: (tiles + item_tiles · items) spread evenly over every slot."""
        units = np.asarray(tiles, dtype=np.float64) + self.item_tiles * np.asarray(items, dtype=np.float64)
        return units * self._tile(num_tokens) * 1e-6 / self.slots(sm_count)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"launch_us": float(self.launch_us), "tile_ns": float(self.tile_ns),
                               "item_tiles": float(self.item_tiles), "slots_per_sm": int(self.slots_per_sm)}
        if self.n_scale:
            out["n_scale"] = [[float(n), float(f)] for n, f in self.n_scale]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> LaunchParams:
        missing = [k for k in cls.NAMES if k not in data]
        if missing:
            raise HardwareError(f"{path}: missing parameter(s) {', '.join(missing)}")
        values: dict[str, Any] = {}
        for k in cls.NAMES:
            v = data[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise HardwareError(f"{path}.{k}: must be a finite number ≥ 0, got {v!r}")
            values[k] = float(v)
        if values["slots_per_sm"] < 1 or values["slots_per_sm"] != int(values["slots_per_sm"]):
            raise HardwareError(f"{path}.slots_per_sm: must be an integer ≥ 1, got {data['slots_per_sm']!r}")
        if values["tile_ns"] <= 0:
            raise HardwareError(f"{path}.tile_ns: must be > 0, got {values['tile_ns']}")
        values["slots_per_sm"] = int(values["slots_per_sm"])
        scale = data.get("n_scale", [])
        try:
            pairs = tuple((float(n), float(f)) for n, f in scale)
        except (TypeError, ValueError):
            raise HardwareError(f"{path}.n_scale: must be a list of [N, factor] pairs, got {scale!r}") from None
        if any(not (n >= 1 and f > 0) for n, f in pairs) or list(pairs) != sorted(pairs):
            raise HardwareError(f"{path}.n_scale: needs ascending N ≥ 1 and factors > 0, got {scale!r}")
        return cls(**values, n_scale=pairs)


@dataclass(frozen=True)
class FillParams:
    """A memory-bound pass, launch_us + bytes / (gbps · 1e9): the zero fill of skip heads' outputs
    (bytes written), the FP8 quantization of q, k and v (bytes of the inputs read)."""

    launch_us: float
    gbps: float

    def ms(self, nbytes) -> np.ndarray:
        nbytes = np.asarray(nbytes, dtype=np.float64)
        return np.where(nbytes > 0, self.launch_us * 1e-3 + nbytes / (self.gbps * 1e6), 0.0)

    def to_dict(self) -> dict[str, float]:
        return {"launch_us": float(self.launch_us), "gbps": float(self.gbps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> FillParams:
        try:
            launch, gbps = float(data["launch_us"]), float(data["gbps"])
        except (KeyError, TypeError, ValueError):
            raise HardwareError(f"{path}: needs numbers launch_us and gbps, got {dict(data)!r}") from None
        if not (launch >= 0 and gbps > 0):
            raise HardwareError(f"{path}: launch_us must be ≥ 0 and gbps > 0, got {launch}, {gbps}")
        return cls(launch, gbps)


#: The parts of a sparse call whose host (CPU) dispatch cost :class:`HostParams` adds to its base:
#: a native launch, an FP8 launch with its quantization pass, the skip heads' zero fill.
HOST_PARTS = ("native", "fp8", "fill")


@dataclass(frozen=True)
class HostParams:
    """Host (CPU) time to dispatch one eager attention call, µs: the floor of its latency when the
    GPU waits on the host (the device work is shorter), the whole of it for a small call.

    ``sparse[variant_key(D, B)]`` = {"base_us", "native_us", "fp8_us", "fill_us"}: a sparse call
    costs the base plus each part (:data:`HOST_PARTS`) it has; ``dense[f"d{D}"]``: a cuDNN call.
    Measured with the GPU held busy (``bench.host_us``), so no call waits for the device.
    """

    sparse: dict[str, dict[str, float]]
    dense: dict[str, float]

    FIELDS = ("base_us",) + tuple(f"{p}_us" for p in HOST_PARTS)

    def sparse_us(self, head_dim: int, block_size: int, parts: Iterable[str], where: str = "") -> float:
        """Host µs of a sparse call of this variant with ``parts`` (a subset of HOST_PARTS)."""
        key = variant_key(head_dim, block_size)
        if key not in self.sparse:
            have = ", ".join(sorted(self.sparse)) or "none"
            raise HardwareError(f"{where or 'hardware table'}: no host dispatch cost of sparse calls at head_dim "
                                f"{head_dim}, block size {block_size} (measured: {have}); re-run `attnsearch calibrate`")
        row = self.sparse[key]
        return row["base_us"] + sum(row[f"{p}_us"] for p in set(parts))

    def dense_us(self, head_dim: int, where: str = "") -> float:
        key = f"d{head_dim}"
        if key not in self.dense:
            raise HardwareError(f"{where or 'hardware table'}: no host dispatch cost of cuDNN calls at head_dim "
                                f"{head_dim}; re-run `attnsearch calibrate`")
        return self.dense[key]

    def to_dict(self) -> dict[str, Any]:
        return {"sparse": {k: {f: float(v[f]) for f in self.FIELDS} for k, v in sorted(self.sparse.items())},
                "dense": {k: float(v) for k, v in sorted(self.dense.items())}}

    @classmethod
    def from_dict(cls, data: Any, path: str) -> HostParams:
        if not isinstance(data, Mapping) or not isinstance(data.get("sparse"), Mapping) \
                or not isinstance(data.get("dense"), Mapping):
            raise HardwareError(f"{path}: must be {{\"sparse\": {{...}}, \"dense\": {{...}}}}")

        def us(value: Any, where: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1e7):
                raise HardwareError(f"{where}: must be a number of µs in [0, 1e7), got {value!r}")
            return float(value)

        sparse = {}
        for key, row in data["sparse"].items():
            try:
                parse_variant_key(key)
            except HardwareError as err:
                raise HardwareError(f"{path}.sparse: {err}") from None
            if not isinstance(row, Mapping) or set(row) != set(cls.FIELDS):
                raise HardwareError(f"{path}.sparse.{key}: needs exactly {', '.join(cls.FIELDS)}")
            sparse[key] = {f: us(row[f], f"{path}.sparse.{key}.{f}") for f in cls.FIELDS}
        dense = {}
        for key, value in data["dense"].items():
            if not re.fullmatch(r"d[1-9][0-9]*", str(key)):
                raise HardwareError(f"{path}.dense: key {key!r} is not d{{head_dim}}")
            dense[key] = us(value, f"{path}.dense.{key}")
        return cls(sparse, dense)


_VARIANT = re.compile(r"d([1-9][0-9]*)_b([1-9][0-9]*)(?:_([a-z0-9]+))?")


def variant_key(head_dim: int, block_size: int, precision: str = "native") -> str:
    """Key of a sparse-kernel variant in ``params.sparse``: "d{D}_b{B}" (native precision),
    "d{D}_b{B}_{precision}" otherwise ("d128_b128_fp8")."""
    if precision not in PRECISIONS:
        raise HardwareError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
    return f"d{head_dim}_b{block_size}" + ("" if precision == "native" else f"_{precision}")


def parse_variant_key(key: str) -> tuple[int, int, str]:
    """(head_dim, block size, precision) of a :func:`variant_key` (HardwareError for another string)."""
    m = _VARIANT.fullmatch(key) if isinstance(key, str) else None
    if m is not None and (m.group(3) or "native") in PRECISIONS:
        parsed = int(m.group(1)), int(m.group(2)), m.group(3) or "native"
        if variant_key(*parsed) == key:
            return parsed
    raise HardwareError(f"sparse variant {key!r}: not d{{D}}_b{{B}} or d{{D}}_b{{B}}_{{precision}} "
                        f"(precision one of {', '.join(PRECISIONS[1:])})")


def _fp8_advice() -> str:
    need = ".".join(map(str, TritonBackend.fp8_capability))
    return (f"calibrate on a GPU with FP8 tensor cores (compute capability ≥ {need}) with "
            "`attnsearch calibrate`, which measures FP8 there")


@dataclass
class HardwareTable:
    """One GPU's calibration: the fitted parameters and the fit's summary (the raw points are kept
    apart: ``costmodel.calibrate.save_points``).

    ``sparse[variant_key(D, B, precision)]``, ``dense[f"d{D}"]``: LaunchParams; ``fill``: FillParams;
    ``quantize``: FillParams of the FP8 quantization pass, or None (a table of native kernels only).
    ``source`` is the file it came from; ``note`` says why this table was chosen.
    """

    device: str
    sm_count: int
    sparse: dict[str, LaunchParams]
    dense: dict[str, LaunchParams]
    fill: FillParams
    quantize: FillParams | None = None
    #: Host dispatch costs of eager calls (None: a table calibrated before they were measured).
    host: HostParams | None = None
    software: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    measured: bool = True
    fit: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    order: str = "head"
    source: str = ""
    note: str = ""

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source else gpu_slug(self.device)

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions the table costs: "native" where it has a native sparse variant, "fp8"
        where it has an FP8 one and the quantization pass."""
        held = {parse_variant_key(k)[2] for k in self.sparse}
        return tuple(p for p in PRECISIONS if p in held and (p == "native" or self.quantize is not None))

    def sparse_params(self, head_dim: int, block_size: int, precision: str = "native") -> LaunchParams:
        key = variant_key(head_dim, block_size, precision)
        if key not in self.sparse:
            have = ", ".join(sorted(self.sparse)) or "none"
            if precision != "native":
                todo = _fp8_advice() if precision not in self.precisions else "re-run `attnsearch calibrate`"
                raise HardwareError(f"{self.source or self.device}: no {precision.upper()} sparse-kernel calibration "
                                    f"for head_dim {head_dim}, block size {block_size} (calibrated: {have}); {todo}")
            raise HardwareError(f"{self.source or self.device}: no sparse-kernel calibration for head_dim {head_dim}, "
                                f"block size {block_size} (calibrated: {have})")
        return self.sparse[key]

    def quantize_params(self) -> FillParams:
        """The FP8 quantization pass (HardwareError where the table has none)."""
        if self.quantize is None:
            raise HardwareError(f"{self.source or self.device}: no calibration of the FP8 quantization pass; "
                                + _fp8_advice())
        return self.quantize

    def dense_params(self, head_dim: int) -> LaunchParams:
        key = f"d{head_dim}"
        if key not in self.dense:
            have = ", ".join(sorted(self.dense)) or "none"
            raise HardwareError(f"{self.source or self.device}: no dense (cuDNN) calibration for head_dim {head_dim} "
                                f"(calibrated: {have})")
        return self.dense[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION,
            "device": {"name": self.device, "sm_count": self.sm_count},
            "software": dict(self.software), "date": self.date, "measured": self.measured,
            "model": {"form": "launch + tile_ns · list-scheduling makespan of the items (item_tiles + kept tiles "
                              "each, in the runtime's order) on SMs·slots_per_sm slots; fill"
                              + (" and quantize" if self.quantize is not None else "")
                              + ": launch + bytes/bandwidth", "order": self.order,
                      "units": "launch_us µs, tile_ns ns, item_tiles tiles, gbps GB/s; ms out"},
            "params": {"sparse": {k: v.to_dict() for k, v in sorted(self.sparse.items())},
                       "dense": {k: v.to_dict() for k, v in sorted(self.dense.items())},
                       "fill": self.fill.to_dict(),
                       **({"quantize": self.quantize.to_dict()} if self.quantize is not None else {}),
                       **({"host": self.host.to_dict()} if self.host is not None else {})},
            "fit": self.fit, **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> HardwareTable:
        where = source or "hardware table"
        if not isinstance(data, Mapping):
            raise HardwareError(f"{where}: not a JSON object")
        fmt, ver = data.get("format"), data.get("version")
        if fmt != FORMAT or ver != VERSION or isinstance(ver, bool):
            raise HardwareError(f"{where}: format {fmt!r} version {ver!r} is not a hardware table this attnsearch "
                                f"reads ({FORMAT!r} version {VERSION}); re-run `attnsearch calibrate`")
        dev = data.get("device")
        if not isinstance(dev, Mapping) or not isinstance(dev.get("name"), str) or not isinstance(dev.get("sm_count"), int):
            raise HardwareError(f"{where}: device must be {{\"name\": str, \"sm_count\": int}}")
        if isinstance(dev["sm_count"], bool) or not 1 <= dev["sm_count"] <= 100_000:
            raise HardwareError(f"{where}: device.sm_count must be an SM count in [1, 100000], got {dev['sm_count']!r}")
        params = data.get("params")
        if not isinstance(params, Mapping) or not all(k in params for k in ("sparse", "dense", "fill")):
            raise HardwareError(f"{where}: params must hold sparse, dense and fill")
        for key in ("software", "fit", "extra", "model"):
            if not isinstance(data.get(key, {}), Mapping):
                raise HardwareError(f"{where}: {key} must be a JSON object")
        capability = data.get("software", {}).get("capability")
        if capability is not None and not (isinstance(capability, (list, tuple)) and len(capability) == 2 and all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 100 for c in capability)):
            raise HardwareError(f"{where}: software.capability must be [major, minor] (e.g. [9, 0]), got {capability!r}")
        for kind in ("sparse", "dense"):
            if not isinstance(params[kind], Mapping):
                raise HardwareError(f"{where}: params.{kind} must be a JSON object")
        for k in params["sparse"]:
            try:
                parse_variant_key(k)
            except HardwareError as err:
                raise HardwareError(f"{where}: params.sparse: {err}") from None
        sparse = {k: LaunchParams.from_dict(v, f"{where}: params.sparse.{k}") for k, v in params["sparse"].items()}
        dense = {k: LaunchParams.from_dict(v, f"{where}: params.dense.{k}") for k, v in params["dense"].items()}
        quantize = params.get("quantize")
        if quantize is not None and not isinstance(quantize, Mapping):
            raise HardwareError(f"{where}: params.quantize must be a JSON object")
        host = params.get("host")
        return cls(device=dev["name"], sm_count=dev["sm_count"], sparse=sparse, dense=dense,
                   fill=FillParams.from_dict(params["fill"], f"{where}: params.fill"),
                   quantize=None if quantize is None else FillParams.from_dict(quantize, f"{where}: params.quantize"),
                   host=None if host is None else HostParams.from_dict(host, f"{where}: params.host"),
                   software=dict(data.get("software", {})), date=str(data.get("date", "")),
                   measured=bool(data.get("measured", True)), fit=dict(data.get("fit", {})), extra=dict(data.get("extra", {})),
                   order=_order(data.get("model", {}).get("order", "head"), where), source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON (atomically; the folder is created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _order(value: Any, where: str) -> str:
    if value not in ORDERS:
        raise HardwareError(f"{where}: model.order must be one of {ORDERS}, got {value!r}")
    return value


# --- finding tables ----------------------------------------------------------------------------


def kernels_dirs() -> list[Path]:
    """Where tables are looked up: $ATTNSEARCH_KERNELS, ./kernels, the source tree's kernels/ (an
    editable install), then <prefix>/share/attnsearch/kernels (where a wheel installs the shipped
    tables: pyproject's data-files)."""
    import sys

    dirs = []
    if os.environ.get("ATTNSEARCH_KERNELS"):
        dirs.append(Path(os.environ["ATTNSEARCH_KERNELS"]))
    dirs += [Path.cwd() / "kernels", Path(__file__).resolve().parents[2] / "kernels",
             Path(sys.prefix) / "share" / "attnsearch" / "kernels"]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _read(path: Path) -> HardwareTable:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise HardwareError(f"{path}: cannot read hardware table ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise HardwareError(f"{path}: not a JSON hardware table ({type(err).__name__}: {err})".replace("\n", " ")) from None
    try:
        return HardwareTable.from_dict(data, str(path))
    except HardwareError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        # A field of the wrong JSON type (an object where a number belongs, a list for an object):
        # the file is not a table this version wrote.
        raise HardwareError(f"{path}: malformed hardware table ({type(err).__name__}: {err})") from None


def load_hardware(spec: str | os.PathLike | HardwareTable | None = None) -> HardwareTable:
    """The hardware table to cost plans with.

    ``spec``: a HardwareTable; a path to a table JSON; a GPU name or slug ("nvidia-h100-80gb-hbm3",
    "NVIDIA H100 80GB HBM3") looked up in :func:`kernels_dirs`; or None: the table of this machine's
    GPU when there is one and it is calibrated, else the shipped H100 table. ``note`` of the result
    says which table was taken and why.
    """
    if isinstance(spec, HardwareTable):
        return spec
    if spec is not None and (str(spec).endswith(".json") or os.sep in str(spec)):
        table = _read(Path(spec))
        table.note = f"hardware table {spec} (as given)"
        return table
    reason = ""
    if spec is None:
        local = local_gpu()
        if local is not None:
            found = _find(gpu_slug(local))
            if found is not None:
                table = _read(found)
                table.note = f"calibration of this machine's {local} ({found})"
                return table
            reason = f"no calibration for this machine's {local} (run `attnsearch calibrate`); "
        else:
            reason = "no GPU here; "
        spec = DEFAULT_TABLE
    found = _find(gpu_slug(str(spec)))
    if found is None:
        looked = ", ".join(str(d) for d in kernels_dirs())
        raise HardwareError(f"no hardware table named {spec!r} (looked for {gpu_slug(str(spec))}.json in {looked})")
    table = _read(found)
    table.note = f"{reason}using the shipped table {found.name} ({table.device})"
    return table


def _find(slug: str) -> Path | None:
    for d in kernels_dirs():
        p = d / f"{slug}.json"
        if p.is_file():
            return p
    return None


def local_gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001  (a broken CUDA install means: no usable GPU here)
        return None


__all__ = ["DEFAULT_TABLE", "DENSE_TILE", "FORMAT", "FillParams", "HOST_PARTS", "HardwareError", "HardwareTable",
           "HostParams", "LaunchParams",
           "VERSION", "gpu_slug", "kernels_dirs", "load_hardware", "parse_variant_key", "variant_key"]
