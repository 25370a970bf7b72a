"""Child processes (trainings, scorings) that stop with the benchmark that started them.

A benchmark runs train.py in child processes, `--jobs` at a time, each writing its own log. `kill` (SIGTERM)
reaches the benchmark alone: it would end and leave its trainings running as orphans, still using the cores and
still writing into the run folders that the benchmark's next run reuses. Ctrl-C reaches the running children too,
but the thread pool would then start the queued ones. Within `children_stop_with_me()`, SIGTERM or SIGINT first
stops every live child started by `run_logged` (train.py saves a resumable checkpoint on either), starts no new
one, and then ends the benchmark.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_WAIT_S = 60.0
"""Seconds a child has to save its checkpoint and exit after SIGTERM before it is killed."""

_live: set[subprocess.Popen] = set()
_lock = threading.RLock()  # re-entrant: the handler may run in the thread that holds it
_stopping = threading.Event()


class Stopped(RuntimeError):
    """A child not started because the benchmark is stopping."""


def run_logged(cmd: Sequence[str], log: Path, *, cwd: Path | str | None = None,
               env: dict[str, str] | None = None) -> int:
    """Run `cmd` with its stdout and stderr written to `log` (overwritten); returns its exit status."""
    with open(log, "w", encoding="utf-8") as f:
        with _lock:
            if _stopping.is_set():
                raise Stopped(f"not started, the benchmark is stopping: {' '.join(map(str, cmd))}")
            proc = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            _live.add(proc)
        try:
            return proc.wait()
        finally:
            with _lock:
                _live.discard(proc)


def _stop_children(signum: int, frame: object) -> None:
    with _lock:
        _stopping.set()
        live = list(_live)
    for proc in live:
        proc.terminate()
    for proc in live:
        try:
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def children_stop_with_me() -> Iterator[None]:
    """Within this block (entered in the main thread), SIGTERM or SIGINT stops the children of `run_logged`, then
    this process (exit status 128 + the signal's number)."""
    previous = {sig: signal.signal(sig, _stop_children) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
