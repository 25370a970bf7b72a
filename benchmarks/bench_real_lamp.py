"""Every method on the shared real LaMP-format sets, same budget, same frozen LLM, one table per set.

    python benchmarks/bench_real_lamp.py                                   # all five sets (long on CPU)
    python benchmarks/bench_real_lamp.py --sets music_ratings --max-steps 100 --max-dev 150
    python benchmarks/bench_real_lamp.py --sets music_ratings --lrs 1e-3 1e-2   # pick each method's lr

For each set (configs/real/<set>.yaml) it trains prompt-tuned, retrieval, pplug and pplug+retrieval with
train.py (same steps, batch, subsample, input length; validation skipped so the budget goes to training:
final/ holds the last weights), then evaluates them together with `none` and the no-model floors
(`pplug.decode.floors`: the train split's majority and the user's mean and majority for ratings and labels;
the first N words of the content, N chosen on train, and the user's nearest past output for generation) on the
same dev subsample via `pplug.decode.evaluate.evaluate`. Prints one table per set and writes everything to --out (JSON). The real data lives in ../shared/data/real_lamp and is never
copied into the repository; a missing set is skipped with a message.

A baseline's own budget: `--method-args retrieval='--model.max_input_tokens 256 --model.retrieval_k 4'` trains
(and so scores) one method with its own train.py settings, e.g. a longer prompt so retrieved items do not take the
input's room; the results' settings record it.

Learning rate: a soft prompt alone (prompt-tuned, retrieval) needs a larger step than PPlug's projector
MLP at a 100-step budget, so one shared lr would favour one method. With `--lrs A B ...` every method is
trained once per lr on the training split minus `--heldout` seeded questions, scored on those held-out
training questions (never on dev), and the lr with the best held-out main metric is kept; dev is scored
once, for the kept models. The selection table goes to --out too. The split is written under the
checkpoints folder (git-ignored), never into the repository. A rerun reuses the (method, lr) runs whose
held-out scores exist, so an interrupted selection resumes; delete a run folder to retrain it.

Seeds and statistics (`--seeds 0 1 2`): every method is trained once per seed (seed_everything and
data.seed), all are scored on the same dev questions (the `--seed` subsample), and each cell is reported as
mean ± sd over the seeds, with paired bootstrap 95% intervals of PPlug minus every other row and every
no-model floor on those questions (`pplug.lamp.stats`: per-question ROUGE / absolute error / squared error,
questions resampled with replacement, seeds pooled per question). "leads" is printed only where the interval
excludes 0. `none` (greedy, no weights) and the floors do not depend on the seed and are scored once.

    python benchmarks/bench_real_lamp.py --sets music_ratings --methods prompt-tuned retrieval pplug \
        --seeds 0 1 2 --max-steps 100 --max-dev 150 --slices cold-start

Shift checks (`--slices`, `pplug.lamp.slices`): cold-start (users with at most 4 history items, or every dev
question with its history cut to its 4 latest items where too few users are that cold), time-shift (each
training user's latest training question, held out of training: every method then trains on the rest),
time-shift-dev (dev questions of users who also have training questions, dated at or after all of them: the
same shift with no retraining, for sets with dated histories; `pplug.lamp.slices.later_than_training`).
`--val-holdout N` (seeds path) trains every method on the training split minus N seeded questions,
validates on those every `--val-every` steps (default a quarter of the steps) and keeps the best validation's
weights (train.py's ModelCheckpoint on the task's main metric) instead of the last step's: a guard against a
seed that ends in a degenerate state. Use a separate --checkpoints folder (a run with it is a different model).
`--slices-only` scores the slices without dev, e.g. a cold-start check of seeds whose dev scores are already
in another results file (the JSON then holds only the slices). `--reuse-preds` reads each run's predictions
from an earlier scoring of the slice (newer than its weights, answering every question) instead of decoding
again, so a method or seed added later is the only one decoded.
`--sets synth_ratings_shift` trains on the synthetic ratings and scores on the same users reviewing another
product domain (`pplug synth --domain-shift`), next to its history-blind ceiling and floors.

The README summary's CPU budget (`--preset cpu`): every set trains half of its recipe's steps (the wall time of
100 steps with the soft prompt in front on 2 cores: 100 on music_ratings and the news sets, 179 on acl_titles,
230 on enron_subjects, whose recipes read the soft prompt after the prompt, for every trainable method), 3
seeds, 300 dev questions (every one on the news sets), retrieval and pplug+retrieval with a 256-token prompt of
their own; resumable, `--jobs` trainings at a time:

    python benchmarks/bench_real_lamp.py --preset cpu --jobs 2 --reuse-preds --out benchmarks/results/real_lamp_cpu.json

GPU recipe (`--preset gpu`): configs/real/<set>.gpu.yaml at the budget of the reference measurement
(1000 steps x batch 8, 384-token prompts, full train splits), 3 seeds, all four trainable methods, trained
`--jobs` at a time (default: as many as fit the free GPU memory at ~10 GiB each; 1 on CPU), then every method
on the full dev splits, greedy, 32 new tokens, evaluation batch 32, all rating decodings and the floors.
Explicit options win over the preset's values. `--device` goes to training (Lightning's accelerator) and
to evaluation.

    python benchmarks/bench_real_lamp.py --preset gpu --out benchmarks/results/real_lamp_gpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import children_stop_with_me, run_logged  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = ("music_ratings", "acl_titles", "enron_subjects", "news_headlines", "news_categories")
SYNTH_SETS: dict[str, dict] = {"synth_ratings": {}, "synth_ratings_shift": {"domain_shift": True}}
"""Synthetic checks (`pplug.synth`, trained with configs/synth_ratings.yaml: the default budget with the rating
recipe of the real rating set): in-domain, and the domain shift whose
train split is byte-identical to synth_ratings' while dev reviews come from another product domain."""
TRAINABLE = ("prompt-tuned", "retrieval", "pplug", "pplug+retrieval")
DECODING_CHOICES = ("argmax", "expected", "median", "greedy", "beam", "mbr")
"""What --decodings offers: the label decodings, and the generation decodings that need no preference model."""


