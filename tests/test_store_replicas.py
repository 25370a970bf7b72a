"""Two `pplug serve` processes on loopback ports sharing one PostgreSQL store: a write through one replica is
what the other serves at its very next request (history, persona version, keys, erasure), while each keeps
its own per-user cache."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ADMIN = "test-admin-key"


def _review(text: str, score: int) -> dict:
    return {"text": text, "score": str(score)}


LOVER = [_review(f"wonderful, loved it, five stars {i}", 5) for i in range(4)]
HATER = [_review(f"terrible, boring, one star {i}", 1) for i in range(4)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """One `pplug serve` process on 127.0.0.1 (stopped by `close`)."""

    def __init__(self, run_dir: Path, store: str, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "pplug.cli", "serve", "--checkpoint", str(run_dir), "--store", store,
               "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--admin-key", ADMIN,
               "--reload-interval", "3600", "--model-name", "pplug-run", "--batch-window-ms", "5",
               "--embedding-cache", str(log.with_suffix(".emb.sqlite")), "--expose-soft-prompts"]
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {ADMIN}"})

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pplug serve exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"pplug serve did not start in time: {self.log.read_text()[-2000:]}")

    def complete(self, prompt: str, **body) -> dict:
        r = self.client.post("/v1/completions", json={"model": "pplug-run", "prompt": prompt, **body})
        assert r.status_code == 200, r.text
        return r.json()["pplug"]

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def replicas(tmp_path, tiny_config, postgres_url):
    from pplug.modeling.model import PPlugModel

    run_dir = tmp_path / "run"
    model = PPlugModel.from_config(dataclasses.replace(tiny_config, max_history=8), cache_path=":memory:")
    model.save_pretrained(run_dir / "final")
    started = [Replica(run_dir, postgres_url, tmp_path / f"replica-{n}.log") for n in "ab"]
    try:
        deadline = time.monotonic() + 120  # both load in parallel: torch imports dominate
        for r in started:
            r.wait_ready(deadline)
        yield started
    finally:
        for r in started:
            r.close()


def test_a_write_through_one_replica_is_served_by_the_other_at_once(replicas):
    a, b = replicas
    r = a.client.post("/v1/users", json={"user_id": "ana"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert a.client.post("/v1/users/ana/history", json={"items": LOVER}).status_code == 200
    text = "the movie was fine"
    first = b.complete(text, user="ana")
    assert first["history_items"] == len(LOVER) and not first["cold_start"]
    assert b.complete(text, user="ana")["soft_prompt"] == first["soft_prompt"]  # B's cache, unchanged user

    # a write through A; B's very next request serves it (no wait, no restart)
    r = a.client.post("/v1/users/ana/history", json={"items": HATER})
    assert r.status_code == 200, r.text
    after = b.complete(text, user="ana")
    assert after["history_items"] == len(LOVER) + len(HATER)
    assert after["soft_prompt"] != first["soft_prompt"]
    assert after["soft_prompt"] == a.complete(text, user="ana")["soft_prompt"]  # both compute the same prompt
    assert b.client.get("/v1/users/ana").json()["history"] == {"LaMP_3": len(LOVER) + len(HATER)}

    # the user's key, created through A, works on B
    own = httpx.post(f"{b.url}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": "pplug-run", "prompt": text}, timeout=60)
    assert own.status_code == 200 and own.json()["pplug"]["user"] == "ana"

    # erasure through B: A serves a cold start at once, and the key is gone everywhere
    assert b.client.delete("/v1/users/ana").status_code == 200
    gone = a.complete(text, user="ana")
    assert gone["cold_start"] and gone["history_items"] == 0
    denied = httpx.post(f"{a.url}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": "pplug-run", "prompt": text}, timeout=60)
    assert denied.status_code == 401
