"""Predicted attention latency on one GPU, from that GPU's calibration table (``kernels/<gpu>.json``).

Why this form
-------------
The runtime runs a sparse layer as ONE fused launch over every computed head (block_tables'
``fusion="layer"``): a work list of items (batch, head, query block) in a fixed order (heads by
total work, heaviest first, query blocks in order inside a head), each item walking its kept key
blocks. Dense layers run cuDNN SDPA; skip heads are a zero fill. So a layer costs at most three
things, each with a small physical model:

* **sparse launch** ``t = launch + tile_ns · makespan`` where ``makespan`` (in tiles) is greedy
  list scheduling of the work list, in the runtime's order, on ``SMs × slots_per_sm`` resident
  programs, item i lasting ``item_tiles + kept_i`` tiles. This single term is the roofline
  throughput (Σ tiles / slots at the saturated per-program rate: one B×B tile is 4·B²·D flops
  against 2·B·D·2 bytes of K/V, compute-bound, so one rate per (head_dim, block size)), the wave
  quantisation (few items: one wave costs its longest item) and the load imbalance (a dense head's
  long rows, text rows, the tail of the last head) — all from the actual row lengths, not a proxy.
  Four constants per kernel variant, fitted on measured layers (``attnsearch.calibrate``).
* **dense** (cuDNN): the same form on 128-row tiles where every item has every key tile (list
  scheduling of equal items is ``ceil(items / slots)`` waves).
* **zero fill** of skip heads: ``launch + bytes / bandwidth``.

Latency is device time (CUDA-graph replay in calibration): host dispatch, hidden whenever the GPU
is the bottleneck — always at video-DiT sizes — is recorded in the table but not added.

For the search the sparse launch is made additive over heads (:meth:`CostModel.head_work_ms`):
each head contributes its share of the throughput, Σ (kept + item_tiles) · tile_ns / slots, and
the launch is a per-layer overhead. That drops the scheduling tail (under a few percent once a
layer has several waves of items: any video-DiT size) and the one-wave regime of tiny layers; the
search therefore re-costs chosen layers with the full model (:meth:`CostModel.layer_ms`) where
they are small, and reports the full model's figures for the final plan.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMAT = "attnsearch-kernels"
VERSION = 1
#: The table used when none is named and no GPU is present: the H100 the project calibrated.
DEFAULT_TABLE = "nvidia-h100-80gb-hbm3"
#: Tile edge of the dense (cuDNN) model's work units.
DENSE_TILE = 128
#: Work orders of the runtime's fused launch the model knows (block_tables.ORDERS).
ORDERS = ("head", "lpt")
#: "head" order: items keeping more than this many times the mean go first (block_tables.BIG_ITEM).
BIG_ITEM = 2.0


class HardwareError(ValueError):
    """A hardware table is missing, of another format, or lacks what a prediction needs."""


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' → 'nvidia-h100-80gb-hbm3' (the table's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def list_schedule(durations: np.ndarray, slots: int) -> float:
    """Makespan of greedy list scheduling: items start in order on the first free of ``slots``."""
    n = len(durations)
    if n == 0:
        return 0.0
    if n <= slots:
        return float(durations.max())
    free = [float(x) for x in durations[:slots]]
    heapq.heapify(free)
    push = heapq.heapreplace
    for x in durations[slots:].tolist():
        push(free, free[0] + x)
    return max(free)


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
    #: beyond (cuDNN is a black box whose per-tile rate drifts with N; it is tabulated, not modelled).
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

    def ms(self, lengths: np.ndarray, sm_count: int) -> float:
        """Latency of one launch whose items, in launch order, keep ``lengths`` tiles each."""
        lengths = np.asarray(lengths, dtype=np.float64)
        if lengths.size == 0:
            return 0.0
        span = list_schedule(lengths + self.item_tiles, self.slots(sm_count))
        return self.launch_us * 1e-3 + span * self.tile_ns * 1e-6

    def uniform_ms(self, items, length, sm_count: int, num_tokens=None) -> np.ndarray:
        """Latency of launches of ``items`` equal items (vectorised): ceil(items / slots) waves."""
        items, length = np.asarray(items, dtype=np.float64), np.asarray(length, dtype=np.float64)
        waves = np.ceil(items / self.slots(sm_count))
        tile = self.tile_ns if num_tokens is None else self.tile_ns_at(num_tokens)
        return np.where(items > 0, self.launch_us * 1e-3 + waves * (length + self.item_tiles) * tile * 1e-6, 0.0)

    def throughput_ms(self, tiles, items, sm_count: int) -> np.ndarray:
        """The additive form: (tiles + item_tiles · items) spread evenly over every slot."""
        units = np.asarray(tiles, dtype=np.float64) + self.item_tiles * np.asarray(items, dtype=np.float64)
        return units * self.tile_ns * 1e-6 / self.slots(sm_count)

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
    """Zero fill of skip heads' outputs: launch_us + bytes / (gbps · 1e9)."""

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