def config_path(set_name: str, suffix: str = "") -> Path:
    """The train.py config of a set: configs/real/<set><suffix>.yaml, or configs/synth_ratings.yaml for synthetic
    sets (train.py reads configs/base.yaml under it)."""
    if set_name in SYNTH_SETS:
        return ROOT / "configs" / "synth_ratings.yaml"
    return ROOT / "configs" / "real" / f"{set_name}{suffix}.yaml"


def set_steps(set_name: str, args) -> int:
    """Optimizer steps for one set: `--recipe-steps` of its recipe's `trainer.max_steps`, else `--max-steps`."""
    if not getattr(args, "recipe_steps", None) or set_name in SYNTH_SETS:
        return args.max_steps
    import yaml

    config = config_path(set_name, getattr(args, "config_suffix", ""))
    steps = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("max_steps")
    if not isinstance(steps, int):
        raise ValueError(f"{config}: trainer.max_steps must be an integer for --recipe-steps, got {steps!r}")
    return max(1, round(steps * args.recipe_steps))


def set_args(set_name: str, args) -> argparse.Namespace:
    """`args` for one set: its steps (`set_steps`), and where the preset scores that set on its time-shift slice
    instead of dev (`set_slices`: the news sets, whose dev splits hold one question per user), that slice alone."""
    per_set: dict = {"max_steps": set_steps(set_name, args)}
    latest = (getattr(args, "set_slices", None) or {}).get(set_name)
    if latest:
        per_set |= {"slices": ["time-shift"], "slices_only": True, "time_shift_latest": latest}
    return argparse.Namespace(**{**vars(args), **per_set})


def decoding_groups(task, decodings: list[str] | None) -> list[list[str]]:
    """The decodings scored on `task`, grouped by decoding pass: a label or rating task reads all of its
    decodings off one pass, a generation task generates once per decoding (so --reuse-preds reuses each on its
    own). None: `SCORED_DECODINGS` (argmax, and a rating task's expected and median)."""
    from pplug.decode.evaluate import applicable_decodings
    from pplug.decode.inference import SCORED_DECODINGS

    asked = applicable_decodings(task, decodings or SCORED_DECODINGS)
    return [[d] for d in asked] if task.is_generation else [asked]


def trained_split(extra: tuple[str, ...]) -> str:
    """The split every method trained on: `--data.train_split` among `build_slices`' overrides, else train."""
    return next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--data.train_split"), "train")


def reference_rows(rows) -> list[str]:
    """The rows whose paired intervals against every other row (and floor) are reported: PPlug, and PPlug on
    top of retrieval (so that one is also compared with retrieval alone), in each decoding."""
    return [r for r in rows if r.split(" [")[0] in ("pplug", "pplug+retrieval")]


def synth_data(set_name: str, ckpt_root: Path) -> tuple[Path, dict]:
    """Generate (once) a synthetic set under the checkpoints folder; returns its folder and synth_report.json."""
    from pplug.synth.generate import REPORT_NAME, make_synthetic

    folder = ckpt_root / "data"
    if not (folder / REPORT_NAME).is_file():
        make_synthetic(folder, kind="ratings", **SYNTH_SETS[set_name])
    return folder, json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))


def baseline_args(method: str) -> tuple[str, ...]:
    """train.py overrides that let a baseline train on a recipe whose settings read the user embedding.

    Why: news_categories' recipe weighs the past items by PPlug's attention (`history_mix_prior`, decoding-only)
    and trains that attention on their labels (`attention_label_loss_weight`); prompt-tuned and retrieval have no
    user embedding, so their config would be refused. They train with the flat shares and no attention term, and
    bench_history_mix gives them the frozen encoder's prior at decoding."""
    from pplug.methods.registry import get_method

    if get_method(method).use_user_embedding:
        return ()
    return ("--model.history_mix_prior", "shares", "--model.attention_label_loss_weight", "0")


