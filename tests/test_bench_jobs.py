"""A benchmark stopped with `kill` stops its trainings too (benchmarks/jobs.py), and starts no new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# a stand-in for a benchmark: two long "trainings" queued on one job slot
PARENT = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from jobs import children_stop_with_me, run_logged

out = Path(sys.argv[2])
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
with children_stop_with_me(), ThreadPoolExecutor(max_workers=1) as pool:
    futures = [pool.submit(run_logged, [sys.executable, "-c", child, str(out / f"child{i}.pid")], out / f"child{i}.log")
               for i in range(2)]
    for f in futures:
        f.result()
"""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie has exited: only its entry is left
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_a_signal_stops_the_running_child_and_starts_no_queued_one(tmp_path, sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(BENCHMARKS), str(tmp_path)])
    first = tmp_path / "child0.pid"
    deadline = time.monotonic() + 60
    while not (first.is_file() and first.read_text()) and time.monotonic() < deadline:
        assert parent.poll() is None, "the stand-in benchmark ended before its first child started"
        time.sleep(0.05)
    pid = int(first.read_text())
    assert _running(pid)

    parent.send_signal(sig)  # to the benchmark alone, as `kill` does
    assert parent.wait(timeout=30) == 128 + sig
    assert not _running(pid), "the running child outlived the benchmark that started it"
    assert not (tmp_path / "child1.pid").exists(), "a queued child started after the signal"


def test_a_childs_output_and_exit_status(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from jobs import run_logged
    finally:
        sys.path.remove(str(BENCHMARKS))
    log = tmp_path / "child.log"
    rc = run_logged([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                    log)
    assert rc == 3
    assert log.read_text().split() == ["out", "err"]


# a child that starts a grandchild and waits for it, as `make train` starts train.py
GRANDPARENT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from jobs import children_stop_with_me, run_logged

out = Path(sys.argv[2])
grandchild = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
child = ("import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]])")
with children_stop_with_me():
    run_logged([sys.executable, "-c", child, grandchild, str(out / "grandchild.pid")], out / "child.log")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_stops_what_the_child_started_too(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", GRANDPARENT, str(BENCHMARKS), str(tmp_path)])
    pid_file = tmp_path / "grandchild.pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        assert parent.poll() is None, "the stand-in benchmark ended before the grandchild started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10  # the group's SIGTERM reaches the grandchild at once; it exits in a moment
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid), "the grandchild (train.py under make) outlived the benchmark"
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
