"""What both GPU kernels ask of the device and of their tensors: its SM count, and whether the
bulk-copy engine (TMA) can address a tensor."""

from __future__ import annotations

import torch

#: Streaming multiprocessors per CUDA device index.
_SMS: dict = {}


def num_sms(device: torch.device) -> int:
    """SMs of a CUDA device (cached: launchers ask on every call); 4 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 4
    if device.index not in _SMS:
        _SMS[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device.index]


def tma_compatible(t: torch.Tensor) -> bool:
    """TMA descriptors need a unit last stride and a 16-byte aligned base and outer strides."""
    item = t.element_size()
    return t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all((s * item) % 16 == 0 for s in t.stride()[:-1])