def train_method(set_name: str, method: str, args, ckpt_root: Path, data: Path, run: str,
                 extra: tuple[str, ...] = (), seed: int | None = None, env: dict | None = None) -> float:
    """Train one method with train.py in a fresh process (run folder ckpt_root/run); returns wall seconds.

    `seed` (the multi-seed runs) seeds both the model (seed_everything) and the train subsample (data.seed);
    without it the command is the single-seed one (seed_everything = --seed, data.seed from the config).
    """
    config = config_path(set_name, getattr(args, "config_suffix", ""))
    max_train = "null" if args.max_train is None else str(args.max_train)
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config", str(config),
        "--checkpoints_dir", str(ckpt_root), "--run", run,
        "--model.method", method, "--data.root", str(data),
        "--trainer.max_steps", str(args.max_steps), "--trainer.limit_val_batches", "0",
        "--data.batch_size", str(args.batch_size), "--data.max_train_examples", max_train,
        "--model.max_input_tokens", str(args.max_input_tokens), "--test", "false", "--compare_none", "false",
        "--seed_everything", str(args.seed if seed is None else seed),
        *(() if seed is None else ("--data.seed", str(seed))),
        *train_device_args(getattr(args, "device", "auto")),
        *baseline_args(method),
        *extra,  # after the defaults above, so a caller's override (e.g. validation on) wins
        *args.train_args,
    ]
    t0 = time.monotonic()
    log = ckpt_root / f"train_{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    rc = run_logged(cmd, log, cwd=ROOT, env=env)
    if rc != 0:
        raise RuntimeError(f"training {method} on {set_name} failed (rc {rc}); see {log}")
    return time.monotonic() - t0


