"""Reliability of `pplug serve`, `pplug user add-history` and the user store: hostile inputs and kill -9 faults.

    python benchmarks/bench_reliability.py --out benchmarks/results/reliability.json   # 52+ kill points
    python benchmarks/bench_reliability.py --kills 8                                    # a quick run

Two parts, each on a SQLite store and a PostgreSQL one (pgserver, the tests' server package):

- Hostile inputs: requests a client could send to hurt the server (oversize bodies with and without
  Content-Length, chunked and slowly streamed; personas with NaN, infinity, lone surrogates, NUL, 1.5 MB of
  text; history items with NaN, lone surrogates, NUL, deep nesting, bad labels; bad user ids and idempotency
  keys; erasure races), sent to the app in process (httpx's ASGI transport). Each must get its documented
  4xx in OpenAI's error shape, and the store must be exactly as before (users, rows, persona versions).
- Fault injection: a user's history is uploaded in batches of 3 items, each with its own idempotency key,
  through a `pplug serve` process (HTTP) or through `pplug user add-history` (the CLI's `main`, several
  uploads per process). The process kills itself with SIGKILL right before its n-th SQL statement, n drawn
  from a seeded generator: anywhere before, inside or after a transaction, including after COMMIT but
  before the reply. A new process then retries every upload not acknowledged (same key), with its own kill
  point, until all are. After every kill the store is opened afresh and checked: every acknowledged row is
  there (else "lost"), no upload is stored in part and every stored upload has its persona refresh
  (activity_count = rows, one derived persona version per upload; else "half-written"), and no item is
  stored twice (else a "duplicate").

The model is a tiny random LLM with the real default encoder: outputs are not judged, only what is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN = "bench-admin-key"
USER = "u"
BATCH = 3
"""Items per upload."""


# --- the kill switch (in the child process) ---------------------------------------------------------------

_COUNT = {"n": 0, "kill_at": 0}


class _KillBefore:
    """A store connection that SIGKILLs its process right before the `kill_at`-th statement (counted over the
    process's life, all connections together); everything else is the real connection's."""

    def __init__(self, conn: Any):
        self._real = conn

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        _COUNT["n"] += 1
        if _COUNT["n"] == _COUNT["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return self._real.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def arm(store: Any) -> Any:
    """The store, its connection wrapped by the kill switch (SQLite and PostgreSQL keep it in `_conn`)."""
    store._conn = _KillBefore(store._conn)
    return store


def child_server(store_url: str, run: str, port: int, kill_at: int, cache: str) -> None:
    import uvicorn

    from pplug.serve.app import create_app
    from pplug.store import open_store

    app = create_app(run, open_store(store_url), admin_key=ADMIN, device="cpu", max_batch=1,
                     reload_interval=3600, embedding_cache=cache)
    arm(app.state.store)
    _COUNT["kill_at"] = kill_at
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")


def child_cli(store_url: str, encoder: str, cache: str, kill_at: int, files: list[str], keys: bool = True) -> None:
    """`pplug user add-history` for each file in turn (key = the file's stem); "ACK <stem>" once it returned 0."""
    import pplug.store as store_module
    from pplug.cli.main import main

    real_open = store_module.open_store
    store_module.open_store = lambda *a, **k: arm(real_open(*a, **k))
    _COUNT["kill_at"] = kill_at
    for f in files:
        key = Path(f).stem
        rc = main(["user", "add-history", USER, f, "--encoder", encoder, "--embedding-cache", cache,
                   "--device", "cpu", *(["--idempotency-key", key] if keys else []), "--store", store_url])
        print(f"{'ACK' if rc == 0 else 'ERR'} {key}", flush=True)


# --- the parent: uploads, kills, checks --------------------------------------------------------------------

def batches(n: int, tag: str) -> list[list[dict]]:
    """n uploads of BATCH LaMP_3 items, every text unique (so a stored row names its upload)."""
    return [[{"text": f"{tag} upload {j} item {i}: the chorus was fine", "score": str(1 + (j + i) % 5)}
             for i in range(BATCH)] for j in range(n)]


def check(store_url: str, uploads: list[list[dict]], acked: set[int]) -> dict:
    """What a fresh process finds in the store: rows acknowledged / stored, lost, duplicates, half-written."""
    from pplug.store import open_store

    with open_store(store_url, create=False) as s:
        texts = [r.item["text"] for r in s.history(USER)]
        persona, version = s.persona(USER), s.persona_version(USER)
    seen: dict[str, int] = {}
    for t in texts:
        seen[t] = seen.get(t, 0) + 1
    copies, half, lost = 0, 0, 0
    for j, up in enumerate(uploads):
        counts = [seen.get(it["text"], 0) for it in up]
        copies += min(counts)  # times the whole upload is stored (2: a duplicate upload)
        half += max(counts) != min(counts)  # some of its items stored more often than others: in part
        if j in acked:
            lost += counts.count(0)
    if (persona.pattern.activity_count or 0) != len(texts) or version - 1 != copies:
        half += 1  # rows without their persona refresh, or a refresh without its rows
    return {"rows_acknowledged": sum(len(uploads[j]) for j in acked), "rows_stored": len(texts),
            "lost": lost, "duplicates": sum(c - 1 for c in seen.values()), "half_written": half}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python(args: list[str], **kw: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=ROOT, **kw)


def _fresh_user(store_url: str) -> None:
    from pplug.store import open_store

    with open_store(store_url) as s:
        s.create_user(USER, task="LaMP_3")


def run_faults(mode: str, store_url: str, run: Path, encoder: str, work: Path, kills: int, seed: int,
               max_statement: int = 45, keys: bool = True, log: Any = print) -> dict:
    """Upload batches through `mode` ("server" or "cli") processes until `kills` processes died by SIGKILL
    and every upload is acknowledged; the store checked after every kill. Returns the counts.

    keys=False: the uploads carry no idempotency key (the control: a retry after a reply lost to the kill
    stores the upload twice)."""
    rng = random.Random(seed)
    uploads = batches(kills + 2, f"{mode}-{seed}")
    _fresh_user(store_url)
    files = []
    for j, up in enumerate(uploads):
        f = work / f"{mode}-{seed}" / f"b{j:03d}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(up))
        files.append(str(f))
    acked: set[int] = set()
    out = {"faults": 0, "processes": 0, "lost": 0, "duplicates": 0, "half_written": 0, "errors": 0}
    cache = str(work / f"emb-{mode}.sqlite")
    while len(acked) < len(uploads):
        out["processes"] += 1
        if out["processes"] > 4 * (kills + 2):
            raise RuntimeError(f"{mode}: uploads never finished ({len(acked)}/{len(uploads)} acknowledged)")
        kill_at = rng.randint(1, max_statement) if out["faults"] < kills else 0
        pending = [j for j in range(len(uploads)) if j not in acked]
        if mode == "server":
            died = _server_round(store_url, run, cache, kill_at, uploads, pending, acked, work, out, keys)
        else:
            died = _cli_round(store_url, encoder, cache, kill_at, [files[j] for j in pending], acked, out, keys)
        if died:
            out["faults"] += 1
            got = check(store_url, uploads, acked)
            for k in ("lost", "duplicates", "half_written"):
                out[k] = max(out[k], got[k])
    final = check(store_url, uploads, acked)
    for k in ("lost", "duplicates", "half_written"):
        out[k] = max(out[k], final[k])
    out["rows_acknowledged"], out["rows_stored"] = final["rows_acknowledged"], final["rows_stored"]
    log(f"{mode}: {out['faults']} kills in {out['processes']} processes; rows acknowledged "
        f"{out['rows_acknowledged']}, stored {out['rows_stored']}; lost {out['lost']}, duplicates "
        f"{out['duplicates']}, half-written {out['half_written']}, errors {out['errors']}")
    return out


def _server_round(store_url: str, run: Path, cache: str, kill_at: int, uploads: list, pending: list[int],
                  acked: set[int], work: Path, out: dict, keys: bool) -> bool:
    import httpx

    port = _free_port()
    with open(work / "server.log", "a") as logf:
        proc = _python(["--child-server", store_url, str(run), str(port), str(kill_at), cache], stdout=logf,
                       stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"pplug serve did not start (see {work / 'server.log'})")
        time.sleep(0.2)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        for j in pending:
            try:
                r = client.post(f"/v1/users/{USER}/history", json={"items": uploads[j]},
                                headers={"Idempotency-Key": f"b{j:03d}"} if keys else {})
            except httpx.TransportError:  # the server died mid-request: no acknowledgement
                break
            if r.status_code == 200:
                acked.add(j)
            else:
                out["errors"] += 1
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)
    return proc.returncode == -signal.SIGKILL


def _cli_round(store_url: str, encoder: str, cache: str, kill_at: int, files: list[str], acked: set[int],
               out: dict, keys: bool) -> bool:
    proc = _python(["--child-cli" if keys else "--child-cli-no-keys", store_url, encoder, cache, str(kill_at), *files],
                   stdout=subprocess.PIPE,
                   stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        verdict, _, key = line.strip().partition(" ")
        if verdict == "ACK":
            acked.add(int(key[1:]))
        elif verdict == "ERR":
            out["errors"] += 1
    proc.wait(timeout=60)
    return proc.returncode == -signal.SIGKILL


# --- hostile inputs ------------------------------------------------------------------------------------------

def _snapshot(store: Any) -> tuple:
    users = store.users()
    return tuple((u, store.count_interactions(u), store.persona_version(u)) for u in users)


def hostile_cases() -> list[tuple[str, str, str, dict, int, str]]:
    """(name, method, path, httpx keyword arguments, expected status, expected error code) of requests the
    server must refuse."""
    big = json.dumps({"items": [{"text": "x" * 15_000, "score": "3"}] * 200}).encode()  # 3 MB

    async def chunks(body: bytes, size: int = 65_536, pause: float = 0.0):
        for i in range(0, len(body), size):
            if pause:
                await asyncio.sleep(pause)
            yield body[i:i + size]

    item = {"text": "fine", "score": "4"}
    hist = f"/v1/users/{USER}/history"
    too_large, bad, big_item = "request_too_large", "invalid_value", "history_too_large"
    return [
        ("3 MB body, Content-Length", "POST", hist, {"content": big}, 413, too_large),
        ("3 MB body, chunked", "POST", hist, {"content": lambda: chunks(big)}, 413, too_large),
        ("3 MB body, streamed slowly", "POST", hist, {"content": lambda: chunks(big, 131_072, 0.002)}, 413,
         too_large),
        ("2 MB + 1 byte, chunked", "POST", hist, {"content": lambda: chunks(b" " * 2_000_001)}, 413, too_large),
        ("3 MB user create, chunked", "POST", "/v1/users", {"content": lambda: chunks(big)}, 413, too_large),
        ("persona NaN", "POST", "/v1/users", {"content": b'{"user_id":"p1","persona":{"extensions":{"x":NaN}}}'},
         400, bad),
        ("persona Infinity", "POST", "/v1/users",
         {"content": b'{"user_id":"p2","persona":{"preference":{"mean_rating":Infinity}}}'}, 400, bad),
        ("persona lone surrogate", "POST", "/v1/users",
         {"content": b'{"user_id":"p3","persona":{"identity":{"name":"a\\ud800b"}}}'}, 400, bad),
        ("persona NUL", "POST", "/v1/users", {"json": {"user_id": "p4", "persona": {"identity": {"name": "a\x00"}}}},
         400, bad),
        ("persona 1.5 MB", "POST", "/v1/users",
         {"json": {"user_id": "p5", "persona": {"personality": {"description": "x" * 1_500_000}}}}, 400, bad),
        ("persona 42 kB of extensions", "POST", "/v1/users",
         {"json": {"user_id": "p6", "persona": {"extensions": {f"k{i}": "y" * 3_000 for i in range(14)}}}}, 400, bad),
        ("persona deep nesting", "POST", "/v1/users",
         {"json": {"user_id": "p7", "persona": {"extensions": {"x": [[[[[[[[[[1]]]]]]]]]]}}}}, 400, bad),
        ("persona unknown key", "POST", "/v1/users", {"json": {"user_id": "p8", "persona": {"age": 3}}}, 400, bad),
        ("user id with a slash", "POST", "/v1/users", {"json": {"user_id": "../etc"}}, 400, bad),
        ("existing user", "POST", "/v1/users", {"json": {"user_id": USER}}, 409, "user_exists"),
        ("item NaN score", "POST", hist, {"content": b'{"items":[{"text":"a","score":NaN}]}'}, 400, bad),
        ("item lone surrogate", "POST", hist, {"content": b'{"items":[{"text":"a\\udc00","score":"3"}]}'}, 400, bad),
        ("item NUL", "POST", hist, {"json": {"items": [{"text": "a\x00b", "score": "3"}]}}, 400, bad),
        ("item deep nesting", "POST", hist, {"json": {"items": [{**item, "x": [[[[[[[[[[1]]]]]]]]]]}]}}, 400, bad),
        ("item bad score", "POST", hist, {"json": {"items": [item, {"text": "b", "score": "banana"}]}}, 400, bad),
        ("item 17 000 characters", "POST", hist, {"json": {"items": [{"text": "x" * 17_000, "score": "3"}]}}, 400,
         big_item),
        ("1 001 items", "POST", hist, {"json": {"items": [item] * 1001}}, 400, big_item),
        ("idempotency key with a space", "POST", hist,
         {"json": {"items": [item]}, "headers": {"Idempotency-Key": "a b"}}, 400, bad),
        ("idempotency key of 256 characters", "POST", hist,
         {"json": {"items": [item]}, "headers": {"Idempotency-Key": "k" * 256}}, 400, bad),
        ("idempotency key reused for other items", "POST", hist,
         {"json": {"items": [{"text": "other", "score": "2"}]}, "headers": {"Idempotency-Key": "seen"}}, 422,
         "idempotency_key_reused"),
        ("history of an unknown user", "POST", "/v1/users/nobody/history", {"json": {"items": [item]}}, 404,
         "user_not_found"),
        ("erasure of an unknown user", "DELETE", "/v1/users/nobody", {}, 404, "user_not_found"),
        ("malformed JSON", "POST", hist, {"content": b'{"items": [}'}, 400, "invalid_json"),
    ]


async def _hostile(app: Any, store: Any) -> dict:
    import httpx

    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers, timeout=120) as client:
        r = await client.post(f"/v1/users/{USER}/history", json={"items": [{"text": "kept", "score": "5"}]},
                              headers={"Idempotency-Key": "seen"})
        assert r.status_code == 200, r.text
        tried, refused, failures = 0, 0, []
        location = store.location
        for name, method, path, kw, status, code in hostile_cases():
            kw = dict(kw)
            if callable(kw.get("content")):
                kw["content"] = kw["content"]()
            before = _snapshot(store)
            r = await client.request(method, path, **kw)
            tried += 1
            try:
                err = r.json()["error"]
                shape = set(err) == {"message", "type", "param", "code"} and err["code"] == code
            except (ValueError, KeyError, TypeError):
                shape = False
            ok = r.status_code == status and shape and _snapshot(store) == before and location not in r.text
            refused += ok
            if not ok:
                failures.append(f"{name}: {r.status_code} {r.text[:120]}")
        # erasure races: two erasures at once, and a history upload on the erased user
        await client.post("/v1/users", json={"user_id": "racer"})
        answers = await asyncio.gather(*[client.delete("/v1/users/racer") for _ in range(4)])
        codes = sorted(a.status_code for a in answers)
        tried += 1
        if codes == [200, 404, 404, 404]:
            refused += 1
        else:
            failures.append(f"4 erasures at once: {codes}")
    return {"tried": tried, "refused_correctly": refused, "failures": failures}


def run_hostile(run: Path, store_url: str, cache: str) -> dict:
    from pplug.serve.app import create_app
    from pplug.store import open_store

    with open_store(store_url) as store:
        if not store.has_user(USER):
            store.create_user(USER, task="LaMP_3")
        app = create_app(run, store, admin_key=ADMIN, device="cpu", reload_interval=3600, embedding_cache=cache)
        return asyncio.run(_hostile(app, store))


# --- main ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-server":
        child_server(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5])
        return 0
    if argv and argv[0] in ("--child-cli", "--child-cli-no-keys"):
        child_cli(argv[1], argv[2], argv[3], int(argv[4]), argv[5:], keys=argv[0] == "--child-cli")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=13, help="kill points per (backend, path): 4 x 13 = 52 by default")
    ap.add_argument("--control-kills", type=int, default=13,
                    help="kill points of the control without idempotency keys (SQLite, the server)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_server import make_checkpoint
    from meta import run_meta

    work = Path(tempfile.mkdtemp(prefix="pplug-bench-reliability-"))
    import pgserver

    pg = pgserver.get_server(work / "pg", cleanup_mode="stop")
    try:
        run = make_checkpoint(work, "tiny", "LaMP_3")
        results: dict[str, Any] = {"meta": run_meta(device="cpu", dtype="float32"),
                                   "model": "tiny random LLM, default encoder",
                                   "kills_per_path": args.kills, "seed": args.seed, "backends": {}}
        for backend in ("sqlite", "postgresql"):
            def store(name: str, backend: str = backend) -> str:
                if backend == "sqlite":
                    return str(work / f"{name}.sqlite")
                import psycopg

                with psycopg.connect(pg.get_uri(), autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                return pg.get_uri(name)

            row: dict[str, Any] = {"hostile": run_hostile(run, store("hostile"), str(work / "emb-h.sqlite"))}
            print(f"{backend}: hostile inputs {row['hostile']['refused_correctly']}/{row['hostile']['tried']} "
                  f"refused correctly {row['hostile']['failures']}", flush=True)
            for i, mode in enumerate(("server", "cli")):
                row[mode] = run_faults(mode, store(f"faults_{mode}"), run, "default", work, args.kills,
                                       args.seed * 100 + i,
                                       log=lambda m, backend=backend: print(f"{backend}: {m}", flush=True))
            results["backends"][backend] = row
        if args.control_kills:
            results["control_without_keys"] = run_faults(
                "server", str(work / "control.sqlite"), run, "default", work, args.control_kills, args.seed * 100 + 9,
                keys=False, log=lambda m: print(f"sqlite, no idempotency keys: {m}", flush=True))
    finally:
        pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    totals = {k: sum(r[m][k] for r in results["backends"].values() for m in ("server", "cli"))
              for k in ("faults", "rows_acknowledged", "rows_stored", "lost", "duplicates", "half_written", "errors")}
    totals["hostile_tried"] = sum(r["hostile"]["tried"] for r in results["backends"].values())
    totals["hostile_refused_correctly"] = sum(r["hostile"]["refused_correctly"] for r in results["backends"].values())
    results["totals"] = totals
    print(json.dumps(totals, sort_keys=True))
    if args.out:
        from pplug.core.io import atomic_write_json

        results["command"] = "python benchmarks/bench_reliability.py " + " ".join(argv)
        atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    bad = totals["lost"] or totals["duplicates"] or totals["half_written"] or totals["errors"] \
        or totals["hostile_refused_correctly"] != totals["hostile_tried"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
