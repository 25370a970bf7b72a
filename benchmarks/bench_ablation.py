"""PPlug ablations on one real set: what each design choice is worth, same budget, same dev questions.

    python benchmarks/bench_ablation.py --set music_ratings --lr 1e-2
    python benchmarks/bench_ablation.py --set music_ratings --variants base frozen-encoder user-tokens-4

Each variant is PPlug trained by train.py with the set's config (configs/real/<set>.yaml) plus a few
overrides (below), for the same steps, batch, train subsample and lr; then every variant is scored on the
same seeded dev subsample with `pplug.evaluate.evaluate`, next to `none` and the no-model floors, in one
table. The issue's questions: learning rate (run it twice with --lr), temperature, history length, input
encoder frozen or not, number of user tokens, mean instead of input-aware attention, and the textual
persona derived from the history written after the soft prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_lamp import ROOT, SETS, train_method  # noqa: E402

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "frozen-encoder": ("--model.input_encoder", "frozen"),
    "user-tokens-4": ("--model.num_user_tokens", "4"),
    "temperature-0.1": ("--model.temperature", "0.1"),
    "mean-attention": ("--model.aggregation", "mean"),
    "history-8": ("--model.max_history", "8"),
    "persona": ("--data.persona", "true"),
}
"""Variant name -> train.py overrides on top of the set's config."""


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
    args = p.parse_args(argv)
    args.train_args = []

    from pplug.evaluate import evaluate
    from pplug.metrics import format_table
    from pplug.inference import DECODINGS

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
                          else ["pplug"], max_examples=args.max_dev, decodings=DECODINGS,
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
        out.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "train_args"},
                                   "variants": {k: list(VARIANTS[k]) for k in args.variants[: i + 1]},
                                   "metrics": rows, "train_seconds": train_s,
                                   "written": time.strftime("%Y-%m-%d %H:%M")}, indent=2, sort_keys=True) + "\n")
    print(format_table(rows, title=f"{args.set} dev (n={args.max_dev}), PPlug variants, lr {args.lr}, "
                                   f"{args.max_steps} steps x batch {args.batch_size}"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
