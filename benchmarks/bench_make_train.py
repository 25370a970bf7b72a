"""The `make train` recipe over seeds and dtypes: does the default run personalize on every host?

    python benchmarks/bench_make_train.py                          # seeds 0 1 2 x {float32, bfloat16}
    python benchmarks/bench_make_train.py --seeds 0 --dtypes float32 --no-history-seeds

Each run is `python train.py --seed_everything S --model.torch_dtype D` (configs/synthetic.yaml, the embedded
synthetic data), timed from the outside; one at a time by default, so each wall time is the command's own
(`--jobs 2` halves the benchmark's time on 2 cores, and the table says the runs shared them). Its
`metrics.json` gives PPlug's MAE (the decoding saved with the checkpoint, what `make train` prints first),
its RMSE (expected decoding) and the frozen LLM alone on the same dev questions. The **history-blind
ablation** trains and scores the same recipe on a copy of the data whose profiles are empty, so every
user is a cold-start user: whatever the recipe gains beyond that ablation comes through the user's
history, and the ablation itself cannot beat the data's history-blind ceiling except by noise.

Prints one row per run, then mean ± sd per dtype, and writes `benchmarks/results/make_train.json`
(`python -m benchmarks.report` renders it into the README). `--clean-clone` adds what a new user's first
`make train` costs: set-up and training timed in a fresh `git clone` of HEAD.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import children_stop_with_me, run_logged  # noqa: E402
from meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pplug.core.io import atomic_write_json  # noqa: E402
from pplug.lamp.data import load_split, write_split  # noqa: E402
from pplug.synth.generate import REPORT_NAME, ensure_default_data  # noqa: E402

DTYPES = ("float32", "bfloat16")


def without_history(data: Path, out: Path) -> Path:
    """A copy of the synthetic set with every profile emptied (the synth report, and so its ceiling, kept)."""
    for split in ("train", "dev"):
        s = load_split(data, split)
        for ex in s.examples:
            ex.profile = []
        write_split(out, split, s.task.name, s.examples)
    shutil.copyfile(data / REPORT_NAME, out / REPORT_NAME)
    return out


def train(run: str, seed: int, dtype: str, ckpt_root: Path, extra: list[str], threads: int, reuse: bool) -> dict:
    """One train.py run on `threads` CPU threads; returns its metrics.json plus the wall time seen from outside
    (kept as `<run>.json` beside the run; `reuse` returns that of a finished run instead of training again)."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--run", run, "--checkpoints_dir", str(ckpt_root),
           "--seed_everything", str(seed), "--model.torch_dtype", dtype, *extra]
    log, done = ckpt_root / f"{run}.log", ckpt_root / f"{run}.json"
    if reuse and done.is_file():  # a finished run of an interrupted benchmark
        return json.loads(done.read_text(encoding="utf-8"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.monotonic()
    rc = run_logged(cmd, log, cwd=ROOT, env=env)
    wall = time.monotonic() - t0
    if rc:
        raise SystemExit(f"bench_make_train: {' '.join(cmd)} failed (exit {rc}); see {log}")
    result = json.loads((ckpt_root / run / "metrics.json").read_text(encoding="utf-8"))
    result["wall_s"] = round(wall, 1)
    atomic_write_json(done, result)
    return result


def clean_clone_make_train(python: str) -> dict:
    """`git clone` of this repository's HEAD into a temporary folder, then `make setup` and `make train` there,
    each timed: what a new user's first run costs. The pip cache of this machine stays as it is; pplug's own
    cache (`PPLUG_CACHE_DIR`: the converted default LLM, the history embeddings) starts empty, as on a new
    machine, so the one-time GGUF conversion and the embedding of every history item are in the time."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pplug-clone-") as tmp:
        clone = Path(tmp) / "pplug"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        seconds = {}
        env = {**os.environ, "PPLUG_CACHE_DIR": str(Path(tmp) / "pplug-cache")}
        for target in ("setup", "train"):
            t0 = time.monotonic()
            rc = run_logged(["make", target, f"PYTHON={python}"], clone / f"make_{target}.log", cwd=clone, env=env)
            seconds[target] = round(time.monotonic() - t0, 1)
            if rc:
                raise SystemExit(f"bench_make_train: make {target} failed in the clean clone (exit {rc}):\n"
                                 + (clone / f"make_{target}.log").read_text(encoding="utf-8")[-3000:])
        log = (clone / "make_train.log").read_text(encoding="utf-8")
        m = json.loads((clone / "checkpoints" / "pplug-synthetic" / "metrics.json").read_text(encoding="utf-8"))
    dtype = re.search(r"torch_dtype auto -> (\w+)", log)
    return {"setup_s": seconds["setup"], "train_s": seconds["train"], "total_s": round(sum(seconds.values()), 1),
            "dtype": dtype.group(1) if dtype else "not recorded", "pplug": summary(m["metrics"], "pplug (trained)"),
            "verdict": m.get("verdict"), "host": run_meta()["host"], "caches": "pip warm, pplug cache empty"}


def summary(metrics: dict, name: str) -> dict[str, float]:
    """MAE of the saved decoding (the row without a bracket) and RMSE of the expected decoding."""
    saved, expected = metrics[name], metrics.get(f"{name} [expected]", metrics[name])
    return {"mae": saved["mae"], "rmse": expected["rmse"]}


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--no-history-seeds", type=int, nargs="*", default=None,
                   help="seeds of the history-blind ablation (default: the same as --seeds; none: skip it)")
    p.add_argument("--no-history-dtypes", nargs="+", default=list(DTYPES), choices=DTYPES,
                   help="dtypes of the history-blind ablation")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at once, sharing the CPU cores equally (1: each wall time is the run's own)")
    p.add_argument("--reuse", action="store_true", help="keep the finished runs of an interrupted benchmark")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "bench_make_train"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "make_train.json"))
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="more train.py options for every run (last on the command line)")
    p.add_argument("--clean-clone", action="store_true",
                   help="only time `make setup` + `make train` in a fresh clone of HEAD and add it to --out")
    p.add_argument("--python", default="python3.11", help="the interpreter `make` builds the clone's .venv with")
    args = p.parse_args(argv)
    if args.clean_clone:
        out = json.loads(Path(args.out).read_text(encoding="utf-8"))
        with children_stop_with_me():  # `make train` and the train.py it starts stop with this benchmark
            out["clean_clone"] = clean_clone_make_train(args.python)
        atomic_write_json(Path(args.out), out)
        c = out["clean_clone"]
        print(f"clean clone: make setup {c['setup_s']:.0f} s + make train {c['train_s']:.0f} s = {c['total_s']:.0f} s "
              f"({c['dtype']}); {c['verdict']}\nwrote {args.out}")
        return 0
    no_history_seeds = args.seeds if args.no_history_seeds is None else args.no_history_seeds

    ckpt_root = Path(args.checkpoints)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    data = ensure_default_data(ROOT / "lamp_data" / "synthetic")
    blind_data = without_history(data, ckpt_root / "data_without_history")
    report = json.loads((data / REPORT_NAME).read_text(encoding="utf-8"))
    ceiling = report["history_blind_ceiling"]

    out_path = Path(args.out)
    out = {"meta": run_meta(device="cpu", dtype=" / ".join(args.dtypes)), "ceiling": ceiling,
           "history_oracle": report.get("history_oracle"), "jobs": args.jobs, "runs": [], "no_history": []}
    runs = out["runs"]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    lock = threading.Lock()

    def recipe(seed: int, dtype: str) -> None:
        m = train(f"s{seed}_{dtype}", seed, dtype, ckpt_root, args.train_args, threads, args.reuse)
        with lock:
            runs.append({"seed": seed, "dtype": dtype, "wall_s": m["wall_s"],
                         "pplug": summary(m["metrics"], "pplug (trained)"), "none": summary(m["metrics"], "none"),
                         "verdict": m.get("verdict")})
            atomic_write_json(out_path, out)
        print(f"seed {seed} {dtype:8s} {m['wall_s']:6.0f} s | {m.get('verdict')}", flush=True)

    def ablation(seed: int, dtype: str) -> None:
        b = train(f"s{seed}_{dtype}_no_history", seed, dtype, ckpt_root,
                  ["--data.root", str(blind_data), "--compare_none", "false", *args.train_args], threads, args.reuse)
        with lock:
            out["no_history"].append({"seed": seed, "dtype": dtype, "wall_s": b["wall_s"],
                                      **summary(b["metrics"], "pplug (trained)")})
            atomic_write_json(out_path, out)
        print(f"seed {seed} {dtype:8s} without history: {b['wall_s']:6.0f} s | MAE {b['metrics']['pplug (trained)']['mae']:.3f}",
              flush=True)

    # every recipe run is queued first, the ablation after: a cut-short benchmark still holds every seed and dtype
    jobs = [(recipe, seed, dtype) for dtype in args.dtypes for seed in args.seeds]
    jobs += [(ablation, seed, dtype) for dtype in args.no_history_dtypes for seed in no_history_seeds]
    with children_stop_with_me(), ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(*job) for job in jobs]:
            f.result()
    order = {d: i for i, d in enumerate(DTYPES)}
    for rows in (runs, out["no_history"]):
        rows.sort(key=lambda r: (order[r["dtype"]], r["seed"]))
    atomic_write_json(out_path, out)

    print(f"\nhistory-blind ceiling: MAE {ceiling['mae']:.3f} RMSE {ceiling['rmse']:.3f}")
    for dtype in args.dtypes:
        rs = [r for r in runs if r["dtype"] == dtype]
        for key in ("pplug", "no_history", "none"):
            have = ([r for r in out["no_history"] if r["dtype"] == dtype] if key == "no_history"
                    else [r[key] for r in rs])
            if have:
                mae = [h["mae"] for h in have]
                print(f"{dtype:8s} {key:10s} MAE {mean_sd(mae)} ({100 * (1 - statistics.mean(mae) / ceiling['mae']):+.1f}%"
                      f" below the ceiling)  RMSE {mean_sd([h['rmse'] for h in have])}  (n={len(have)})")
        print(f"{dtype:8s} wall per train.py run: {mean_sd([r['wall_s'] for r in rs])} s")
    below = sum(r["pplug"]["mae"] < ceiling["mae"] for r in runs)
    print(f"PPlug below the history-blind ceiling (MAE) in {below} of {len(runs)} runs")

    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