def rating_signal(report: dict, data: Path, max_dev: int, seed: int) -> dict[str, float]:
    """Ratings only: Pearson r of each method's expected rating, and of the user's mean rating, with the gold.

    Why: when most golds are 5, MAE rewards answering 5 whatever the review says; r tells whether a method
    orders reviews at all (r = 0: it cannot tell a 2-star review from a 5-star one).
    """
    import statistics

    from pplug.decode.floors import floor_predictions
    from pplug.lamp.data import load_outputs, load_split, subsample

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
    """`fit` = train minus `n_heldout` seeded questions, `heldout` = those questions (for picking the lr).

    An existing split in `out` is reused (runs trained on it are reused too), but only if it holds as many
    held-out questions as asked: a split written for another N raises instead of silently changing the run.
    """
    from pplug.lamp.data import load_split, write_split

    train = load_split(data, "train")
    n = min(n_heldout, len(train.examples) // 5)
    if (out / "heldout_outputs.json").is_file() and (out / "fit_outputs.json").is_file():
        have = len(load_split(out, "heldout").examples)
        if have != n:
            raise ValueError(f"{out} holds a split with {have} held-out questions, this run asks for {n} "
                             f"(--heldout / --val-holdout {n_heldout}); use another --checkpoints folder")
        return out
    held = set(random.Random(seed).sample(range(len(train.examples)), n))
    write_split(out, "fit", train.task.name, [ex for i, ex in enumerate(train.examples) if i not in held])
    write_split(out, "heldout", train.task.name, [ex for i, ex in enumerate(train.examples) if i in held])
    return out


def select_lr(set_name: str, method: str, args, ckpt_root: Path, data: Path) -> tuple[str, dict]:
    """Train `method` once per lr on the fit split; keep the best on the held-out split. Returns (run, table)."""
    from pplug.core.tasks import get_task
    from pplug.decode.evaluate import evaluate

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


# --------------------------------------------------------------------------------------------------
# seeds, slices, presets (used when --seeds, --slices or --preset is given; the single-seed path is above)

SLICES = ("cold-start", "time-shift", "time-shift-dev")
PRESETS: dict[str, dict] = {
    # the GPU budget of shared/reference/gpu-measurement-2026-11.md: 1000 steps x batch 8, 384-token prompts,
    # full train splits, no validation; full dev splits, greedy, 32 new tokens, evaluation batch 32
    "gpu": {"config_suffix": ".gpu", "max_steps": 1000, "batch_size": 8, "max_train": None,
            "max_input_tokens": 384, "max_dev": None, "max_new_tokens": 32, "eval_batch_size": 32,
            "seeds": [0, 1, 2]},
    # the README summary's CPU budget: half of each recipe's steps (the wall time of 100 steps with the soft
    # prompt in front; 179 / 230 steps where the recipe puts it after the prompt), 128-token prompts, a
    # 1,600-question train subsample, 300 dev questions, 3 seeds; retrieval and pplug+retrieval (news_headlines'
    # recipe) read a 256-token prompt so their retrieved items do not take the input's room. The news sets are
    # scored on their time-shift slice (each training user's latest questions, held out of training, at most
    # 300 of them scored as on dev: 4 per author on news_headlines, 260, ~3x its one-question-per-user dev
    # split; 8 on news_categories, 392 held out and 300 scored, ~4x, since its methods differ by a few points of
    # accuracy and 4 per author, 228 questions, left PPlug's lead over the best baseline inside the interval)
    "cpu": {"recipe_steps": 0.5, "max_dev": 300, "seeds": [0, 1, 2], "set_slices": {"news_headlines": 4,
                                                                                     "news_categories": 8},
            "method_args": {"retrieval": ("--model.max_input_tokens", "256"),
                            "pplug+retrieval": ("--model.max_input_tokens", "256")}},
}
GB_PER_TRAINING = 10.0
"""GPU memory one SmolLM2-135M training holds at the GPU budget, for the default --jobs: nine music_ratings
trainings at once held 87.7 GiB on an H200 (nvidia-smi, November 2026), about 9.7 GiB each."""


def train_device_args(device: str) -> tuple[str, ...]:
    """train.py overrides for --device: auto keeps Lightning's `accelerator: auto`."""
    if device in ("auto", None):
        return ()
    if device == "cpu":
        return ("--trainer.accelerator", "cpu")
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        return ("--trainer.accelerator", "gpu", "--trainer.devices", f"[{index}]" if index else "1")
    if device == "mps":
        return ("--trainer.accelerator", "mps")
    raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def default_jobs(device: str, n_runs: int, gb_per_job: float = GB_PER_TRAINING) -> int:
    """Trainings at once: on CUDA as many as fit the free memory (and the CPU cores); on CPU or MPS one."""
    import torch

    if device not in ("auto", "cuda") and not device.startswith("cuda:") or not torch.cuda.is_available():
        return 1
    index = int(device.partition(":")[2] or 0)
    free, _ = torch.cuda.mem_get_info(index)
    return max(1, min(n_runs, int(free / 2**30 // gb_per_job), os.cpu_count() or 1))


def run_evaluate(args, checkpoints: list[str], data: Path, split: str, **kw) -> dict:
    """`pplug.decode.evaluate.evaluate` with this benchmark's device and evaluation batch (the one place both are set)."""
    from pplug.decode.evaluate import evaluate

    return evaluate(checkpoints, str(data), split, batch_size=args.eval_batch_size, device=args.device, **kw)


def build_slices(args, data: Path, ckpt_root: Path) -> tuple[dict, Path, tuple[str, ...]]:
    """The splits scored: {name: (folder, split, max_examples, note)}, plus the training root and overrides.

    dev unless --slices-only. cold-start: the dev questions scored (the same seeded subsample) whose users have
    at most 4 history items, or all of them cut to 4 items (`pplug.lamp.slices.cold_start`). time-shift: each
    training user's latest training question, held out of training (so every method then trains on `fit`).
    time-shift-dev: the dev questions of users seen in training dated after their training questions (a
    seeded subsample of at most --max-dev); skipped with a message where histories are not dated.
    Slice files go under the checkpoints folder (git-ignored), never into the repository.
    """
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.slices import cold_start, later_than_training, time_shift_holdout, write_slice

    slices: dict[str, tuple[Path, str, int | None, str]] = {}
    if not args.slices_only:
        slices["dev"] = (data, "dev", args.max_dev, "dev split")
    train_root, extra = data, ()
    folder = ckpt_root / "slices"
    dev = load_split(data, "dev") if {"cold-start", "time-shift-dev"} & set(args.slices) else None
    if "cold-start" in args.slices:
        examples, note = cold_start(subsample(dev.examples, args.max_dev, args.seed), max_items=4,
                                    min_n=args.cold_start_min)
        write_slice(folder, "cold_start", dev.task.name, examples, train_from=data)
        slices["cold-start"] = (folder, "cold_start", None, note)
    if "time-shift" in args.slices:
        train = load_split(data, "train")
        latest = getattr(args, "time_shift_latest", 1)  # other benchmarks build this slice with their own options
        fit, held = time_shift_holdout(train.examples, latest)
        write_slice(folder, "fit", train.task.name, fit)
        # every held-out question, also where --max-dev scores fewer: a scoring that wants them all reads this split
        # (bench_history_mix --split time_shift_all)
        write_slice(folder, "time_shift_all", train.task.name, held, train_from=data)
        held = subsample(held, args.max_dev, args.seed)
        write_slice(folder, "time_shift", train.task.name, held, train_from=data)
        which = "question" if latest == 1 else f"{latest} questions"
        note = (f"each training user's latest training {which} ({len(held)} scored), held out of training; "
                f"every method trains on the other {len(fit)}")
        slices["time-shift"] = (folder, "time_shift", None, note)
        train_root = folder
        extra = ("--data.train_split", "fit", "--data.val_split", "time_shift", "--data.test_split", "time_shift")
    if "time-shift-dev" in args.slices:
        later, note = later_than_training(load_split(data, "train").examples, dev.examples)
        if later:
            later = subsample(later, args.max_dev, args.seed)
            write_slice(folder, "time_shift_dev", dev.task.name, later, train_from=data)
            slices["time-shift-dev"] = (folder, "time_shift_dev", None, f"{note}; {len(later)} scored")
        else:
            print(f"skip time-shift-dev on {data.name}: {note}", flush=True)
    if args.val_holdout:  # validation on held-out training questions; final/ = the best validation's weights
        train_root = write_selection_split(data, ckpt_root / "val_data", args.val_holdout, args.seed)
        every = args.val_every or max(1, args.max_steps // 4)
        extra = ("--data.train_split", "fit", "--data.val_split", "heldout", "--data.test_split", "heldout",
                 "--data.max_val_examples", str(args.val_holdout), "--trainer.limit_val_batches", "1.0",
                 "--trainer.val_check_interval", str(every))
    return slices, train_root, extra


def run_folder(method: str) -> str:
    """The folder a method's run is trained into, under its seed folder: "pplug+retrieval" -> "pplug_retrieval"."""
    return method.replace("+", "_")


def train_seconds_file(seed_dir: Path, run: str) -> Path:
    """Where a run's training wall time is recorded, `<seed folder>/<run>.train_seconds`: what marks it trained (a
    resumed benchmark reuses it) and what bench_history_mix reports beside its scores."""
    return seed_dir / f"{run}.train_seconds"


def train_seeds(set_name: str, args, ckpt_root: Path, train_root: Path, extra: tuple[str, ...],
                runs: dict[str, str]) -> dict[int, dict[str, float | None]]:
    """Train every (seed, method) not trained yet, `args.jobs` at once; returns seed -> method -> seconds.

    A run whose final/ and `<run>.train_seconds` exist is reused (an interrupted benchmark resumes); delete
    the seed folder to retrain. With several jobs each training gets an equal share of the CPU threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    todo, seconds = [], {s: {} for s in args.seeds}
    for seed in args.seeds:
        ck = ckpt_root / f"seed{seed}"
        for m in args.methods:
            mark = train_seconds_file(ck, runs[m])
            if (ck / runs[m] / "final").is_dir() and mark.is_file():
                seconds[seed][m] = float(mark.read_text())
                print(f"[{set_name}] seed {seed} {m}: reusing {ck / runs[m]}", flush=True)
            elif args.skip_train:
                seconds[seed][m] = None
            else:
                todo.append((seed, m))
    jobs = args.jobs or default_jobs(args.device, len(todo))
    env = None
    if jobs > 1:
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // jobs)))

    def one(item: tuple[int, str]) -> None:
        seed, m = item
        ck = ckpt_root / f"seed{seed}"
        lr = ("--model.lr", args.method_lr_map[m]) if m in args.method_lr_map else ()
        lr += getattr(args, "method_args_map", {}).get(m, ())
        print(f"[{set_name}] seed {seed}: training {m} ({args.max_steps} steps) ...", flush=True)
        t = round(train_method(set_name, m, args, ck, train_root, runs[m], (*extra, *lr), seed=seed, env=env), 1)
        ck.mkdir(parents=True, exist_ok=True)
        train_seconds_file(ck, runs[m]).write_text(f"{t}\n")
        seconds[seed][m] = t
        print(f"[{set_name}] seed {seed} {m}: {t:.0f} s", flush=True)

    if todo:
        print(f"[{set_name}] {len(todo)} trainings, {jobs} at a time", flush=True)
        with children_stop_with_me(), ThreadPoolExecutor(max_workers=jobs) as pool:
            for f in [pool.submit(one, item) for item in todo]:
                f.result()  # re-raises a failed training
    return seconds


def pearson_rows(task, golds: dict[str, str], preds: dict[str, dict[str, dict[str, str]]]) -> dict:
    """Ratings: Pearson r with the gold of each [expected] row and of the user-mean floor, mean ± sd over seeds."""
    import statistics

    from pplug.lamp.stats import mean_sd

    if getattr(task.output_kind, "value", "") != "rating":
        return {}
    ids = list(golds)
    g = [float(golds[i]) for i in ids]
    out = {}
    for row, by_seed in preds.items():
        if not (row.endswith("[expected]") or row == "floor: user mean rating"):
            continue
        values = {}
        for label, p in by_seed.items():
            xs = [float(p[i]) for i in ids]
            values[label] = statistics.correlation(xs, g) if len(set(xs)) > 1 else 0.0
        mean, sd = mean_sd(list(values.values()))
        out[row] = {"mean": mean, "sd": sd, "values": values}
    return out


def earlier_predictions(stem: Path, rows: list[str], weights: Path | None,
                        golds: dict[str, str]) -> dict[str, dict[str, str]] | None:
    """--reuse-preds: one method's predictions from an earlier scoring of the same slice, row -> (id -> output).

    None (score again) unless every row's file (`pplug.decode.evaluate.prediction_path`) exists, answers every
    question scored now, and was written after the weights it came from (`weights`: the run's final/).
    """
    from pplug.decode.evaluate import prediction_path
    from pplug.lamp.data import load_outputs

    paths = {row: prediction_path(stem, row) for row in rows}
    if len(rows) == 1 and not paths[rows[0]].is_file():  # one row alone: `evaluate` wrote `out` itself
        paths = {rows[0]: Path(f"{stem}.json")}
    if not all(p.is_file() for p in paths.values()):
        return None
    if weights is not None:
        trained = max((f.stat().st_mtime for f in weights.iterdir()), default=None) if weights.is_dir() else None
        if trained is None or any(p.stat().st_mtime < trained for p in paths.values()):
            return None
    out = {}
    for row, path in paths.items():
        p = load_outputs(path)[1]
        if not set(golds) <= set(p):
            return None
        out[row] = {i: p[i] for i in golds}
    return out


def check_against_evaluate(summary: dict, reported: dict, name: str) -> None:
    """The per-question scores must give `evaluate`'s own numbers: reported = row -> seed label -> metrics."""
    for row, by_label in reported.items():
        for label, metrics in by_label.items():
            for m, v in metrics.items():
                got = summary["cells"].get(row, {}).get(m, {}).get("values", {}).get(label)
                if got is not None and abs(got - v) > 1e-6:
                    raise RuntimeError(f"{name} {row} {label} {m}: per-question mean {got} != evaluate's {v}")


def run_seeds(set_name: str, args, data: Path, ckpt_root: Path) -> dict:
    """Train every method once per seed, score all on the same questions of every slice, and summarise.

    Returns the set's JSON entry: per slice, mean ± sd of every row over seeds and paired bootstrap
    intervals of PPlug minus every other row (`pplug.lamp.stats.summarize`); metrics only, no predictions.
    """
    from pplug.decode.evaluate import prediction_path, scored_rows
    from pplug.decode.floors import data_floors
    from pplug.lamp.data import load_outputs, load_split, subsample
    from pplug.lamp.stats import comparison_lines, question_users, summarize, summary_table

    runs = {m: run_folder(m) for m in args.methods}
    slices, train_root, extra = build_slices(args, data, ckpt_root)
    train_s = train_seeds(set_name, args, ckpt_root, train_root, extra, runs)
    if args.train_only:
        return {"seeds": args.seeds, "train_seconds": train_s, "slices": {}}
    seeds = [s for s in args.seeds if all((ckpt_root / f"seed{s}" / runs[m] / "final").is_dir() for m in runs)]
    if not seeds:
        raise RuntimeError(f"{set_name}: no seed has trained weights for every method in {ckpt_root}")
    if seeds != args.seeds:  # --skip-train on an interrupted run: report the seeds that finished, say so
        print(f"[{set_name}] seeds {sorted(set(args.seeds) - set(seeds))} lack weights for some method; "
              f"scoring seeds {seeds}", flush=True)
    entry: dict = {"seeds": seeds, "seeds_asked": args.seeds, "train_seconds": train_s, "slices": {}}
    for name, (folder, split, max_examples, note) in slices.items():
        loaded = load_split(folder, split)
        task = loaded.task
        examples = subsample(loaded.examples, max_examples, args.seed)
        golds = {ex.id: ex.output for ex in examples}
        preds: dict[str, dict[str, dict[str, str]]] = {}
        reported: dict[str, dict[str, dict[str, float]]] = {}
        t0 = time.monotonic()
        for (i, seed), group in itertools.product(enumerate(seeds), decoding_groups(task, args.decodings)):
            ck = ckpt_root / f"seed{seed}"
            label = f"seed{seed}"
            stem = ck / "eval" / f"{name}_preds"
            # `none` (no weights) and the floors do not depend on the training seed: scored once
            methods = (["none"] if i == 0 else []) + list(args.methods)
            if args.reuse_preds:
                for m in list(methods):
                    earlier = earlier_predictions(stem, scored_rows(task, m, group),
                                                  None if m == "none" else ck / runs[m] / "final", golds)
                    if earlier:
                        methods.remove(m)
                        for row, p in earlier.items():
                            preds.setdefault(row, {})[label] = p
                        print(f"[{set_name}] {name} seed {seed} {m} {group}: reusing its predictions in "
                              f"{stem.parent}", flush=True)
            if not methods:
                continue
            rows = [r for m in methods for r in scored_rows(task, m, group)]
            # one row alone would go to `<stem>.json`; name it as a row of many, so --reuse-preds finds it
            out = prediction_path(stem, rows[0]) if len(rows) == 1 else stem.with_suffix(".json")
            report = run_evaluate(args, [f"{m}={ck / runs[m]}" for m in methods if m != "none"], folder, split,
                                  methods=methods, max_examples=max_examples, decodings=group,
                                  floors=False, seed=args.seed, out=str(out), progress=False,
                                  max_new_tokens=args.max_new_tokens)
            for row, path in report["files"].items():
                preds.setdefault(row, {})[label] = load_outputs(path)[1]
            for row, metrics in report["metrics"].items():
                reported.setdefault(row, {})[label] = metrics
        for floor, p in data_floors(task, examples, train_root, args.seed, trained_split(extra)).items():
            preds[f"floor: {floor}"] = {f"seed{seeds[0]}": p}
        summary = summarize(task, golds, preds, reference_rows(preds), n_resamples=args.resamples, seed=args.seed,
                            users=question_users(examples))
        check_against_evaluate(summary, reported, name)
        summary["pearson_r"] = pearson_rows(task, golds, preds)
        summary.update(note=note, split=split, eval_seconds=round(time.monotonic() - t0, 1))
        entry["task"] = task.name
        entry["slices"][name] = summary
        print(summary_table(summary, title=f"{set_name} {name} (n={len(examples)}; {note}); mean ± sd over "
                                           f"seeds {seeds}"))
        if summary["pearson_r"]:
            print("Pearson r with the gold rating:",
                  json.dumps({k: round(v["mean"], 3) for k, v in summary["pearson_r"].items()}))
        main = [m for m in task.metrics if m in ("mae", "rmse", "rouge1", "rougeL", "accuracy")]
        print(f"PPlug minus each row, paired bootstrap 95% interval ({args.resamples} draws of the "
              f"{summary['resampled']} of the {len(examples)} questions, seeds pooled per question):")
        print("\n".join("  " + line for line in comparison_lines(summary, main)), flush=True)
    return entry


def given_options(p: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The options written on the command line, also those given their default value (`--max-dev 150`)."""
    unset = object()  # argparse fills in no default where the namespace already holds the name
    probe = argparse.Namespace(**{a.dest: unset for a in p._actions if a.dest != "help"})
    return {k for k, v in vars(p.parse_args(argv, namespace=probe)).items() if v is not unset}


def apply_preset(p: argparse.ArgumentParser, args, argv: list[str] | None) -> None:
    """Fill the preset's values into every option not on the command line (an explicit option wins)."""
    given = given_options(p, argv)
    for key, value in PRESETS[args.preset].items():
        if key == "config_suffix":
            args.config_suffix = value
        elif key == "method_args":  # a method's own args on the command line win over the preset's
            args.method_args_map = {**value, **args.method_args_map}
        elif key == "recipe_steps" and "max_steps" in given:  # --max-steps on the command line wins
            continue
        elif key == "set_slices" and "slices" in given:  # so do --slices
            continue
        elif key not in given:
            setattr(args, key, value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked, with the preset applied; `args.multi` says whether the seeds path runs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp"), help="real_lamp folder")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=[*SETS, *SYNTH_SETS],
                   help="real sets, and the synthetic checks synth_ratings / synth_ratings_shift (need --seeds)")
    p.add_argument("--methods", nargs="+", default=list(TRAINABLE), choices=TRAINABLE)
    p.add_argument("--max-steps", type=int, default=100, help="optimizer steps per method")
    p.add_argument("--recipe-steps", type=float, default=None, metavar="FRACTION",
                   help="each set trains this fraction of its recipe's trainer.max_steps, in place of --max-steps")
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
    p.add_argument("--train-only", action="store_true",
                   help="with --seeds: train the missing runs and stop (score them in a later call that reuses them)")
    p.add_argument("--lrs", nargs="+", default=None,
                   help="pick each method's lr among these on held-out training questions (default: the config's)")
    p.add_argument("--heldout", type=int, default=150, help="held-out training questions for --lrs")
    p.add_argument("--method-lr", nargs="+", default=[], metavar="METHOD=LR",
                   help="a fixed lr per method (e.g. the ones --lrs picked on another set): prompt-tuned=1e-2 ...")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="train every method once per seed (seed_everything and data.seed) and report mean ± sd "
                        "and paired bootstrap intervals of PPlug minus each row on the same questions")
    p.add_argument("--slices", nargs="+", default=[], choices=SLICES,
                   help="also score these shift slices (pplug.lamp.slices); time-shift trains on train minus each "
                        "user's latest training question; time-shift-dev scores dev questions dated after their "
                        "user's training questions (no retraining)")
    p.add_argument("--slices-only", action="store_true",
                   help="score only the --slices, not dev (dev was scored by an earlier run of these checkpoints)")
    p.add_argument("--time-shift-latest", type=int, default=1, metavar="N",
                   help="time-shift slice: hold out each training user's N latest questions (a larger slice for "
                        "sets whose dev split has one question per user)")
    p.add_argument("--cold-start-min", type=int, default=50,
                   help="fewest naturally cold questions (<= 4 history items) before profiles are cut instead")
    p.add_argument("--val-holdout", type=int, default=0, metavar="N",
                   help="with --seeds: hold N seeded training questions out of training, validate on them every "
                        "--val-every steps and keep the best validation's weights instead of the last step's")
    p.add_argument("--val-every", type=int, default=None, help="steps between validations (default: max-steps / 4)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the questions")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="gpu: the GPU recipe (configs/real/<set>.gpu.yaml, 1000 steps, full splits, 3 seeds)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (training and evaluation)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings at once (default: by free GPU memory, ~10 GiB each; 1 on CPU)")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--decodings", nargs="+", default=None, choices=DECODING_CHOICES, metavar="DECODING",
                   help="decodings scored for every method (default: argmax, and a rating task's expected and "
                        "median); a generation task's 'beam' is beam search with 4 beams, each row named by its "
                        "decoding ('pplug [beam]')")
    p.add_argument("--reuse-preds", action="store_true",
                   help="with --seeds: reuse a run's predictions from an earlier scoring of the same slice when "
                        "they answer every question and are newer than its weights (add a method or a seed "
                        "without decoding the others again)")
    p.add_argument("--method-args", nargs="+", default=[], metavar="METHOD=ARGS",
                   help="train.py arguments for one method only, e.g. retrieval='--model.max_input_tokens 256 "
                        "--model.retrieval_k 4': a baseline's own prompt budget or k (its run names them)")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra train.py arguments (last)")
    args = p.parse_args(argv)
    args.config_suffix = ""
    pairs = [x.split("=", 1) for x in args.method_lr]
    method_lr = {kv[0]: kv[1] for kv in pairs if len(kv) == 2}
    if len(method_lr) != len(pairs) or set(method_lr) - set(TRAINABLE) or not all(method_lr.values()):
        p.error(f"--method-lr takes METHOD=LR with METHOD in {TRAINABLE}; got {args.method_lr}")
    args.method_lr_map = method_lr
    method_args = [x.split("=", 1) for x in args.method_args]
    if any(len(kv) != 2 or kv[0] not in TRAINABLE or not kv[1].strip() for kv in method_args):
        p.error(f"--method-args takes METHOD=ARGS with METHOD in {TRAINABLE}; got {args.method_args}")
    args.method_args_map = {m: tuple(shlex.split(a)) for m, a in method_args}
    if args.preset:
        apply_preset(p, args, argv)
    multi = bool(args.seeds or args.slices or args.preset)
    if multi and args.lrs:
        p.error("--lrs picks one lr per method with one seed; run it first, then pass --method-lr with --seeds")
    if multi and not args.seeds:
        args.seeds = [args.seed]
    if args.val_holdout and not multi:
        p.error("--val-holdout goes with --seeds (or --slices / --preset)")
    if args.val_holdout and ("time-shift" in args.slices or getattr(args, "set_slices", None)):
        p.error("--val-holdout and the time-shift slice (the cpu preset's, on the news sets) both choose the "
                "training split; use one (--slices <other> keeps the preset from scoring that slice)")
    if args.slices_only and not args.slices:
        p.error("--slices-only needs --slices")
    if args.train_only and not multi:
        p.error("--train-only goes with --seeds (or --slices / --preset)")
    try:
        train_device_args(args.device)
    except ValueError as e:
        p.error(str(e))
    if not multi and set(args.sets) & set(SYNTH_SETS):
        p.error(f"{sorted(set(args.sets) & set(SYNTH_SETS))} run with --seeds (or --slices / --preset)")
    args.multi = multi
    return args


def train_dtype(train_args: list[str]) -> str:
    """The LLM dtype the trainings ask for: `--model.torch_dtype X` among the train args, else the configs' auto."""
    for i, a in enumerate(train_args):
        if a == "--model.torch_dtype" and i + 1 < len(train_args):
            return train_args[i + 1]
        if a.startswith("--model.torch_dtype="):
            return a.split("=", 1)[1]
    return "auto"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from meta import run_meta  # benchmarks/ is this script's folder
    multi, method_lr = args.multi, args.method_lr_map

    from pplug.core.io import atomic_write_json
    from pplug.decode.evaluate import evaluate
    from pplug.decode.inference import SCORED_DECODINGS

    skip = ("train_args", "method_lr_map", "method_args_map", "multi")
    results: dict = {"settings": {k: v for k, v in vars(args).items() if k not in skip} | {"method_lr": method_lr,
        "train_args": args.train_args, "cpu_count": os.cpu_count(),
        "method_args": {m: list(a) for m, a in args.method_args_map.items()}}, "sets": {},
        "meta": run_meta(device=args.device, dtype=train_dtype(args.train_args))}
    for set_name in args.sets:
        data = Path(args.root) / set_name
        synth_report = None
        if set_name in SYNTH_SETS:
            data, synth_report = synth_data(set_name, Path(args.checkpoints) / set_name)
        if not (data / "dev_questions.json").is_file():
            print(f"skip {set_name}: {data} not found (the shared real data is not on this machine)")
            continue
        ckpt_root = Path(args.checkpoints) / set_name
        args = set_args(set_name, args)
        if multi:
            results["sets"][set_name] = run_seeds(set_name, args, data, ckpt_root) | {"max_steps": args.max_steps}
            if args.train_only:  # nothing scored: the runs and their `<run>.train_seconds` are the result
                print(f"[{set_name}] trained in {ckpt_root}; nothing scored (--train-only), no results file written")
                continue
            if synth_report is not None:  # what no model can beat without the history, and what history gives
                refs = {k: synth_report[k] for k in ("history_blind_ceiling", "user_mean_floor", "global_constant",
                                                     "history_oracle") if k in synth_report}
                results["sets"][set_name]["synth_report"] = refs | {"dev_domain": synth_report.get("dev_domain")}
                print(f"[{set_name}] synthetic reference scores on this dev split: {json.dumps(refs)}")
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out, results)
            continue
        train_s, runs, selection = {}, {m: run_folder(m) for m in args.methods}, {}
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
                          decodings=args.decodings or SCORED_DECODINGS,
                          out=str(ckpt_root / "eval" / "dev_preds.json"),
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
    if not args.train_only:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
