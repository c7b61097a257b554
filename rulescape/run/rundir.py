"""The run directory: who may use it. A directory holding another run's record or checkpoint is refused
unless this run resumes that very checkpoint, and an OS lock refuses a second live run in it."""
from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path

from rulescape.errors import RunDirError


def read_status(summary_path: Path) -> str | None:
    if summary_path.exists() and not summary_path.is_file():  # a FIFO would block the read
        return "unreadable"
    try:
        status = json.loads(summary_path.read_text()).get("status")
        return status if isinstance(status, str) else "unreadable"
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def check_run_dir(out_dir: Path, ckpt_path: str | None) -> None:
    """Refuse a directory that holds another run: a checkpoint, or a record other than one of a run that
    never trained ("failed" before it ran, or "interrupted" with no checkpoint, e.g. stopped at start-up),
    unless this run resumes that very checkpoint."""
    last = out_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is not None and Path(ckpt_path).resolve() == last.resolve():
        return
    status = read_status(out_dir / "summary.json")
    if last.exists() or status not in (None, "failed", "interrupted"):
        held = f"a run with status {status!r}" if status else "a run's checkpoint"
        raise RunDirError(f"run directory {out_dir} already holds {held}; resume it with ckpt_path={last} "
                          "or choose another hydra.run.dir")


@contextlib.contextmanager
def run_dir_lock(out_dir: Path):
    """An exclusive lock on <run dir>/.lock for the run's lifetime (released by the OS if the process dies)."""
    try:
        handle = open(out_dir / ".lock", "a+")
    except OSError as err:
        raise RunDirError(f"run directory {out_dir} is not writable ({err.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RunDirError(f"run directory {out_dir} is in use by another live run; "
                          "wait for it or choose another hydra.run.dir") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
