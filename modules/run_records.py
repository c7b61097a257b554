"""Finding other runs' records while a run is being built: step-matched BPTT follows an e-prop run's rho
(modules/rules/bptt_scaled.py), BPTT plus orthogonal noise follows its error size (modules/rules/bptt_noise.py),
early-stopped BPTT stops at the bio rules' mean test score (callbacks/stop_at_target.py), a control runs as
many steps as its rule did (stop_at_step_from), and λ1 is also measured where other runs stopped
(curvature.at_steps_from). In a study sweep those runs may still be going, so all of them wait for them."""
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


def finished_records(pattern: str, wait_s: float = 0.0) -> tuple[list[dict] | None, int, int]:
    """(records, finished, dirs): the summary.json records of the run dirs that `pattern` names (globs,
    separated by commas) once every one of them holds a finished record (any status but "interrupted"),
    waiting up to wait_s seconds; records is None when they never all did, with how many had finished of how
    many directories matched (for the caller's one-line error)."""
    seen = {"finished": 0, "dirs": 0}

    def all_finished() -> list[dict] | None:
        dirs = run_dirs(str(pattern).split(","))
        records = []
        for d in dirs:
            path = Path(d, "summary.json")
            if not path.is_file():  # a FIFO or a directory of that name would block or fail: not a record
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("status") not in (None, "interrupted"):
                records.append(record)
        seen.update(finished=len(records), dirs=len(dirs))
        return records if dirs and len(records) == len(dirs) else None

    records = wait_for(all_finished, wait_s)
    return records, seen["finished"], seen["dirs"]


def stop_steps(pattern: str, option: str, wait_s: float = 0.0) -> list[int]:
    """The steps at which the runs that `pattern` names (globs, separated by commas) stopped: each finished
    record's `steps`, sorted, once each. Waits up to wait_s seconds until every matching directory holds a
    finished record (a study's rule arm waits for its seed's BPTT run, whose directory exists once that job
    started: the study's sweeps run BPTT first). [] when the pattern names no directory at all (a run outside
    such a sweep, or a sweep without that arm): the caller says so. `option` names the config key in the
    one-line errors."""
    if not run_dirs(str(pattern).split(",")):
        return []
    records, finished, dirs = finished_records(pattern, wait_s)
    if records is None:
        raise ValueError(f"{option}={pattern!r}: {finished} of {dirs} runs finished (waited {float(wait_s):g} s)")
    steps = set()
    for record in records:
        step = record.get("steps")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            steps.add(step)
    if not steps:
        raise ValueError(f"{option}={pattern!r}: no finished run there recorded a positive number of steps")
    return sorted(steps)


def stop_step(run_dir: str, option: str, wait_s: float = 0.0) -> int:
    """The step at which the one run that `run_dir` (a path or a glob naming one) stopped."""
    record = find_record(run_dir, option, wait_s)
    step = record.get("steps")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"{option}={run_dir!r}: its record has steps={step!r}, not a positive number of steps "
                         f"(status {record.get('status')!r})")
    return step
