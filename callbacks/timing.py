"""Where a run's time goes: a measurement callback adds the wall seconds of its measurements to `seconds`
(kept in its checkpointed state, so a resumed run's total covers the whole run), and the run record
reports them beside the training loop's time (summary.json `timing`)."""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class Timed:
    seconds: float = 0.0

    @contextmanager
    def timed(self, device: torch.device | None = None):
        """Adds the block's wall time to self.seconds (after the device's queued work, on a GPU)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds = self.seconds + time.perf_counter() - start


def timing(loop_s: float, callbacks) -> dict:
    """summary.json `timing`: the training loop's seconds (measurements included), each measurement
    callback's seconds, and their share of the loop."""
    measure = {type(cb).__name__.lower(): round(cb.seconds, 3) for cb in callbacks if isinstance(cb, Timed)}
    total = sum(measure.values())
    return {"loop_s": round(loop_s, 3), "measure_s": measure,
            "measure_share": round(total / loop_s, 4) if loop_s > 0 else None}
