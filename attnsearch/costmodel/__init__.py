"""Predicted attention latency on one GPU from its hardware table (``kernels/<gpu>.json``).

``table`` (the table's format, reading, writing, finding), ``model`` (CostModel), ``fit`` (fitting
the table's constants to measured points), ``calibrate`` (the grid and its measurement on a GPU).
"""

from __future__ import annotations

from .model import EXECUTIONS, CostModel, LayerFeatures, layer_features, quantize_bytes
from .table import (DEFAULT_TABLE, DENSE_TILE, FORMAT, HOST_PARTS, VERSION, FillParams, HardwareError, HardwareTable, HostParams,
                    LaunchParams,
                    gpu_slug, kernels_dirs, load_hardware, parse_variant_key, variant_key)

__all__ = ["DEFAULT_TABLE", "DENSE_TILE", "EXECUTIONS", "FORMAT", "HOST_PARTS", "VERSION", "CostModel", "FillParams",
           "HardwareError", "HardwareTable", "HostParams", "LaunchParams", "LayerFeatures", "gpu_slug", "kernels_dirs", "layer_features",
           "load_hardware", "parse_variant_key", "quantize_bytes", "variant_key"]
