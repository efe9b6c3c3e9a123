"""Eager calls against the cost model's host term: what a layer costs called back to back through
``sparse_attention`` (the path ``apply`` runs every call through), beside its device time, its host
dispatch time and the cost model's two predictions.

    python -m benchmarks.host_dispatch --out reports/host_dispatch [--hardware TABLE]

Per shape (mini-vdit's 4,096- and 16,384-token layers, a Wan2.1-1.3B 480p layer), precision
(native, FP8, half the heads in each) and density (10 / 40 % of the blocks, diagonal bands):
* eager: ``time_ms(mode="sustained")``, calls back to back for 3 s, the last 2 s timed, median: the
  steady state of a model calling attention eagerly, max(device, host) per call when nothing else
  runs between the calls;
* device: ``time_device`` (CUDA-graph replays, what calibration fits);
* host: ``host_us`` (wall time per call with the GPU held busy);
* predicted: ``CostModel(execution="eager")`` and ``"graph"``, ``layer_ms`` of the layer plan.
The same for cuDNN dense (``dense_ms``). Writes ``result.json``, ``figure.png`` (measured eager
against predicted, both executions) and a README fragment.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from attnsearch.bench import family_params, fresh_inputs, host_us, time_device, time_ms
from attnsearch.bench.baselines import cudnn_sdpa
from attnsearch.bench.output import write_outputs
from attnsearch.costmodel import CostModel
from attnsearch.geometry import Geometry
from attnsearch.layer_plan import LayerPlan
from attnsearch.runtime import sparse_attention

#: (label, geometry, heads, head_dim, block size, batch)
SHAPES = (("mini-vdit 16×64×64", Geometry(16, 16, 16), 4, 64, 64, 2),
          ("mini-vdit 16×128×128", Geometry(16, 32, 32), 4, 64, 64, 2),
          ("Wan2.1-1.3B 480p", Geometry(21, 30, 52), 12, 128, 128, 1))
DENSITIES = (0.1, 0.4)
PRECISIONS = ("native", "fp8", "half fp8")


def measure(fn, inputs) -> dict:
    sets = len(inputs)
    return {"eager_ms": time_ms(fn, inputs, mode="sustained")["median"],
            "device_ms": time_device(lambda i: fn(inputs[i]), sets)["ms"],
            "host_us": host_us(fn, inputs, reps=3)}


def draw(result: dict):
    def figure(fig) -> None:
        ax = fig.subplots(1, 1)
        rows = result["rows"]
        top = max(max(r["eager_ms"], r["predicted_eager_ms"], r["predicted_graph_ms"]) for r in rows) * 1.3
        low = min(min(r["eager_ms"], r["predicted_graph_ms"]) for r in rows) / 1.3
        for key, marker, label in (("predicted_eager_ms", "o", "eager prediction (max(device, host))"),
                                   ("predicted_graph_ms", "x", "device-time prediction")):
            ax.scatter([r["eager_ms"] for r in rows], [r[key] for r in rows], marker=marker, label=label)
        ax.plot([low, top], [low, top], color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="measured ms per call, eager back to back",
               ylabel="predicted ms per call", title=f"eager calls against the cost model ({result['card']})")
        ax.legend(fontsize=8)

    return figure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--hardware", default=None, help="hardware table with host costs (default: this GPU's)")
    args = p.parse_args(argv)
    started = time.time()
    rows = []
    for label, geom, heads, d, bs, batch in SHAPES:
        eager = CostModel(args.hardware, head_dim=d, batch=batch, execution="eager")
        graph = CostModel(args.hardware, head_dim=d, batch=batch, execution="graph")
        inputs = fresh_inputs((batch, heads, geom.num_tokens, d), torch.bfloat16, 3)
        got = measure(lambda x: cudnn_sdpa(*x), inputs)
        rows.append({"shape": label, "call": "cuDNN dense", "density": 1.0, **got,
                     "predicted_eager_ms": float(eager.dense_ms(geom.num_tokens, heads)),
                     "predicted_graph_ms": float(graph.dense_ms(geom.num_tokens, heads))})
        for target in DENSITIES:
            params, _ = family_params("diagonal", geom, bs, target)
            native = LayerPlan.single("diagonal", params, geom, heads, bs)
            for precision in PRECISIONS:
                lp = {"native": native, "fp8": native.with_precision("fp8"),
                      "half fp8": native.with_precision("fp8", heads=range(heads // 2))}[precision]
                sparse_attention(*inputs[0], lp)  # tables, compilation, tuning outside the timing
                got = measure(lambda x, lp=lp: sparse_attention(*x, lp), inputs)
                rows.append({"shape": label, "call": precision, "density": lp.density, **got,
                             "predicted_eager_ms": eager.layer_ms(lp), "predicted_graph_ms": graph.layer_ms(lp)})
                r = rows[-1]
                print(f"{label} {precision} {lp.density:.2f}: eager {r['eager_ms']:.3f} ms (device "
                      f"{r['device_ms']:.3f}, host {r['host_us']:.0f} µs), predicted {r['predicted_eager_ms']:.3f} "
                      f"eager / {r['predicted_graph_ms']:.3f} graph", flush=True)
    errs = {k: [abs(math.log(r[k] / r["eager_ms"])) for r in rows] for k in ("predicted_eager_ms", "predicted_graph_ms")}
    summary = {k: {"median_abs_log_ratio": sorted(v)[len(v) // 2], "max_abs_log_ratio": max(v)} for k, v in errs.items()}
    out = {"seconds": round(time.time() - started, 1), "card": torch.cuda.get_device_name(),
           "hardware": CostModel(args.hardware, head_dim=64, execution="eager").table.name, "summary": summary,
           "rows": rows}
    write_outputs(args.out, "host_dispatch", out, draw(out))
    print(f"wrote {args.out} in {time.time() - started:.0f} s; {summary}")


if __name__ == "__main__":
    main()
