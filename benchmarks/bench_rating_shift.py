"""Ratings under a domain shift: does a rating recipe beat always-5 (MAE) and the user's mean (RMSE) on users of
another domain, and keep its lead in-domain?

    python benchmarks/bench_rating_shift.py --variants base history-drop --seeds 0 1 2 --jobs 2

Two shift checks, built under --checkpoints (git-ignored; the real data is never copied into the repository):

- `music_topic_shift`: ../shared/data/real_lamp/music_ratings split by what its users review
  (`pplug.lamp.slices.topic_shift` on the default sentence encoder): the users at the distinct end of the main
  topic direction (on this set: hip-hop, R&B and soul reviewers) are held out whole, every question of theirs
  with their own history, as a new product category brings other users with histories in that category;
  the users at the other end are trained on (their train questions) and checked in-domain (their dev
  questions, split `indomain`).
- `synth_ratings_shift`: the synthetic ratings, whose dev users review another product domain
  (`pplug synth --domain-shift`); the in-domain check is the same users' dev questions without the shift.

Each variant (`VARIANTS`: train.py arguments on top of the set's config) trains once per seed on the set's
train split (`--max-train` seeded questions, `--max-steps` steps, no validation), then
`benchmarks/bench_history_mix.py --calibrate` scores it: the model alone, the mix of the user's own label
shares (k chosen on held-out training questions) and that mix with label offsets fitted on the same held-out
questions, against always-5 and the user's mean on the same questions, with paired bootstrap intervals
over questions (seeds pooled). Writes one JSON with every (set, variant, split) summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from jobs import children_stop_with_me, run_logged  # noqa: E402
from meta import run_meta  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "base": [],
    # PPlug's augmentation: every training row loses a random 1-50% of its history items
    "history-drop": ["--model.history_dropout", "1.0"],
    # the synthetic default's label tokens: the user's shares as a soft label, and the attended past scores
    "label-tokens": ["--model.stats_init", "labels", "--model.label_token", "true"],
    # and the input encoder's embedding of the review as one more prefix vector (reads the new domain's wording)
    "label-tokens-input": ["--model.stats_init", "labels", "--model.label_token", "true", "--model.input_token", "true"],
}
SETS = {"music_topic_shift": "configs/real/music_ratings.yaml", "synth_ratings_shift": "configs/synth_ratings.yaml"}


def build_topic_shift(root: Path, out: Path) -> str:
    """Write music_topic_shift (train, dev = shifted users, indomain = fitted users' dev) once; returns the note."""
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import load_split, write_split
    from pplug.lamp.slices import topic_shift

    note_file = out / "topic_shift.json"
    if note_file.is_file():
        return json.loads(note_file.read_text())["note"]
    train, dev = load_split(root, "train"), load_split(root, "dev")
    encoder = HistoryEncoder("default")
    fit_train, fit_dev, shifted, note = topic_shift(train.examples, dev.examples, lambda t: encoder.encode(t).numpy(),
                                                    query_text=dev.task.query_text)
    for split, exs in (("train", fit_train), ("indomain", fit_dev), ("dev", shifted)):
        write_split(out, split, dev.task.name, exs)
    note_file.write_text(json.dumps({"note": note, "source": str(root)}) + "\n")
    return note


def build_synth_shift(out: Path) -> str:
    """Write the synthetic shift (dev = another product domain) and its unshifted dev as split `indomain`."""
    from pplug.lamp.data import write_split
    from pplug.synth.generate import load_synthetic, make_synthetic

    if not (out / "indomain_questions.json").is_file():
        make_synthetic(out, kind="ratings", domain_shift=True)
        plain = out.parent / "synth_ratings_plain"
        make_synthetic(plain, kind="ratings")
        same = load_synthetic(plain, "dev")
        write_split(out, "indomain", same.task.name, list(same.examples))
    return "synthetic ratings: dev users review another product domain; indomain is the same users unshifted"


def train_run(set_name: str, data: Path, variant: str, seed: int, args) -> float:
    """One train.py run in <checkpoints>/<set>/<variant>/seed<k>/pplug; returns wall seconds (0: reused)."""
    ck = Path(args.checkpoints) / set_name / variant
    if (ck / f"seed{seed}" / "pplug" / "final" / "pplug_config.json").is_file():
        return 0.0
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SETS[set_name]),
           "--checkpoints_dir", str(ck), "--run", f"seed{seed}/pplug", "--data.root", str(data),
           "--trainer.max_steps", str(args.max_steps), "--trainer.limit_val_batches", "0",
           "--data.max_train_examples", str(args.max_train), "--data.seed", str(seed), "--seed_everything", str(seed),
           "--model.max_input_tokens", str(args.max_input_tokens), "--test", "false", "--compare_none", "false",
           *VARIANTS[variant]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    ck.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log = ck / f"train_seed{seed}.log"
    rc = run_logged(cmd, log, cwd=ROOT, env=env)
    if rc != 0:
        raise RuntimeError(f"train.py failed for {set_name}/{variant}/seed{seed} (rc {rc}): see {log}")
    print(f"[{set_name}] {variant} seed {seed}: {time.monotonic() - t0:.0f} s", flush=True)
    return round(time.monotonic() - t0, 1)


