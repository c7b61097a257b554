"""The child processes of a tool that starts others (study.py: its sweeps, reruns and report), and stopping
them on a signal the way train.py's sweeps stop their jobs.

`start` runs a command in a process group of its own (so a Ctrl-C in the terminal reaches only the parent,
which forwards exactly one SIGINT per signal: a sweep then stops its jobs as `interrupted`, with checkpoints),
and refuses to start anything once a signal arrived. `install()` makes SIGINT and SIGTERM (a scheduler's
stop) forward that SIGINT to every running child; while none runs, the signal is a KeyboardInterrupt in the
main thread as usual. `stop_all()` waits for the children to end (a second signal, or the grace time over:
SIGKILL). A SIGKILL of the parent cannot be forwarded: its children then run to their end."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time

_lock = threading.RLock()  # re-entrant: the handler may run in the main thread while it holds the lock
_running: list[subprocess.Popen] = []
_signalled: set[int] = set()  # pids that got their SIGINT
signals: list[int] = []


class Stopped(Exception):
    """A signal arrived: nothing new starts."""


def stopping() -> bool:
    return bool(signals)


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen(cmd) in a process group of its own, tracked until it ends; Stopped after a signal."""
    with _lock:
        if signals:
            raise Stopped()
        proc = subprocess.Popen(cmd, process_group=0, **kwargs)
        _running.append(proc)
    return proc


def wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait()
    finally:
        with _lock:
            if proc in _running:
                _running.remove(proc)


def call(cmd: list[str], **kwargs) -> int:
    """subprocess.call, through start: its exit status (130 when a signal stopped it or kept it from starting)."""
    try:
        return wait(start(cmd, **kwargs))
    except Stopped:
        return 130


def forward(sig: int = signal.SIGINT) -> int:
    """Send sig to every running child's process group; how many there were."""
    import os
    with _lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        _signalled.add(proc.pid)
    return len(procs)


def handler(signum, frame) -> None:
    signals.append(signum)
    sent = forward(signal.SIGINT if len(signals) == 1 else signal.SIGKILL)
    if not sent and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt


def install() -> dict:
    """SIGINT and SIGTERM -> handler; returns the previous handlers (for restore)."""
    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


def stop_all(grace_s: float = 300.0) -> None:
    """After a signal: the children got their SIGINT; wait for them (SIGKILL once grace_s is over)."""
    if not signals:
        signals.append(signal.SIGINT)
        forward(signal.SIGINT)
    import os
    deadline = time.monotonic() + grace_s
    while True:
        with _lock:
            procs = [p for p in _running if p.poll() is None]
        if not procs:
            return
        for proc in procs:  # one started just as the signal came: its SIGINT now
            if proc.pid not in _signalled:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGINT)
                _signalled.add(proc.pid)
        if time.monotonic() > deadline:
            forward(signal.SIGKILL)
        time.sleep(0.2)


def reset() -> None:
    """Forget earlier signals (a new run of the tool in the same process, e.g. a test)."""
    with _lock:
        signals.clear()
        _running.clear()
        _signalled.clear()
