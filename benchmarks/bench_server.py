"""Load test of `pplug serve`: a real HTTP client against the real server on loopback, batched vs unbatched.

    python benchmarks/bench_server.py                          # tiny random LLM (fast), real encoder
    python benchmarks/bench_server.py --task LaMP_7 --max-tokens 16      # a generation task
    python benchmarks/bench_server.py --model default --requests 4 --concurrency 1 8
    python benchmarks/bench_server.py --engine vllm --device cuda --model default --task LaMP_7 --concurrency 1 8 32 128

For each server setting (dynamic batching `--max-batch 32`, window 10 ms; unbatched `--max-batch 1`) the
server is started as a subprocess (`python -m pplug.cli serve`) on a free loopback port with a fresh store;
32 users are created over HTTP with LaMP_3 histories (real music reviews from
/work/shared/data/real_lamp/music_ratings when present, else short synthetic reviews). Then for 1, 8 and 32
concurrent users (asyncio + httpx, one closed-loop client per user, each sending `--requests` completions
with its own key) it measures requests/s and p50/p99 latency. Last, a soak on the batched server: writers
append history items one at a time while readers generate; afterwards every acknowledged item must be in the
store (per-user counts) and `PRAGMA integrity_check` must say ok.

--task LaMP_3 (default) is a rating task: one forward pass per request (prompt prefill + 5 label scores);
--task LaMP_7 (tweet paraphrase, the same review texts as tweets) generates `--max-tokens` tokens greedily, so
each request is many small decoding steps: the case batching helps most on a CPU.

--model tiny: a 2-layer random Llama (hidden 64) with SmolLM2's tokenizer, an untrained PPlug embedder, the
real all-MiniLM-L6-v2 encoder. --model default: SmolLM2-135M-Instruct; --checkpoint uses a trained run. Outputs
are not judged here (untrained weights unless --checkpoint): this measures serving cost.

--engine vllm serves with `pplug serve --engine vllm` (run this script with the Python of the environment that
has vLLM; the server subprocess uses the same one): generation tasks then generate on vLLM, rating tasks are
still scored on the HF model. --device picks the server's device (default cpu).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
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
from meta import run_meta  # noqa: E402

ADMIN = "bench-admin-key"
MODEL = "pplug-bench"
DATA = Path("/work/shared/data/real_lamp/music_ratings/dev_questions.json")
WORDS = ["great", "boring", "loved", "noisy", "classic", "weak", "brilliant", "dull", "fresh", "tired", "album",
         "voice", "guitar", "lyrics", "production", "melody"]


def make_checkpoint(out: Path, model: str, task: str) -> Path:
    """An untrained PPlug checkpoint on the tiny random LLM or the real default one (cost only)."""
    import torch

    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel

    torch.manual_seed(0)
    base = "default"
    if model == "tiny":
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from pplug.core.weights import resolve_llm

        tok = AutoTokenizer.from_pretrained(resolve_llm("default"))
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        base = str(out / "tiny_llm")
        LlamaForCausalLM(cfg).save_pretrained(base)
        tok.save_pretrained(base)
    config = PPlugConfig(base_model_name_or_path=base, encoder_name_or_path="default", task=task, max_history=64,
                         max_input_tokens=128, max_target_tokens=8, torch_dtype="float32")
    PPlugModel.from_config(config, cache_path=":memory:").save_pretrained(out / "run" / "final")
    return out / "run"


def load_users(n: int, history: int, task: str = "LaMP_3", seed: int = 0) -> list[dict]:
    """n users: {"history": items, "inputs": review texts}; real music reviews when the data is here
    (for LaMP_7 the reviews play the tweets: items {"text"})."""
    users = _load_reviews(n, history, seed)
    if task == "LaMP_7":
        for u in users:
            u["history"] = [{"text": it["text"]} for it in u["history"]]
    return users


def _load_reviews(n: int, history: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    if DATA.is_file():
        users, seen = [], set()
        for q in json.loads(DATA.read_text(encoding="utf-8")):
            if q["user_id"] in seen or len(q.get("profile") or []) < 4:
                continue
            seen.add(q["user_id"])
            prof = [{"text": " ".join(str(p["text"]).split()[:60]), "score": str(p["score"])} for p in q["profile"]]
            content = q["input"].split("review:", 1)[-1].strip()
            users.append({"history": prof[-history:], "inputs": [" ".join(content.split()[:60])]})
            if len(users) == n:
                print(f"data: {n} users from {DATA}")
                return users
    print("data: synthetic reviews (real_lamp/music_ratings not found)")
    return [{"history": [{"text": " ".join(rng.choices(WORDS, k=12)), "score": str(rng.randint(1, 5))}
                         for _ in range(history)],
             "inputs": [" ".join(rng.choices(WORDS, k=20))]} for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """One `pplug serve` subprocess on a free 127.0.0.1 port, its output in `log`."""

    def __init__(self, serve_args: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PPLUG_ADMIN_KEY": ADMIN}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pplug.cli", "serve", *serve_args, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self, deadline: float) -> None:
        """Until /health answers 200; an error naming the log once the process exits or `deadline` passes."""
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pplug serve did not start; see {self.log.name}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class ServerProcess(ServeProcess):
    """The benchmarked server: its own SQLite store and batch size, started and ready."""

    def __init__(self, run: Path, work: Path, max_batch: int, window_ms: float, engine: str = "hf",
                 device: str = "cpu"):
        self.store = work / f"store-b{max_batch}.sqlite"
        super().__init__(["--checkpoint", str(run), "--store", str(self.store), "--max-batch", str(max_batch),
                          "--batch-window-ms", str(window_ms), "--model-name", MODEL,
                          "--embedding-cache", str(work / "emb.sqlite"), "--device", device, "--engine", engine],
                         work / f"server-{engine}-b{max_batch}.log")
        self.wait_ready(time.monotonic() + (900 if engine == "vllm" else 300))  # vLLM compiles at start


def create_users(url: str, users: list[dict]) -> list[str]:
    keys = []
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        for i, u in enumerate(users):
            r = c.post("/v1/users", json={"user_id": f"u{i:03d}"})
            r.raise_for_status()
            keys.append(r.json()["api_key"])
            c.post(f"/v1/users/u{i:03d}/history", json={"items": u["history"]}).raise_for_status()
    return keys


BODY: dict = {}
"""Extra completion fields (max_tokens for generation tasks), set by main."""


async def load(url: str, keys: list[str], users: list[dict], concurrency: int, requests: int) -> dict:
    """`concurrency` closed-loop clients (users 0..c-1), `requests` completions each."""
    lat: list[float] = []
    sizes: list[int] = []
    errors = 0

    async def client(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=600, headers={"Authorization": f"Bearer {keys[i]}"}) as c:
            for k in range(requests):
                t0 = time.perf_counter()
                r = await c.post("/v1/completions", json={"model": MODEL, "prompt": users[i]["inputs"][0], **BODY})
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                else:
                    sizes.append(r.json()["pplug"]["batch_size"][0])

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]  # noqa: E731
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "seconds": round(wall, 3),
            "rps": round(len(lat) / wall, 3), "p50_ms": round(q(0.5) * 1000, 1), "p99_ms": round(q(0.99) * 1000, 1),
            "mean_batch": round(statistics.mean(sizes), 2) if sizes else 0}


async def soak(url: str, keys: list[str], users: list[dict], seconds: float, writers: int, readers: int) -> dict:
    acked: dict[int, int] = {}
    gen_ok = gen_err = add_err = 0
    stop = time.monotonic() + seconds

    async def writer(i: int) -> None:
        nonlocal add_err
        async with httpx.AsyncClient(base_url=url, timeout=600, headers={"Authorization": f"Bearer {keys[i]}"}) as c:
            n = 0
            while time.monotonic() < stop:
                item = {"text": f"soak item {i}-{n} " + " ".join(random.choices(WORDS, k=8)), "score": str(1 + n % 5)}
                if "score" not in users[i]["history"][0]:
                    del item["score"]
                r = await c.post(f"/v1/users/u{i:03d}/history", json={"items": [item]})
                if r.status_code == 200:
                    acked[i] = acked.get(i, 0) + 1
                else:
                    add_err += 1
                n += 1

    async def reader(i: int) -> None:
        nonlocal gen_ok, gen_err
        async with httpx.AsyncClient(base_url=url, timeout=600, headers={"Authorization": f"Bearer {keys[i]}"}) as c:
            while time.monotonic() < stop:
                r = await c.post("/v1/completions", json={"model": MODEL, "prompt": users[i]["inputs"][0], **BODY})
                gen_ok, gen_err = (gen_ok + 1, gen_err) if r.status_code == 200 else (gen_ok, gen_err + 1)

    await asyncio.gather(*(writer(i) for i in range(writers)),
                         *(reader(writers + i) for i in range(readers)))
    return {"acked": acked, "generations": gen_ok, "generation_errors": gen_err, "add_errors": add_err}


def check_store(path: Path, users: list[dict], acked: dict[int, int]) -> dict:
    db = sqlite3.connect(path)
    lost = {}
    for i, u in enumerate(users):
        n = db.execute("SELECT COUNT(*) FROM interactions WHERE user_id = ?", (f"u{i:03d}",)).fetchone()[0]
        want = len(u["history"]) + acked.get(i, 0)
        if n != want:
            lost[f"u{i:03d}"] = (n, want)
    ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return {"integrity_check": ok, "mismatched_users": lost}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "default"], help="LLM of the generated checkpoint")
    ap.add_argument("--checkpoint", default=None, help="serve this run/checkpoint instead of a generated one")
    ap.add_argument("--task", default="LaMP_3", choices=["LaMP_3", "LaMP_7"], help="task of a generated checkpoint")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per generation (generation tasks)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=8, help="requests per concurrent user")
    ap.add_argument("--history", type=int, default=20, help="history items per user")
    ap.add_argument("--soak-seconds", type=float, default=20.0)
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--max-batch", type=int, default=32, help="rows per pass of the batched server")
    ap.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="what generates in the server")
    ap.add_argument("--device", default="cpu", help="the server's device: cpu (default), cuda, auto")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (stores, server logs, checkpoint)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pplug-bench-server-"))
    run = Path(args.checkpoint) if args.checkpoint else make_checkpoint(work, args.model, args.task)
    from pplug.core.checkpoints import resolve
    from pplug.core.tasks import get_task
    from pplug.modeling.model import PPlugModel

    task = get_task(PPlugModel.load_checkpoint_config(resolve(run))[0].task)
    if not task.labels:
        BODY["max_tokens"] = args.max_tokens
    users = load_users(max(max(args.concurrency), 8), args.history, task.name)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    host = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags}
    print(f"checkpoint {run} ({args.checkpoint and 'given' or args.model}, {task.name}"
          f"{', %d new tokens' % args.max_tokens if not task.labels else ''}); engine {args.engine} on "
          f"{args.device}; host {host}; work dir {work}")
    results: dict = {"host": host, "meta": run_meta(device=args.device), "model": args.checkpoint or args.model,
                     "task": task.name, "engine": args.engine, "device": args.device, "max_batch": args.max_batch,
                     "max_tokens": BODY.get("max_tokens"), "requests_per_user": args.requests,
                     "history": args.history, "window_ms": args.window_ms, "load": {}}
    for label, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
        srv = ServerProcess(run, work, max_batch, args.window_ms, args.engine, args.device)
        try:
            keys = create_users(srv.url, users)
            # warm-up: caches, lazy init and the CPU kernels' per-shape setup, alone and batched
            asyncio.run(load(srv.url, keys, users, 1, 2))
            asyncio.run(load(srv.url, keys, users, min(8, len(users)), 2))
            rows = []
            for c in args.concurrency:
                res = asyncio.run(load(srv.url, keys, users, c, args.requests))
                rows.append(res)
                print(f"{label:9s} c={c:<3d} {res['rps']:8.2f} req/s  p50 {res['p50_ms']:8.1f} ms  "
                      f"p99 {res['p99_ms']:8.1f} ms  mean batch {res['mean_batch']:5.2f}  errors {res['errors']}",
                      flush=True)
            results["load"][label] = rows
            if label == "batched" and args.soak_seconds > 0:
                w = min(4, len(users) // 2)
                s = asyncio.run(soak(srv.url, keys, users, args.soak_seconds, writers=w, readers=min(8, len(users) - w)))
                chk = check_store(srv.store, users, s["acked"])
                results["soak"] = {"seconds": args.soak_seconds, "history_added": sum(s["acked"].values()),
                                   "generations": s["generations"], "generation_errors": s["generation_errors"],
                                   "add_errors": s["add_errors"], **chk}
                print(f"soak {args.soak_seconds:.0f} s: {sum(s['acked'].values())} history items added while "
                      f"{s['generations']} generations ran; errors add {s['add_errors']} gen {s['generation_errors']}; "
                      f"lost/mismatched users {len(chk['mismatched_users'])}; integrity_check {chk['integrity_check']}",
                      flush=True)
        finally:
            srv.stop()
    for b, u in zip(results["load"]["batched"], results["load"]["unbatched"]):
        print(f"c={b['concurrency']:<3d} batched/unbatched throughput: {b['rps'] / u['rps']:.2f}x")
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    soak_ok = "soak" not in results or (results["soak"]["integrity_check"] == "ok"
                                        and not results["soak"]["mismatched_users"])
    return 0 if soak_ok else 1


if __name__ == "__main__":
    sys.exit(main())
