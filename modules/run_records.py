"""Finding other runs' records while a run is being built: step-matched BPTT follows an e-prop run's rho
(modules/rules/bptt_scaled.py), early-stopped BPTT stops at the bio rules' mean test score
(callbacks/stop_at_target.py). In a study sweep those runs may still be going, so both wait for them."""
from __future__ import annotations

import glob
import time
from typing import Callable, TypeVar

T = TypeVar("T")
POLL_S = 2.0  # seconds between looks while waiting for another run's record


def run_dirs(patterns: list[str]) -> list[str]:
    """The run directories that `patterns` name (each a path or a glob), each once, sorted."""
    return sorted({d for p in patterns if p for d in glob.glob(p.strip())})


def wait_for(check: Callable[[], T | None], wait_s: float) -> T | None:
    """check() until it returns something other than None, looking again every POLL_S seconds for up to
    wait_s seconds; None when it never did (at least one look, also with wait_s = 0)."""
    deadline = time.monotonic() + float(wait_s)
    while True:
        result = check()
        if result is not None or time.monotonic() >= deadline:
            return result
        time.sleep(POLL_S)
