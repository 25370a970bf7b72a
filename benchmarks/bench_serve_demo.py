"""The serving demo of docs/serving.md, run against real checkpoints: two users, opposite histories, one review.

    python benchmarks/bench_serve_demo.py checkpoints/bench_make_train/s0_float32 checkpoints/bench_make_train/s1_float32

For each checkpoint (a `make train` run folder) the script starts the real server app in-process (FastAPI's
test client: the same routes, keys, store and batching as `pplug serve`, no socket), creates alice and bob,
posts the docs' histories (alice: four 5-star reviews; bob: two 1s and two 2s), and asks both, and carol who
does not exist, for the docs' review. It records each answer and the label probabilities, so the docs' table
says which checkpoints it came from and how much the figures move between runs of the same recipe.

Writes `benchmarks/results/serve_demo.json` (`python -m benchmarks.report` renders it into docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pplug.core.io import atomic_write_json  # noqa: E402

ADMIN = "pplug-demo-admin"
HISTORIES = {
    "alice": [("An absolute masterpiece, every track is a joy.", "5"),
              ("Beautiful production and a voice that gives me chills.", "5"),
              ("I play this album every morning, simply wonderful.", "5"),
              ("Great songs, great band, great live energy.", "5")],
    "bob": [("Boring and overproduced, nothing here I would play twice.", "1"),
            ("Flat vocals, muddy mix. Skip it.", "1"),
            ("Two decent songs, the rest is filler.", "2"),
            ("A disappointing follow-up to a great debut.", "2")],
}
"""The docs' users and their histories (text, score), oldest first."""
REVIEW = "The second half of the album drags, but the opener is lovely."
"""The one review every user is asked to rate."""


def demo(checkpoint: Path) -> dict:
    """The docs' calls against one checkpoint; returns each user's answer and label probabilities."""
    from fastapi.testclient import TestClient

    from pplug.serve.app import create_app

    with tempfile.TemporaryDirectory(prefix="pplug-demo-") as tmp:
        app = create_app(checkpoint, Path(tmp) / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=4,
                         window_ms=1)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        users = {}
        with TestClient(app) as client:
            model = client.get("/v1/models", headers=admin).json()["data"][0]["id"]
            for user, items in HISTORIES.items():
                r = client.post("/v1/users", headers=admin, json={"user_id": user})
                r.raise_for_status()
                key = {"Authorization": f"Bearer {r.json()['api_key']}"}
                client.post(f"/v1/users/{user}/history", headers=key,
                            json={"items": [{"text": t, "score": s} for t, s in items]}).raise_for_status()
                users[user] = key
            out = {}
            for user, headers, body in [
                *((u, k, {}) for u, k in users.items()),
                ("carol", admin, {"user": "carol"}),  # unknown: a cold-start user
            ]:
                r = client.post("/v1/completions", headers=headers, json={"model": model, "prompt": REVIEW, **body})
                r.raise_for_status()
                d = r.json()
                out[user] = {"output": d["choices"][0]["text"], "label_probs": d["pplug"]["label_probs"][0],
                             "cold_start": d["pplug"]["cold_start"], "history_items": d["pplug"]["history_items"],
                             "decoding": d["pplug"]["decoding"]}
    metrics = checkpoint / "metrics.json"
    verdict = json.loads(metrics.read_text(encoding="utf-8")).get("verdict") if metrics.is_file() else None
    return {"checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
            "users": out, "verdict": verdict}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="run folders of `make train` (or any LaMP_3 checkpoint)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_demo.json"))
    args = p.parse_args(argv)
    runs = []
    for c in args.checkpoints:
        run = demo(Path(c).resolve())
        runs.append(run)
        print(run["checkpoint"] + ": " + ", ".join(f"{u} -> {r['output']}" for u, r in run["users"].items()), flush=True)
    atomic_write_json(Path(args.out), {"meta": run_meta(device="cpu", dtype="checkpoint's"), "review": REVIEW,
                                       "histories": HISTORIES, "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
