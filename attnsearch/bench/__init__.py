"""The one timing harness: every timing of the project (``attnsearch bench``, calibration, the demo,
the benchmark scripts) goes through these public functions.

``timing`` (time_ms in "queued" / "synced" / "sustained" modes, time_device: CUDA-graph device
time, host_us, fresh_inputs, card_name), ``baselines`` (dense cuDNN SDPA, FlexAttention on the same
blocks, flops), ``layers`` (layer plans at a density), ``plans`` (bench_layer_plan, bench_plan),
``sweep`` (the grid ``attnsearch bench`` sweeps and its summary), ``forward`` (whole-forward timing
and the mixed plan of the Wan2.1 forward benchmarks).
"""

from __future__ import annotations

from .baselines import cudnn_sdpa, dense_cudnn_ms, flex_attention_fn, flex_block_mask, flex_kernel_options, flops
from .layers import family_params, mixed_layer_plan
from .plans import bench_layer_plan, bench_layer_plans, bench_plan
from .timing import TIMING_MODES, card_name, clock_cell, clock_sampler, fresh_inputs, host_us, time_device, time_ms

__all__ = ["TIMING_MODES", "bench_layer_plan", "bench_layer_plans", "bench_plan", "card_name", "clock_cell",
           "clock_sampler", "cudnn_sdpa", "dense_cudnn_ms", "family_params", "flex_attention_fn", "flex_block_mask",
           "flex_kernel_options", "flops", "fresh_inputs", "host_us", "mixed_layer_plan", "time_device", "time_ms"]
