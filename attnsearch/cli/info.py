"""``attnsearch info``: what this machine runs — versions, the GPU, the hardware table the cost model
takes, and per kind of call the backend "auto" picks and why the ones before it do not."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import check_choice, check_output_paths, console, run, shown, write_file

DTYPES = ("bfloat16", "float16", "float32")
PACKAGES = ("torch", "triton", "optuna", "diffusers")


def _versions() -> dict[str, str | None]:
    from .. import __version__

    found: dict[str, str | None] = {"attnsearch": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"type": "cpu", "interpreter": os.environ.get("TRITON_INTERPRET") == "1"}
    from ..runtime.device_caps import num_sms

    index = torch.cuda.current_device()
    return {"type": "cuda", "name": torch.cuda.get_device_name(index),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
            "sms": num_sms(torch.device("cuda", index)), "cuda": torch.version.cuda}


def _hardware() -> dict:
    from ..costmodel.table import HardwareError, load_hardware

    try:
        table = load_hardware(None)
    except HardwareError as err:
        return {"error": str(err)}
    from ..costmodel.model import resolve_execution

    return {"table": table.source, "device": table.device, "note": table.note, "precisions": list(table.precisions),
            "execution": resolve_execution(table, None)}


def info(
    dtype: str = typer.Option("bfloat16", help="dtype of the calls asked about: " + ", ".join(DTYPES) + "."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write everything shown as JSON here."),
) -> None:
    """What this machine runs: versions, the GPU, the hardware table the cost model takes, and for
    each kind of block-sparse call (head_dim, block size, precision) the backend ``backend="auto"``
    runs it on and why the backends before it cannot."""

    def work():
        import torch

        from ..runtime.backends import BACKENDS
        from ..runtime.support import call_support

        check_choice("--dtype", dtype, DTYPES)
        if json_out is not None:
            check_output_paths([json_out])
        versions, device, hardware = _versions(), _device(), _hardware()
        rows = call_support(dtype=getattr(torch, dtype))
        console.print("  ".join(f"{k} {shown(v if v is not None else 'not installed')}" for k, v in versions.items()))
        if device["type"] == "cuda":
            console.print(f"device      {shown(device['name'])}: compute capability {device['capability']}, "
                          f"{device['sms']} SMs, CUDA {shown(device['cuda'])}")
        else:
            mode = "TRITON_INTERPRET=1: Triton kernels run interpreted" if device["interpreter"] else \
                "the torch backend runs sparse calls (TRITON_INTERPRET=1: the Triton kernel, interpreted)"
            console.print(f"device      no CUDA GPU: CPU; {mode}")
        console.print("cost model  " + shown(hardware.get("error") or f"{hardware['note']}; prices "
                                             f"{', '.join(hardware['precisions'])}; {hardware['execution']} calls"))
        order = [b.name for b in BACKENDS]
        # A reason every kind of call shares (no GPU, a module missing) is said once, above the table.
        common = {n: [x for x in rows[0].reasons[n] if all(x in r.reasons[n] for r in rows)] for n in order}
        for n in order:
            if common[n]:
                console.print(f"{n:<11} never here: {shown('; '.join(common[n]))}")
        table = Table(title=f"block-sparse {dtype} calls on {device['type']}: the backend \"auto\" runs")
        for col in ("head_dim", "block", "precision", "runs on", "why not the backends before it (besides the above)"):
            table.add_column(col)
        for r in rows:
            before = order if r.backend is None else order[:order.index(r.backend)]
            why = "; ".join(f"{n}: {', '.join(rest)}" for n in before
                            if (rest := [x for x in r.reasons[n] if x not in common[n]]))
            table.add_row(str(r.head_dim), str(r.block_size), r.precision, r.backend or "[red]none[/]", shown(why))
        console.print(table)
        if json_out is not None:
            data = {"versions": versions, "device": device, "hardware": hardware, "dtype": dtype,
                    "calls": [r.to_dict() for r in rows]}
            write_file(json_out, json.dumps(data, indent=1) + "\n")

    run(work)
