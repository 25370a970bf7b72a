"""Soak of `pplug serve` replicas sharing one PostgreSQL store, 1 replica against 2, on loopback.

    python benchmarks/bench_store_replicas.py                  # tiny random LLM, real encoder, 20 s each
    python benchmarks/bench_store_replicas.py --seconds 60 --users 32 --out benchmarks/results/x.json

A real PostgreSQL (pgserver, the tests' server package; or `--store URL`) gets a fresh database per setting;
the replicas are `python -m pplug.cli serve` subprocesses on free 127.0.0.1 ports with that one `--store`.
`--users` users are created over HTTP with LaMP_3 histories; then, for `--seconds`, every user runs a
closed loop with its own key: append one history item through replica n % R, then generate through the
next replica, so with 2 replicas every read follows a write made through the other one. Checked:

- read-your-write across replicas: the generation's `history_items` equals the user's acknowledged count
  (capped at the checkpoint's `max_history`, 64; a "stale read" otherwise), and the reply's `user` is the key's own user (a "leak" otherwise); a request
  with the user's key for another user must be refused (403);
- afterwards, in the database: every acknowledged item is stored (per-user counts), and every user's persona
  versions run 1..n without a gap, n being the version the last acknowledged append reported.

Reported per setting: requests/s over all requests, and p50/p99 latency of appends and of generations.
Outputs are not judged (an untrained checkpoint): this measures the serving tier's cost and consistency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from bench_server import MODEL, WORDS, ServeProcess, create_users, load_users, make_checkpoint  # noqa: E402
from meta import run_meta  # noqa: E402


class Replica(ServeProcess):
    """One `pplug serve` subprocess on 127.0.0.1 with the shared store."""

    def __init__(self, run: Path, store: str, work: Path, n: int, window_ms: float):
        super().__init__(["--checkpoint", str(run), "--store", store, "--batch-window-ms", str(window_ms),
                          "--model-name", MODEL, "--embedding-cache", str(work / f"emb-{n}.sqlite"),
                          "--device", "cpu"], work / f"replica-{n}.log")


def q(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))] if values else 0.0


async def soak(urls: list[str], keys: list[str], users: list[dict], seconds: float, cap: int,
               acked: dict[int, int]) -> dict:
    """Every user: append through one replica, generate through the next, until the time is up.

    `acked`: each user's stored item count so far (updated in place with every acknowledged append).
    """
    n_users = len(keys)
    last_version: dict[int, int] = {}
    lat = {"add": [], "generate": []}
    counts = {"errors": 0, "stale_reads": 0, "leaks": 0, "cross_user_refused": 0, "requests": 0}
    stop = time.monotonic() + seconds

    async def user(i: int) -> None:
        uid = f"u{i:03d}"
        clients = [httpx.AsyncClient(base_url=u, timeout=600, headers={"Authorization": f"Bearer {keys[i]}"})
                   for u in urls]
        try:
            n = i  # users start on different replicas
            while time.monotonic() < stop:
                w, r = clients[n % len(urls)], clients[(n + 1) % len(urls)]
                item = {"text": f"soak {uid}-{n} " + " ".join(random.choices(WORDS, k=8)), "score": str(1 + n % 5)}
                t0 = time.perf_counter()
                resp = await w.post(f"/v1/users/{uid}/history", json={"items": [item]})
                lat["add"].append(time.perf_counter() - t0)
                counts["requests"] += 1
                if resp.status_code == 200:
                    acked[i] += 1
                    last_version[i] = resp.json()["persona_version"]
                else:
                    counts["errors"] += 1
                t0 = time.perf_counter()
                resp = await r.post("/v1/completions", json={"model": MODEL, "prompt": users[i]["inputs"][0]})
                lat["generate"].append(time.perf_counter() - t0)
                counts["requests"] += 1
                if resp.status_code != 200:
                    counts["errors"] += 1
                else:
                    meta = resp.json()["pplug"]
                    counts["leaks"] += meta["user"] != uid
                    counts["stale_reads"] += meta["history_items"] != min(acked[i], cap)
                if n % 10 == 0:  # another user's data with this key: must be refused
                    other = f"u{(i + 1) % n_users:03d}"
                    resp = await r.get(f"/v1/users/{other}")
                    counts["requests"] += 1
                    counts["cross_user_refused"] += resp.status_code == 403
                    counts["leaks"] += resp.status_code == 200
                n += 1
        finally:
            for c in clients:
                await c.aclose()

    t0 = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(n_users)))
    wall = time.perf_counter() - t0
    return {"acked": acked, "last_version": last_version, "wall": wall, "lat": lat, **counts}


def check_store(url: str, n_users: int, res: dict) -> dict:
    """Every acknowledged item stored; persona versions 1..n per user without a gap."""
    from pplug.store import open_store

    lost, gaps = {}, {}
    with open_store(url, create=False) as store:
        for i in range(n_users):
            uid = f"u{i:03d}"
            n = store.count_interactions(uid)
            if n != res["acked"][i]:
                lost[uid] = (n, res["acked"][i])
            versions = [c.version for c in store.persona_log(uid)]
            if versions != list(range(1, len(versions) + 1)) or versions[-1] < res["last_version"].get(i, 1):
                gaps[uid] = versions[-3:]
    return {"users_with_lost_items": lost, "users_with_persona_gaps": gaps}


def run_setting(run: Path, db_url, admin_url: str, work: Path, replicas: int, users: list[dict], seconds: float,
                window_ms: float, cap: int) -> dict:
    """One setting on a fresh database `db_url(name)`: start the replicas, create the users, soak, check."""
    import psycopg

    db = f"bench_replicas_{replicas}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    url = db_url(db)
    from pplug.store import open_store

    open_store(url).close()  # migrate once before the replicas start together
    procs = [Replica(run, url, work, n, window_ms) for n in range(replicas)]
    try:
        deadline = time.monotonic() + 300
        for p in procs:
            p.wait_ready(deadline)
        keys = create_users(procs[0].url, users)
        acked = {i: len(u["history"]) for i, u in enumerate(users)}
        warm = asyncio.run(soak([p.url for p in procs], keys, users, 2.0, cap, acked))  # caches, connections
        before = sum(acked.values())
        res = asyncio.run(soak([p.url for p in procs], keys, users, seconds, cap, acked))
        res["last_version"] = {**warm["last_version"], **res["last_version"]}
    finally:
        for p in procs:
            p.stop()
    chk = check_store(url, len(users), res)
    out = {"replicas": replicas, "users": len(users), "seconds": seconds, "requests": res["requests"],
           "rps": round(res["requests"] / res["wall"], 2),
           "add_p50_ms": round(q(res["lat"]["add"], 0.5) * 1000, 1),
           "add_p99_ms": round(q(res["lat"]["add"], 0.99) * 1000, 1),
           "generate_p50_ms": round(q(res["lat"]["generate"], 0.5) * 1000, 1),
           "generate_p99_ms": round(q(res["lat"]["generate"], 0.99) * 1000, 1),
           "history_added": sum(acked.values()) - before,
           "generations": len(res["lat"]["generate"]), "errors": res["errors"], "stale_reads": res["stale_reads"],
           "leaks": res["leaks"], "cross_user_refused": res["cross_user_refused"], **chk}
    print(f"{replicas} replica(s): {out['rps']:.2f} req/s; append p50/p99 {out['add_p50_ms']:.0f}/"
          f"{out['add_p99_ms']:.0f} ms; generate p50/p99 {out['generate_p50_ms']:.0f}/{out['generate_p99_ms']:.0f} ms;"
          f" {out['history_added']} appended, {out['generations']} generated; errors {out['errors']}, stale reads "
          f"{out['stale_reads']}, leaks {out['leaks']}, lost {len(chk['users_with_lost_items'])}, persona gaps "
          f"{len(chk['users_with_persona_gaps'])}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--history", type=int, default=10, help="history items per user before the soak")
    ap.add_argument("--seconds", type=float, default=20.0, help="soak length per setting")
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--store", default=None, help="a postgresql:// URL of a server to use (default: pgserver)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pplug-bench-replicas-"))
    server = None
    if args.store:
        admin_url = args.store
        base = args.store.rsplit("/", 1)[0]
        db_url = lambda db: f"{base}/{db}"  # noqa: E731
    else:
        import pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        admin_url, db_url = server.get_uri(), server.get_uri
    try:
        run = make_checkpoint(work, "tiny", "LaMP_3")
        users = load_users(args.users, args.history, "LaMP_3")
        results = {"meta": run_meta(device="cpu"), "model": "tiny", "task": "LaMP_3", "store": "postgresql (pgserver)"
                   if server else "postgresql", "window_ms": args.window_ms, "settings": []}
        for r in args.replicas:
            results["settings"].append(run_setting(run, db_url, admin_url, work, r, users, args.seconds,
                                                   args.window_ms, cap=64))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    bad = [s for s in results["settings"] if s["errors"] or s["stale_reads"] or s["leaks"]
           or s["users_with_lost_items"] or s["users_with_persona_gaps"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
