"""PPlug ablations on one real set: what each design choice is worth, same budget, same dev questions.

    python benchmarks/bench_ablation.py --set music_ratings --lr 1e-2
    python benchmarks/bench_ablation.py --set music_ratings --variants base frozen-encoder user-tokens-4

Each variant is PPlug trained by train.py with the set's config (configs/real/<set>.yaml) plus a few
overrides (below), for the same steps, batch, train subsample and lr; then every variant is scored on the
same seeded dev subsample with `pplug.decode.evaluate.evaluate`, next to `none` and the no-model floors, in one
table. The issue's questions: learning rate (run it twice with --lr), temperature, history length, input
encoder frozen or not, number of user tokens, mean instead of input-aware attention, and the textual
persona derived from the history written after the soft prompt.

With `--seeds 0 1 2` every variant is trained once per seed (seed_everything and data.seed) and scored on
the same dev questions; cells are mean ± sd over the seeds, and each variant (`base` too) gets paired bootstrap
95% intervals against the other variants, `none` and the floors (`pplug.lamp.stats`; "leads" only where the interval
excludes 0).

    python benchmarks/bench_ablation.py --set music_ratings --seeds 0 1 2 --variants base mean-attention

Seeds can run side by side as separate processes on one `--checkpoints` folder (`--seeds 0`, `--seeds 1`, ...);
a last run with every seed and `--reuse-preds` then reads each variant's predictions back (where they are newer
than its weights and answer every question) and writes the pooled summary without decoding again.

`--cold-start` scores the same trained variants on the cold-start shift check instead of dev: the same
seeded dev questions with each user's history cut to the 4 latest items where fewer than 50 users are
naturally that cold (`pplug.lamp.slices.cold_start`, as `bench_real_lamp.py --slices cold-start` builds it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_lamp import ROOT, SETS, earlier_predictions, run_evaluate, train_method  # noqa: E402
from meta import run_meta  # noqa: E402

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "frozen-encoder": ("--model.input_encoder", "frozen"),
    "user-tokens-4": ("--model.num_user_tokens", "4"),
    "temperature-0.1": ("--model.temperature", "0.1"),
    "mean-attention": ("--model.aggregation", "mean"),
    "history-8": ("--model.max_history", "8"),
    "persona": ("--data.persona", "true"),
    "user-stats": ("--model.user_stats", "true"),
    "mixed-attention": ("--model.aggregation", "mixed"),
    "stats-mixed": ("--model.user_stats", "true", "--model.aggregation", "mixed"),
    "stats-mixed-4": ("--model.user_stats", "true", "--model.aggregation", "mixed", "--model.num_user_tokens", "4"),
    "paper": ("--model.user_stats", "false", "--model.aggregation", "input_aware"),
    "rating-loss": ("--model.rating_loss_weight", "1.0"),
    "input-token": ("--model.input_token", "true"),
    "label-tokens": ("--model.stats_init", "labels", "--model.label_token", "true"),
    "after-prompt": ("--model.soft_prompt_position", "after_prompt"),
    "after-prompt-copies-4": ("--model.soft_prompt_position", "after_prompt", "--data.history_copies", "4"),
    "after-prompt-copies-10": ("--model.soft_prompt_position", "after_prompt", "--data.history_copies", "10"),
    # the steps that take the wall time of the prefix's 100 (bench_prefill on this CPU: 3.9 s a step in front
    # against 2.7 s after the prompt with 10 copies, float32; 6.5 s against 4.3 s, bfloat16)
    "after-prompt-copies-10-equal-wall": ("--model.soft_prompt_position", "after_prompt", "--data.history_copies",
                                          "10", "--trainer.max_steps", "145"),
    # generated text: a target of up to 32 tokens is read by every copy, so 10 copies cost more than one question in
    # front; without copies, the steps that take the prefix's wall time (enron_subjects, 100 steps side by side on
    # 2 cores: 1137-1144 s in front, 497 s after the prompt)
    "after-prompt-equal-wall": ("--model.soft_prompt_position", "after_prompt", "--trainer.max_steps", "230"),
    # acl_titles' targets are twice as long (32 tokens), so fewer steps fit the prefix's wall: 210 estimated from the
    # positions a step runs forward and backward (8 x 162 in front against 8 x 34 + a third for the no-grad prefill
    # of 8 x 128). Measured since (seed 1, 100 steps each under the same load): 636.6 s in front, 355.5 s after the
    # prompt, so 179 steps take the prefix's wall and these 210 take about 1.2 times it
    "after-prompt-equal-wall-long-targets": ("--model.soft_prompt_position", "after_prompt", "--trainer.max_steps",
                                             "210"),
    "after-prompt-equal-wall-titles": ("--model.soft_prompt_position", "after_prompt", "--trainer.max_steps", "179"),
    # the news sets' short prompts (a one-line description) leave less to share: the steps measured to take the
    # prefix's wall (seed 0, 100 steps each, under the same load: news_headlines 293.5 s in front against 249.8 s
    # after the prompt; news_categories 394.0 s against 268.7 s)
    "after-prompt-equal-wall-headlines": ("--model.soft_prompt_position", "after_prompt", "--trainer.max_steps", "117"),
    "after-prompt-equal-wall-categories": ("--model.soft_prompt_position", "after_prompt", "--trainer.max_steps",
                                           "147"),
}
"""Variant name -> train.py overrides on top of the set's config. `base` is the set's config as it is: for the
rating sets that already includes `user_stats` + `mixed` (configs/real/music_ratings.yaml), so there `paper`
(PPlug as published) is the comparison; results measured before the rating configs switched
(`results/ablation_music_ratings_seeds_cpu.json`) call PPlug as published `base`."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp"), help="real_lamp folder")
    p.add_argument("--set", default="music_ratings", choices=SETS)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--lr", default="1e-3", help="the same lr for every variant")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-train", type=int, default=1600)
    p.add_argument("--max-dev", type=int, default=150)
    p.add_argument("--max-input-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "ablation"))
    p.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/ablation_<set>.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="train every variant once per seed; mean ± sd and intervals against base")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (with --seeds)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="train every variant in this dtype (default: the recipe's torch_dtype)")
    p.add_argument("--cold-start", action="store_true",
                   help="with --seeds: score on the cold-start slice of the dev questions instead of dev")
    p.add_argument("--reuse-preds", action="store_true",
                   help="with --seeds: read a variant's predictions from an earlier scoring of the same questions "
                        "(newer than its weights) instead of decoding again, e.g. after seeds ran side by side")
    args = p.parse_args(argv)
    if args.cold_start and not args.seeds:
        p.error("--cold-start needs --seeds")
    args.train_args = ["--model.torch_dtype", args.dtype] if args.dtype else []
    if args.seeds:
        return run_seeds(args)

    from pplug.decode.evaluate import evaluate
    from pplug.decode.inference import SCORED_DECODINGS
    from pplug.lamp.metrics import format_table

    data = Path(args.root) / args.set
    if not (data / "dev_questions.json").is_file():
        print(f"{data} not found (the shared real data is not on this machine)")
        return 1
    ckpt_root = Path(args.checkpoints) / args.set / f"lr{args.lr}"
    rows: dict[str, dict[str, float]] = {}
    train_s: dict[str, float] = {}
    for i, name in enumerate(args.variants):
        print(f"[{args.set}] training pplug variant {name} ...", flush=True)
        train_s[name] = round(train_method(args.set, "pplug", args, ckpt_root, data, name,
                                           ("--model.lr", args.lr, *VARIANTS[name])), 1)
        report = evaluate([f"pplug={ckpt_root / name}"], str(data), "dev", methods=["none", "pplug"] if i == 0
                          else ["pplug"], max_examples=args.max_dev, decodings=SCORED_DECODINGS,
                          out=str(ckpt_root / "eval" / f"{name}.json"), floors=i == 0, seed=args.seed,
                          progress=False, persona=name == "persona")
        for row, metrics in report["metrics"].items():
            label = row if (row.startswith("floor:") or row.startswith("none")) else row.replace("pplug", f"pplug {name}")
            rows[label] = metrics
        print(f"[{args.set}] {name}: {train_s[name]:.0f} s; "
              f"{json.dumps({k: v for k, v in report['metrics'].items() if k.startswith('pplug')})}", flush=True)
        # written after every variant, so a stopped run keeps what it measured
        out = Path(args.out or ROOT / "benchmarks" / "results" / f"ablation_{args.set}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": run_meta(device=args.device, dtype=args.dtype or "auto"),
                                   "settings": {k: v for k, v in vars(args).items() if k != "train_args"},
                                   "variants": {k: list(VARIANTS[k]) for k in args.variants[: i + 1]},
                                   "metrics": rows, "train_seconds": train_s,
                                   "written": time.strftime("%Y-%m-%d %H:%M")}, indent=2, sort_keys=True) + "\n")
    print(format_table(rows, title=f"{args.set} dev (n={args.max_dev}), PPlug variants, lr {args.lr}, "
                                   f"{args.max_steps} steps x batch {args.batch_size}"))
    print(f"wrote {out}")
    return 0


