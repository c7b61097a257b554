"""Finding other runs' records while a run is being built: step-matched BPTT follows an e-prop run's rho
(modules/rules/bptt_scaled.py), BPTT plus orthogonal noise follows its error size (modules/rules/bptt_noise.py),
early-stopped BPTT stops at the bio rules' mean test score (callbacks/stop_at_target.py). In a study sweep
those runs may still be going, so all of them wait for them."""
from __future__ import annotations

import bisect
import glob
import json
import math
import time
from pathlib import Path
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


def find_record(run_dir: str, option: str, wait_s: float = 0.0) -> dict:
    """The summary.json of the one finished run that `run_dir` (a path or a glob) names; waits up to
    wait_s seconds for it to exist and be finished. `option` (e.g. "rule.rho_from") names the config key
    in the one-line errors."""
    def finished() -> dict | None:
        matches = run_dirs([str(run_dir)])
        if len(matches) > 1:
            raise ValueError(f"{option}={run_dir!r} matches {len(matches)} run dirs; it must name one")
        path = Path(matches[0]) / "summary.json" if matches else None
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{option}: '{path}' is not a readable summary.json ({err})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{option}: '{path}' is not a run record")
        return record if record.get("status") != "interrupted" else None  # finished, whatever its outcome

    record = wait_for(finished, wait_s)
    if record is None:
        raise ValueError(f"{option}: no finished summary.json in '{run_dir}'")
    return record


def recorded_history(run_dir: str, key: str, option: str, wait_s: float = 0.0) -> list[tuple[int, float]]:
    """The [(step, value), ...] history `key` (a summary history name: "rho", "align_e_ratio") recorded in
    <run_dir>/summary.json, finite values only, sorted by step."""
    points = ((find_record(run_dir, option, wait_s).get("history") or {}).get(key)) or []
    try:
        points = [(int(s), float(v)) for s, v in points if v is not None and math.isfinite(float(v))]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{option}: '{run_dir}' has a malformed {key} history") from err
    if not points:
        raise ValueError(f"{option}: '{run_dir}' has no {key} history (was alignment measured in that run?)")
    return sorted(points)


def value_at(steps: list[int], values: list[float], step: int) -> float:
    """The last recorded value at or before `step` (the first one before any): how a control follows another
    run's history step by step."""
    return values[max(bisect.bisect_right(steps, int(step)) - 1, 0)]
