"""Every method on the shared real LaMP-format sets, same budget, same frozen LLM, one table per set.

    python benchmarks/bench_real_lamp.py                                   # all three sets (long on CPU)
    python benchmarks/bench_real_lamp.py --sets music_ratings --max-steps 100 --max-dev 150
    python benchmarks/bench_real_lamp.py --sets music_ratings --lrs 1e-3 1e-2   # pick each method's lr

For each set (configs/real/<set>.yaml) it trains prompt-tuned, retrieval, pplug and pplug+retrieval with
train.py (same steps, batch, subsample, input length; validation skipped so the budget goes to training:
final/ holds the last weights), then evaluates them together with `none` and the no-model floors
(always-5 and the user's mean rating for ratings; the first N words of the content for titles/subjects,
N = median train gold length) on the same dev subsample via `pplug.evaluate.evaluate`. Prints one table
per set and writes everything to --out (JSON). The real data lives in ../shared/data/real_lamp and is never
copied into the repository; a missing set is skipped with a message.

Learning rate: a soft prompt alone (prompt-tuned, retrieval) needs a larger step than PPlug's projector
MLP at a 100-step budget, so one shared lr would favour one method. With `--lrs A B ...` every method is
trained once per lr on the training split minus `--heldout` seeded questions, scored on those held-out
training questions (never on dev), and the lr with the best held-out main metric is kept; dev is scored
once, for the kept models. The selection table goes to --out too. The split is written under the
checkpoints folder (git-ignored), never into the repository. A rerun reuses the (method, lr) runs whose
held-out scores exist, so an interrupted selection resumes; delete a run folder to retrain it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ("music_ratings", "acl_titles", "enron_subjects")
TRAINABLE = ("prompt-tuned", "retrieval", "pplug", "pplug+retrieval")


def train_method(set_name: str, method: str, args, ckpt_root: Path, data: Path, run: str,
                 extra: tuple[str, ...] = ()) -> float:
    """Train one method with train.py in a fresh process (run folder ckpt_root/run); returns wall seconds."""
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "real" / f"{set_name}.yaml"),
        "--checkpoints_dir", str(ckpt_root), "--run", run,
        "--model.method", method, "--data.root", str(data), *extra,
        "--trainer.max_steps", str(args.max_steps), "--trainer.limit_val_batches", "0",
        "--data.batch_size", str(args.batch_size), "--data.max_train_examples", str(args.max_train),
        "--model.max_input_tokens", str(args.max_input_tokens), "--test", "false", "--compare_none", "false",
        "--trainer.enable_progress_bar", "false", "--seed_everything", str(args.seed),
        *args.train_args,
    ]
    t0 = time.monotonic()
    log = ckpt_root / f"train_{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"training {method} on {set_name} failed (rc {rc}); see {log}")
    return time.monotonic() - t0


def rating_signal(report: dict, data: Path, max_dev: int, seed: int) -> dict[str, float]:
    """Ratings only: Pearson r of each method's expected rating, and of the user's mean rating, with the gold.

    Why: when most golds are 5, MAE rewards answering 5 whatever the review says; r tells whether a method
    orders reviews at all (r = 0: it cannot tell a 2-star review from a 5-star one).
    """
    import statistics

    from pplug.data import load_outputs, load_split
    from pplug.evaluate import floor_predictions
    from pplug.inference import subsample

    split = load_split(data, "dev")
    if getattr(split.task.output_kind, "value", "") != "rating":
        return {}
    examples = subsample(split.examples, max_dev, seed)
    ids = [ex.id for ex in examples]
    golds = [float(ex.output) for ex in examples]
    preds = {row: load_outputs(path)[1] for row, path in report["files"].items() if row.endswith("[expected]")}
    preds["floor: user mean rating"] = floor_predictions(split.task, examples)["user mean rating"]
    out = {}
    for row, p in preds.items():
        xs = [float(p[i]) for i in ids]
        out[row] = round(statistics.correlation(xs, golds), 3) if len(set(xs)) > 1 else 0.0
    return out


def write_selection_split(data: Path, out: Path, n_heldout: int, seed: int) -> Path:
    """`fit` = train minus `n_heldout` seeded questions, `heldout` = those questions (for picking the lr)."""
    from pplug.data import load_split, write_split

    if (out / "heldout_outputs.json").is_file() and (out / "fit_outputs.json").is_file():
        return out
    train = load_split(data, "train")
    held = set(random.Random(seed).sample(range(len(train.examples)), min(n_heldout, len(train.examples) // 5)))
    write_split(out, "fit", train.task.name, [ex for i, ex in enumerate(train.examples) if i not in held])
    write_split(out, "heldout", train.task.name, [ex for i, ex in enumerate(train.examples) if i in held])
    return out


def select_lr(set_name: str, method: str, args, ckpt_root: Path, data: Path) -> tuple[str, dict]:
    """Train `method` once per lr on the fit split; keep the best on the held-out split. Returns (run, table)."""
    from pplug.evaluate import evaluate
    from pplug.tasks import get_task

    sel = write_selection_split(data, ckpt_root / "selection_data", args.heldout, args.seed)
    table: dict = {}
    best_run, best = "", None
    for lr in args.lrs:
        run = f"{method.replace('+', '_')}_lr{lr}"
        out = ckpt_root / "selection" / f"{run}.json"
        done = out.with_suffix(".metrics.json")
        timing = out.with_suffix(".train_seconds")
        if done.is_file() and (ckpt_root / run / "final").is_dir():  # an interrupted benchmark resumes here
            report = json.loads(done.read_text())
            seconds = float(timing.read_text()) if timing.is_file() else None
            print(f"[{set_name}] {method} lr {lr}: reusing {ckpt_root / run}", flush=True)
        else:
            seconds = train_method(set_name, method, args, ckpt_root, sel, run,
                                   ("--data.train_split", "fit", "--data.val_split", "heldout",
                                    "--data.test_split", "heldout", "--model.lr", lr))
            report = evaluate([f"{method}={ckpt_root / run}"], str(sel), "heldout", methods=[method],
                              out=str(out), seed=args.seed, progress=False, max_new_tokens=args.max_new_tokens)
            timing.write_text(f"{seconds:.1f}\n")
        task = get_task(report["task"])
        value = report["metrics"][method][task.main_metric]
        table[lr] = {task.main_metric: value, "train_seconds": round(seconds, 1) if seconds is not None else None}
        print(f"[{set_name}] {method} lr {lr}: held-out {task.main_metric} {value:.4f}", flush=True)
        if best is None or (value > best if task.higher_is_better else value < best):
            best_run, best = run, value
    return best_run, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp"), help="real_lamp folder")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--methods", nargs="+", default=list(TRAINABLE), choices=TRAINABLE)
    p.add_argument("--max-steps", type=int, default=100, help="optimizer steps per method")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-train", type=int, default=1600, help="seeded train subsample")
    p.add_argument("--max-dev", type=int, default=150, help="seeded dev subsample (the same for every method)")
    p.add_argument("--max-input-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget at evaluation (default: the task's, 128 for LaMP_4-7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "bench_real"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_lamp.json"))
    p.add_argument("--skip-train", action="store_true", help="evaluate existing checkpoints only")
    p.add_argument("--lrs", nargs="+", default=None,
                   help="pick each method's lr among these on held-out training questions (default: the config's)")
    p.add_argument("--heldout", type=int, default=150, help="held-out training questions for --lrs")
    p.add_argument("--method-lr", nargs="+", default=[], metavar="METHOD=LR",
                   help="a fixed lr per method (e.g. the ones --lrs picked on another set): prompt-tuned=1e-2 ...")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra train.py arguments (last)")
    args = p.parse_args(argv)
    pairs = [x.split("=", 1) for x in args.method_lr]
    method_lr = {kv[0]: kv[1] for kv in pairs if len(kv) == 2}
    if len(method_lr) != len(pairs) or set(method_lr) - set(TRAINABLE) or not all(method_lr.values()):
        p.error(f"--method-lr takes METHOD=LR with METHOD in {TRAINABLE}; got {args.method_lr}")

    from pplug.evaluate import evaluate
    from pplug.inference import DECODINGS

    results: dict = {"settings": {k: v for k, v in vars(args).items() if k != "train_args"} | {"method_lr": method_lr,
        "train_args": args.train_args, "cpu_count": os.cpu_count()}, "sets": {}}
    for set_name in args.sets:
        data = Path(args.root) / set_name
        if not (data / "dev_questions.json").is_file():
            print(f"skip {set_name}: {data} not found (the shared real data is not on this machine)")
            continue
        ckpt_root = Path(args.checkpoints) / set_name
        train_s, runs, selection = {}, {m: m.replace("+", "_") for m in args.methods}, {}
        if args.lrs:
            for m in args.methods:
                runs[m], selection[m] = select_lr(set_name, m, args, ckpt_root, data)
                times = [v["train_seconds"] for v in selection[m].values()]
                train_s[m] = sum(times) if None not in times else None  # None: a reused run of unknown time
        elif not args.skip_train:
            for m in args.methods:
                print(f"[{set_name}] training {m} ({args.max_steps} steps) ...", flush=True)
                lr = ("--model.lr", method_lr[m]) if m in method_lr else ()
                train_s[m] = round(train_method(set_name, m, args, ckpt_root, data, runs[m], lr), 1)
                print(f"[{set_name}] {m}: {train_s[m]:.0f} s", flush=True)
        t0 = time.monotonic()
        report = evaluate([f"{m}={ckpt_root / runs[m]}" for m in args.methods], str(data), "dev",
                          methods=["none", *args.methods], max_examples=args.max_dev,
                          decodings=DECODINGS, out=str(ckpt_root / "eval" / "dev_preds.json"),
                          floors=True, seed=args.seed, progress=False, max_new_tokens=args.max_new_tokens)
        report["train_seconds"] = train_s
        report["lr_selection"] = selection
        report["eval_seconds"] = round(time.monotonic() - t0, 1)
        report["pearson_r_with_gold"] = rating_signal(report, data, args.max_dev, args.seed)
        results["sets"][set_name] = report
        print(report.get("table", ""))
        if report["pearson_r_with_gold"]:
            print("Pearson r with the gold rating:", json.dumps(report["pearson_r_with_gold"]))
        print(f"train s: {train_s}  eval s: {report['eval_seconds']}", flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if not results["sets"]:
        print("nothing was run: none of the sets was found")
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
