"""Child processes (trainings, scorings) that stop with the benchmark that started them.

A benchmark runs train.py in child processes, `--jobs` at a time, each writing its own log. `kill` (SIGTERM)
reaches the benchmark alone: it would end and leave its trainings running as orphans, still using the cores and
still writing into the run folders that the benchmark's next run reuses. Ctrl-C reaches the running children too,
but the thread pool would then start the queued ones. Within `children_stop_with_me()`, SIGTERM or SIGINT first
stops every live child started by `run_logged` (train.py saves a resumable checkpoint on either), starts no new
one, and then ends the benchmark. There each child leads a process group of its own and the stop reaches the
whole group: a `make train` child stops with the train.py it started, which a signal to make alone would orphan.
Outside that block a child stays in the benchmark's group, so Ctrl-C at the terminal still reaches it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_WAIT_S = 60.0
"""Seconds a child has to save its checkpoint and exit after SIGTERM before it is killed."""

_live: set[subprocess.Popen] = set()
_lock = threading.RLock()  # re-entrant: the handler may run in the thread that holds it
_stopping = threading.Event()
_handled = threading.Event()  # set within children_stop_with_me(): the handler stops each child's whole group


class Stopped(RuntimeError):
    """A child not started because the benchmark is stopping."""


def run_logged(cmd: Sequence[str], log: Path, *, cwd: Path | str | None = None,
               env: dict[str, str] | None = None) -> int:
    """Run `cmd` with its stdout and stderr written to `log` (overwritten); returns its exit status."""
    with open(log, "w", encoding="utf-8") as f:
        with _lock:
            if _stopping.is_set():
                raise Stopped(f"not started, the benchmark is stopping: {' '.join(map(str, cmd))}")
            proc = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                    start_new_session=_handled.is_set())  # a group of its own, for `_signal_group`
            _live.add(proc)
        try:
            return proc.wait()
        finally:
            with _lock:
                _live.discard(proc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the child and every process it started (the group it leads; else the child alone)."""
    with contextlib.suppress(ProcessLookupError):  # it has exited already
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def _stop_children(signum: int, frame: object) -> None:
    with _lock:
        _stopping.set()
        live = list(_live)
    for proc in live:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while not all(map(_exited, live)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in live:
        if not _exited(proc):
            _signal_group(proc, signal.SIGKILL)
    raise SystemExit(128 + signum)


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it: the handler may have interrupted this very thread's
    `proc.wait()` in `run_logged`, which holds the Popen's wait lock, so `proc.wait` or `proc.poll` here would
    block until their timeout or answer "running"."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


@contextlib.contextmanager
def children_stop_with_me() -> Iterator[None]:
    """Within this block (entered in the main thread), SIGTERM or SIGINT stops the children of `run_logged`, then
    this process (exit status 128 + the signal's number)."""
    previous = {sig: signal.signal(sig, _stop_children) for sig in STOP_SIGNALS}
    _handled.set()
    try:
        yield
    finally:
        _handled.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
