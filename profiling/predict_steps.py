"""Predict the µs per step of the weight-stationary kernels on an H100 from their compiled figures.

    python profiling/predict_steps.py            # the four sizes of the performance issue, bf16

No GPU is needed (nor used): each size's config, as the launchers would take it on an H100, is compiled for
sm_90 (``tritongru.compile_check``), and a step is priced with the model below. Every number it prints is a
PREDICTION, to be replaced by what ``tritongru selftest`` measures; the model's constants are assumptions or
published H100 SXM figures, named here so that a measurement can say which one was wrong.

A step of the forward kernel on one program (slice ``block_h`` of ``block_b`` rows): wait at the grid barrier,
then stream the full ``h_{t-1}`` of its rows from L2 against the resident weights (in shared memory: the
compiled kernel's shared-memory figure says how much), then the gates, the update and the store:

    step = barriers x (BARRIER + L2_LATENCY) + max(h bytes / L2 rate, weight bytes / smem rate, flops / mma rate)
           + EPILOGUE

The classic form pays two barriers per step (its second product runs on ``R * h``); a per-step launch pays
LAUNCH instead of a barrier and reads its weights from L2 every step. The backward streams the gate gradients
(three per unit) instead of ``h``.
"""

import torch

from tritongru.compile_check import Call, compile_call
from tritongru.environment import interpreting
from tritongru.variants import VARIANTS

CLOCK_GHZ = 1.755  # H100 SXM boost clock (spec)
BARRIER_US = 0.8  # assumption: a release add and acquire polls through L2 across the programs of a batch block
L2_LATENCY_US = 0.5  # assumption: ~900 cycles to the first chunk of h after the barrier
LAUNCH_US = 3.0  # assumption: a per-step launch behind the previous one with programmatic dependent launch
L2_BYTES_PER_CLK = 64  # per SM, assumption (half of the L1's 128 B/clk port)
SMEM_BYTES_PER_CLK = 128  # per SM (spec)
MMA_FLOP_PER_CLK = {"bf16": 1024, "tf32": 512}  # per SM with mma.sync: assumption, half the dense wgmma rate
EPILOGUE_US = 0.1  # assumption: activations, the update and the stores of one tile

POINTS = [(16, 768), (64, 256), (64, 1024), (256, 1024)]


def predict(kernel: str, variant: str, precision: str, batch: int, hidden: int) -> tuple[str, float]:
    """``(description of the config and its compiled figures, predicted µs per step)``."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    flags = {"bias": True, "lengths": False} | ({"store_gates": True} if kernel == "forward" else {})
    call = Call(kernel, variant, precision, batch, hidden, tuple(flags.items()))
    config, compiled = compile_call(call, 90)
    mode, found = compiled[0].mode, compiled[0].resources
    slices, batch_blocks = -(-hidden // config.block_h), -(-batch // config.block_b)
    rows = min(config.block_b, batch)
    streamed = rows * hidden * dtype.itemsize * (3 if kernel == "backward" else 1)
    weights = 3 * hidden * config.block_h * dtype.itemsize
    flops = 2 * rows * hidden * 3 * config.block_h
    rate = CLOCK_GHZ * 1e3  # cycles per µs
    held = mode != "per-step"  # per step, the weights come from L2 every step instead of shared memory
    work = max(
        streamed / (L2_BYTES_PER_CLK * rate),
        weights / ((SMEM_BYTES_PER_CLK if held else L2_BYTES_PER_CLK) * rate),
        flops / (MMA_FLOP_PER_CLK[precision] * rate),
    )
    syncs = 2 if variant == "classic" else 1  # barriers per step, forward and backward alike
    wait = LAUNCH_US if mode == "per-step" else BARRIER_US if slices > 1 else 0.0
    step = syncs * (wait + L2_LATENCY_US) + work + syncs * EPILOGUE_US
    described = (
        f"{mode}, {slices * batch_blocks} programs (slice {config.block_h}, block_b {config.block_b}, "
        f"K chunk {config.block_k}, {config.num_warps} warps): {found.registers} registers, "
        f"{found.shared // 1024} KB shared, {found.spills} B spilled"
    )
    return described, step


def main() -> None:
    if interpreting():
        raise SystemExit("unset TRITON_INTERPRET: the prediction compiles for sm_90")
    print("| B | H | kernel | form | config and compiled figures (sm_90) | predicted µs/step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch, hidden in POINTS:
        for kernel in ("forward", "backward"):
            for variant in VARIANTS:
                described, step = predict(kernel, variant, "bf16", batch, hidden)
                print(f"| {batch} | {hidden} | {kernel} | {variant} | {described} | {step:.2f} (prediction) |")


if __name__ == "__main__":
    main()