def variant_key(head_dim: int, block_size: int) -> str:
    return f"d{head_dim}_b{block_size}"


@dataclass
class HardwareTable:
    """One GPU's calibration: fitted parameters plus the measurements they were fitted to.

    ``sparse[variant_key(D, B)]``, ``dense[f"d{D}"]``: LaunchParams; ``fill``: FillParams.
    ``source`` is the file it came from; ``note`` says why this table was chosen.
    """

    device: str
    sm_count: int
    sparse: dict[str, LaunchParams]
    dense: dict[str, LaunchParams]
    fill: FillParams
    software: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    measured: bool = True
    points: list[dict[str, Any]] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    order: str = "head"
    source: str = ""
    note: str = ""

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source else gpu_slug(self.device)

    def sparse_params(self, head_dim: int, block_size: int) -> LaunchParams:
        key = variant_key(head_dim, block_size)
        if key not in self.sparse:
            have = ", ".join(sorted(self.sparse)) or "none"
            raise HardwareError(f"{self.source or self.device}: no sparse-kernel calibration for head_dim {head_dim}, "
                                f"block size {block_size} (calibrated: {have})")
        return self.sparse[key]

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
                              "each, in the runtime's order) on SMs·slots_per_sm slots; fill: launch + "
                              "bytes/bandwidth", "order": self.order,
                      "units": "launch_us µs, tile_ns ns, item_tiles tiles, gbps GB/s; ms out"},
            "params": {"sparse": {k: v.to_dict() for k, v in sorted(self.sparse.items())},
                       "dense": {k: v.to_dict() for k, v in sorted(self.dense.items())},
                       "fill": self.fill.to_dict()},
            "fit": self.fit, **({"extra": self.extra} if self.extra else {}),
            "points": self.points,
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
        params = data.get("params")
        if not isinstance(params, Mapping) or not all(k in params for k in ("sparse", "dense", "fill")):
            raise HardwareError(f"{where}: params must hold sparse, dense and fill")
        sparse = {k: LaunchParams.from_dict(v, f"{where}: params.sparse.{k}") for k, v in params["sparse"].items()}
        dense = {k: LaunchParams.from_dict(v, f"{where}: params.dense.{k}") for k, v in params["dense"].items()}
        return cls(device=dev["name"], sm_count=dev["sm_count"], sparse=sparse, dense=dense,
                   fill=FillParams.from_dict(params["fill"], f"{where}: params.fill"),
                   software=dict(data.get("software", {})), date=str(data.get("date", "")),
                   measured=bool(data.get("measured", True)), points=list(data.get("points", [])),
                   fit=dict(data.get("fit", {})), extra=dict(data.get("extra", {})),
                   order=_order(data.get("model", {}).get("order", "head"), where), source=source)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
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
    dirs += [Path.cwd() / "kernels", Path(__file__).resolve().parents[1] / "kernels",
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
    except json.JSONDecodeError as err:
        raise HardwareError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    return HardwareTable.from_dict(data, str(path))


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
        local = _local_gpu()
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


def _local_gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001  (a broken CUDA install means: no usable GPU here)
        return None


# --- features of a layer --------------------------------------------------------------------------


def work_order(counts: np.ndarray, order: str = "head", batch: int = 1) -> np.ndarray:
    """Kept tiles of every item of a fused launch, in launch order (block_tables' ``work_order``).

    counts: [computed heads, nb] kept key blocks per (head, query block). "head": items longer than
    ``BIG_ITEM`` × the mean first, longest first, then heads by total work, heaviest first (stable),
    query blocks in order; "lpt": all items longest first (stable). The batch copies of an item run
    side by side (the kernel's program numbering)."""
    counts = np.asarray(counts)
    if order == "head":
        flat = counts[np.argsort(-counts.sum(1), kind="stable")].reshape(-1)
        big = flat > BIG_ITEM * flat.mean() if flat.size else flat.astype(bool)
        flat = np.concatenate([np.sort(flat[big], kind="stable")[::-1], flat[~big]])
    elif order == "lpt":
        flat = counts.reshape(-1)
        flat = flat[np.argsort(-flat, kind="stable")]
    else:
        raise HardwareError(f"order: must be one of {ORDERS}, got {order!r}")
    return np.repeat(flat, batch) if batch > 1 else flat


@dataclass(frozen=True, eq=False)
class LayerFeatures:
    """What the latency of one layer plan depends on (per batch element)."""

    num_tokens: int
    num_heads: int
    block_size: int
    num_blocks: int
    all_dense: bool
    skip_heads: int
    counts: np.ndarray = field(repr=False)   # int [computed heads, nb]

    @property
    def computed_heads(self) -> int:
        return int(self.counts.shape[0])

    @property
    def items(self) -> int:
        return self.computed_heads * self.num_blocks

    @property
    def tiles(self) -> int:
        return int(self.counts.sum())

    @property
    def max_row(self) -> int:
        return int(self.counts.max()) if self.counts.size else 0


def layer_features(layer_plan) -> LayerFeatures:
    """Exact features of a LayerPlan from its block masks."""
    masks = layer_plan.block_masks()
    computed = list(layer_plan.computed_heads)
    counts = masks[computed].sum(-1).numpy().astype(np.int64) if computed else np.zeros((0, layer_plan.num_blocks),
                                                                                        dtype=np.int64)
    return LayerFeatures(
        num_tokens=layer_plan.geometry.num_tokens, num_heads=layer_plan.num_heads,
        block_size=layer_plan.block_size, num_blocks=layer_plan.num_blocks,
        all_dense=all(g.pattern == "dense" for g in layer_plan.groups),
        skip_heads=len(layer_plan.skip_heads), counts=counts)


# --- the cost model ---------------------------------------------------------------------------------


class CostModel:
    """Latency predictions (ms) for attention calls of one head_dim, batch and dtype width."""

    def __init__(self, table: HardwareTable | str | os.PathLike | None = None, *, head_dim: int = 128,
                 batch: int = 1, dtype_bytes: int = 2) -> None:
        self.table = load_hardware(table)
        if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 1:
            raise HardwareError(f"head_dim must be a positive integer, got {head_dim!r}")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise HardwareError(f"batch must be a positive integer, got {batch!r}")
        self.head_dim, self.batch, self.dtype_bytes = head_dim, batch, dtype_bytes
        self.table.dense_params(head_dim)  # fail early on an uncalibrated head_dim
        self._layer_cache: dict[Any, float] = {}

    def describe(self) -> dict[str, Any]:
        t = self.table
        return {"device": t.device, "calibration": t.name, "source": t.source, "note": t.note,
                "measured": t.measured, "head_dim": self.head_dim, "batch": self.batch}

    @property
    def sm_count(self) -> int:
        return self.table.sm_count

    # -- the three kernels ----------------------------------------------------------------------------

    def dense_ms(self, num_tokens, num_heads) -> np.ndarray:
        """cuDNN SDPA over [batch, heads, N, head_dim] (vectorised over N and heads)."""
        nq = np.ceil(np.asarray(num_tokens, dtype=np.float64) / DENSE_TILE)
        items = self.batch * np.asarray(num_heads, dtype=np.float64) * nq
        return self.table.dense_params(self.head_dim).uniform_ms(items, nq, self.sm_count, num_tokens)

    def dense_on_kernel(self, block_size: int) -> bool:
        """Whether the runtime runs an all-dense layer on the block-sparse kernel with every key block
        kept (``runtime.dense``): on Hopper (the table's capability 9.x), block size 128 and a
        calibrated head_dim, where the Hopper kernel runs it; elsewhere it runs cuDNN."""
        capability = self.table.software.get("capability") or (0, 0)
        return int(capability[0]) == 9 and block_size == 128 and \
            variant_key(self.head_dim, block_size) in self.table.sparse

    def dense_layer_ms(self, num_tokens: int, num_heads: int, block_size: int) -> float:
        """What an all-dense layer of a plan costs at run time: the sparse kernel with every key
        block kept where :meth:`dense_on_kernel`, else cuDNN (:meth:`dense_ms`, also the plans'
        dense baseline)."""
        if not self.dense_on_kernel(block_size):
            return float(self.dense_ms(num_tokens, num_heads))
        nb = -(-int(num_tokens) // block_size)
        return self.sparse_ms(np.full((int(num_heads), nb), nb), block_size)

    def sparse_ms(self, counts: np.ndarray, block_size: int) -> float:
        """One fused sparse launch over heads with kept-block counts [heads, nb] (full model)."""
        p = self.table.sparse_params(self.head_dim, block_size)
        return p.ms(work_order(counts, self.table.order, self.batch), self.sm_count)

    def fill_ms(self, skip_heads, num_tokens) -> np.ndarray:
        nbytes = self.batch * np.asarray(skip_heads, dtype=np.float64) * num_tokens * self.head_dim * self.dtype_bytes
        return self.table.fill.ms(nbytes)

    # -- layers and plans -------------------------------------------------------------------------------

    def features_ms(self, f: LayerFeatures) -> float:
        if f.all_dense:
            return self.dense_layer_ms(f.num_tokens, f.num_heads, f.block_size)
        t = 0.0
        if f.computed_heads:
            t += self.sparse_ms(f.counts, f.block_size)
        if f.skip_heads:
            t += float(self.fill_ms(f.skip_heads, f.num_tokens))
        return t

    def layer_ms(self, layer_plan) -> float:
        """Predicted latency of one attention call run by ``layer_plan`` (full model)."""
        key = layer_plan.key
        if key not in self._layer_cache:
            self._layer_cache[key] = self.features_ms(layer_features(layer_plan))
        return self._layer_cache[key]

    def plan_ms(self, plan) -> float:
        """Σ over steps and layers of :meth:`layer_ms` (each distinct layer plan costed once)."""
        total = 0.0
        for e in plan.schedule:
            steps = e.stop - e.start
            if e.layers is None:
                total += steps * plan.num_layers * self.dense_layer_ms(plan.geometry.num_tokens, plan.num_heads,
                                                                       plan.block_size)
            else:
                total += steps * sum(self.layer_ms(lp) for lp in e.layers)
        return total

    def dense_plan_ms(self, plan) -> float:
        """The dense baseline of ``plan``'s shape: every call cuDNN SDPA."""
        calls = plan.num_steps * plan.num_layers
        return calls * float(self.dense_ms(plan.geometry.num_tokens, plan.num_heads))

    # -- the additive form the search solves ----------------------------------------------------------

    def head_work_ms(self, tiles, num_blocks: int, block_size: int) -> np.ndarray:
        """A computed head's additive share of a fused launch: its tiles and items at full throughput."""
        p = self.table.sparse_params(self.head_dim, block_size)
        return p.throughput_ms(self.batch * np.asarray(tiles, dtype=np.float64), self.batch * num_blocks,
                               self.sm_count)

    def launch_overhead_ms(self, block_size: int) -> float:
        return self.table.sparse_params(self.head_dim, block_size).launch_us * 1e-3

    def fill_head_ms(self, num_tokens: int) -> float:
        """Bandwidth share of one skip head's zero fill (the fill's launch is a per-layer overhead)."""
        return self.batch * num_tokens * self.head_dim * self.dtype_bytes / (self.table.fill.gbps * 1e6)

    def fill_overhead_ms(self) -> float:
        return self.table.fill.launch_us * 1e-3


__all__ = ["CostModel", "DEFAULT_TABLE", "FORMAT", "FillParams", "HardwareError", "HardwareTable", "LaunchParams",
           "LayerFeatures", "VERSION", "gpu_slug", "kernels_dirs", "layer_features", "list_schedule", "load_hardware",
           "work_order"]