def run_seeds(args) -> int:
    """--seeds: every variant once per seed, the same dev questions, mean ± sd and paired intervals."""
    from pplug.core.io import atomic_write_json
    from pplug.decode.evaluate import scored_rows
    from pplug.decode.floors import data_floors
    from pplug.decode.inference import SCORED_DECODINGS
    from pplug.lamp.data import load_outputs, load_split, subsample
    from pplug.lamp.stats import comparison_lines, question_users, summarize, summary_table

    data = Path(args.root) / args.set
    if not (data / "dev_questions.json").is_file():
        print(f"{data} not found (the shared real data is not on this machine)")
        return 1
    ckpt_root = Path(args.checkpoints) / args.set / f"lr{args.lr}"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"ablation_{args.set}_seeds.json")
    scored, split, max_examples, suffix = data, "dev", args.max_dev, ""
    if args.cold_start:
        from pplug.lamp.slices import cold_start, write_slice

        dev = load_split(data, "dev")
        cold, note = cold_start(subsample(dev.examples, args.max_dev, args.seed), max_items=4)
        scored, split, max_examples, suffix = ckpt_root / "slices", "cold_start", None, ".cold_start"
        write_slice(scored, split, dev.task.name, cold, train_from=data)
        print(f"[{args.set}] cold-start slice: {note}", flush=True)
    dev = load_split(scored, split)
    examples = subsample(dev.examples, max_examples, args.seed)  # the questions every variant answers
    golds = {ex.id: ex.output for ex in examples}
    preds: dict[str, dict[str, dict[str, str]]] = {}
    train_s: dict[str, dict[str, float]] = {}
    for i, seed in enumerate(args.seeds):
        ck = ckpt_root / f"seed{seed}"
        label = f"seed{seed}"
        for j, name in enumerate(args.variants):
            mark = ck / f"{name}.train_seconds"
            if (ck / name / "final").is_dir() and mark.is_file():  # an interrupted run resumes here
                seconds = float(mark.read_text())
            else:
                print(f"[{args.set}] seed {seed}: training pplug variant {name} ...", flush=True)
                seconds = round(train_method(args.set, "pplug", args, ck, data, name,
                                             ("--model.lr", args.lr, *VARIANTS[name]), seed=seed), 1)
                mark.parent.mkdir(parents=True, exist_ok=True)
                mark.write_text(f"{seconds}\n")
            train_s.setdefault(name, {})[label] = seconds
            first = i == 0 and j == 0  # `none` and the floors do not depend on the seed or the variant
            methods = ["none", "pplug"] if first else ["pplug"]
            stem = ck / "eval" / f"{name}{suffix}"
            earlier = None
            if args.reuse_preds:  # a variant scored by an earlier run of one seed (runs of seeds side by side)
                rows = [r for m in methods for r in scored_rows(dev.task, m, SCORED_DECODINGS)]
                earlier = earlier_predictions(stem, rows, ck / name / "final", golds)
            if earlier:
                files = earlier
                print(f"[{args.set}] seed {seed} {name}: {seconds:.0f} s; reusing its predictions in {stem.parent}",
                      flush=True)
            else:
                report = run_evaluate(args, [f"pplug={ck / name}"], scored, split, methods=methods,
                                      max_examples=max_examples, decodings=SCORED_DECODINGS,
                                      out=str(stem.with_suffix(".json")), floors=False,
                                      seed=args.seed, progress=False, persona=name == "persona")
                files = {row: load_outputs(path)[1] for row, path in report["files"].items()}
                print(f"[{args.set}] seed {seed} {name}: {seconds:.0f} s; "
                      f"{json.dumps({k: v for k, v in report['metrics'].items() if k.startswith('pplug')})}",
                      flush=True)
            for row, p in files.items():
                preds.setdefault(row.replace("pplug", f"pplug {name}", 1), {})[label] = p
    for floor, p in data_floors(dev.task, examples, data, args.seeds[0]).items():
        preds[f"floor: {floor}"] = {f"seed{args.seeds[0]}": p}
    refs = [r for r in preds if r.startswith("pplug ")]  # every variant, base too, against every row
    summary = summarize(dev.task, golds, preds, refs, n_resamples=args.resamples, seed=args.seed,
                        compare_refs=True, users=question_users(examples))
    atomic_write_json(out, {"meta": run_meta(device=args.device, dtype=args.dtype or "auto"),
                            "settings": {k: v for k, v in vars(args).items() if k != "train_args"},
                            "variants": {k: list(VARIANTS[k]) for k in args.variants}, "summary": summary,
                            "train_seconds": train_s, "written": time.strftime("%Y-%m-%d %H:%M")})
    print(summary_table(summary, title=f"{args.set} {split} (n={len(examples)}), PPlug variants, lr {args.lr}, "
                                       f"{args.max_steps} steps x batch {args.batch_size}, seeds {args.seeds}"))
    print("variant minus each row, paired bootstrap 95% interval (seeds pooled per question):")
    print("\n".join("  " + line for line in comparison_lines(summary, [m for m in dev.task.metrics if m != "f1"])))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
