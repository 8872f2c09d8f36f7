"""What the benchmark measures: its modes, precisions and preset grids of problem sizes."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("forward", "train", "backward")
"""``"forward"``: inference under ``torch.no_grad()``; ``"train"``: forward and backward (gradients of the input
and every weight); ``"backward"``: backward only, through a graph built once and retained."""

MEASURED_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""The precisions (names in :data:`tritongru.precisions.PRECISIONS`) the harness benchmarks and tunes; fp64
exists for gradient checks on the CPU, not for speed."""


@dataclass(frozen=True)
class Grid:
    """The points to measure. ``input_size=None`` uses ``input_size = hidden``."""

    batch: tuple[int, ...]
    hidden: tuple[int, ...]
    seq_len: tuple[int, ...]
    precisions: tuple[str, ...]
    modes: tuple[str, ...]
    input_size: int | None = None

    def points(self) -> list[tuple[str, int, int, int]]:
        """``(precision, batch, hidden, seq_len)`` for every point, precision outermost."""
        return [(p, b, h, t) for p in self.precisions for h in self.hidden for b in self.batch for t in self.seq_len]


GRIDS: dict[str, Grid] = {
    "full": Grid(
        batch=(1, 8, 16, 32, 64, 256),
        hidden=(128, 256, 512, 768, 1024, 2048),
        seq_len=(64, 256, 1024),
        precisions=MEASURED_PRECISIONS,
        modes=MODES,
    ),
    "quick": Grid(
        batch=(1, 16, 64, 256),
        hidden=(256, 1024),
        seq_len=(256,),
        precisions=("fp32", "bf16"),
        modes=("forward", "train"),
    ),
    "cpu": Grid(batch=(2,), hidden=(16, 32), seq_len=(4,), precisions=("fp32",), modes=("forward", "train")),
}
"""``full``: every size the project reports (hours). ``quick``: the default on a GPU (minutes). ``cpu``: the
interpreter's functional run (seconds to minutes)."""