def score(set_name: str, data: Path, variant: str, split: str, args) -> dict:
    """bench_history_mix --calibrate on one split of one variant's runs; returns its JSON."""
    ck = Path(args.checkpoints) / set_name / variant
    out = ck / f"scores_{split}.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_history_mix.py"), "--checkpoints", str(ck),
           "--data", str(data), "--methods", "pplug", "--seeds", *map(str, args.seeds), "--max-train",
           str(args.max_train), "--max-heldout", str(args.max_heldout), "--split", split, "--calibrate",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = ck / f"score_{split}.log"
    rc = run_logged(cmd, log, cwd=ROOT, env=env)
    if rc != 0:
        raise RuntimeError(f"scoring failed for {set_name}/{variant}/{split} (rc {rc}): see {log}")
    print(f"[{set_name}] {variant}, split {split}:")
    print("\n".join(log.read_text().splitlines()[-30:]), flush=True)
    return json.loads(out.read_text())


def score_all(datasets: dict, jobs: list, seconds: list, args) -> None:
    """Every variant scored on dev and in-domain (bench_history_mix); the results JSON rewritten after each."""
    from pplug.core.io import atomic_write_json

    results: dict = {"meta": run_meta(device="cpu"), "settings": {k: v for k, v in vars(args).items()},
                     "variants": {v: VARIANTS[v] for v in args.variants}, "sets": {}}
    for (s, v, k), sec in zip(jobs, seconds):
        results["sets"].setdefault(s, {"note": datasets[s][1], "variants": {}})["variants"].setdefault(
            v, {"train_seconds": {}})["train_seconds"][f"seed{k}"] = sec
    for s in datasets:
        for v in args.variants:
            cell = results["sets"][s]["variants"][v]
            for split in ("dev", "indomain"):
                got = score(s, datasets[s][0], v, split, args)
                cell[split] = {"dev": got["dev"], "chosen_k": got["chosen_k"], "label_offsets": got["label_offsets"]}
            atomic_write_json(args.out, results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp" / "music_ratings"))
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--max-train", type=int, default=800, help="seeded train subsample (the rest is held out)")
    p.add_argument("--max-heldout", type=int, default=200, help="held-out training questions per seed")
    p.add_argument("--max-input-tokens", type=int, default=96)
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=None, help="threads per job (default: cores / jobs)")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "rating_shift"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rating_shift.json"))
    args = p.parse_args(argv)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)

    datasets: dict[str, tuple[Path, str]] = {}
    for set_name in args.sets:
        folder = Path(args.checkpoints) / set_name / "data"
        if set_name == "music_topic_shift":
            if not (Path(args.root) / "dev_questions.json").is_file():
                print(f"skip {set_name}: {args.root} not found (the shared real data is not on this machine)")
                continue
            datasets[set_name] = (folder, build_topic_shift(Path(args.root), folder))
        else:
            datasets[set_name] = (folder, build_synth_shift(folder))
        print(f"[{set_name}] {datasets[set_name][1]}", flush=True)
    jobs = [(s, v, k) for s in datasets for v in args.variants for k in args.seeds]
    with children_stop_with_me():  # the trainings and then the scorings
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            seconds = list(pool.map(lambda j: train_run(j[0], datasets[j[0]][0], j[1], j[2], args), jobs))
        score_all(datasets, jobs, seconds, args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
