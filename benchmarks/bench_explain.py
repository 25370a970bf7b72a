"""What `pplug.explain` shows of the `make train` checkpoint over the synthetic dev users.

    python benchmarks/bench_explain.py --checkpoint checkpoints/pplug-synthetic --n 200 \\
        --out benchmarks/results/explain_synthetic.json

On the synthetic ratings a review's rating is its text's sentiment plus the user's offset, which only their
history shows; the past reviews that carry this review's answer are the ones scored with the answer's label
(the gold rating). Over the first `--n` dev questions this measures, from the explanation's weights (the
embedder's own, `aggregation: mixed` included):

- the attention mass on the past reviews scored with the gold label, beside their share of the history (what a
  uniform weighting puts there), as a paired bootstrap 95% interval of the difference over the questions; the
  same for the input-aware part alone (before the gate mixes in the mean) and for the past reviews of the
  input's sentiment;
- the effective number of items read, exp(entropy) and 1/sum(w^2), beside the number of items;
- the counterfactual: the expected rating with the history, with none (cold start) and with the persona text
  alone, their MAE against the gold, and whether the history moves the rating the way it says: the pull
  (the mean score of the user's past reviews of the input's sentiment, else of all of them, minus the cold-start
  rating) against the move (the rating with the history minus the cold-start rating): the share of questions
  where they agree in sign and their correlation.

It also keeps one explained user (the first question whose history holds at least 12 items) for the docs' figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or statistics.pstdev(x) == 0 or statistics.pstdev(y) == 0:
        return None
    return statistics.correlation(x, y)


def measure(model, examples, batch_size: int = 16) -> dict:
    from pplug.core.tasks import get_task
    from pplug.decode.explain import explain
    from pplug.lamp.stats import paired_bootstrap
    from pplug.synth.vocab import text_sentiment

    task = get_task(model.config.task)
    rows = []
    for i in range(0, len(examples), batch_size):
        rows += explain(model, examples[i : i + batch_size], top=0)
    per = {k: [] for k in ("mass_gold", "share_gold", "alone_gold", "mass_sent", "share_sent", "exp_entropy",
                           "inverse_simpson", "n_items", "pull", "move")}
    errors = {"history": [], "cold_start": [], "persona_only": []}
    figure = None
    for ex, e in zip(examples, rows):
        cf = e["counterfactual"]
        gold = float(ex.output)
        for name, errs in errors.items():
            errs.append(abs(cf[name]["expected_rating"] - gold))
        items = e["items"]
        if not items:
            continue
        s = text_sentiment(task.query_text(ex.input))
        kept = ex.profile[-len(items):]
        same = [text_sentiment(it["text"]) == s for it in kept]
        carries = [it["label"] == ex.output for it in items]
        n = len(items)
        per["mass_gold"].append(sum(it["weight"] for it, c in zip(items, carries) if c))
        per["share_gold"].append(sum(carries) / n)
        if "input_aware" in items[0]:
            per["alone_gold"].append(sum(it["input_aware"] for it, c in zip(items, carries) if c))
        per["mass_sent"].append(sum(it["weight"] for it, c in zip(items, same) if c))
        per["share_sent"].append(sum(same) / n)
        per["exp_entropy"].append(e["effective_items"]["exp_entropy"])
        per["inverse_simpson"].append(e["effective_items"]["inverse_simpson"])
        per["n_items"].append(n)
        said = [float(it["label"]) for it, c in zip(items, same) if c and it["label"] is not None] or \
            [float(it["label"]) for it in items if it["label"] is not None]
        cold = cf["cold_start"]["expected_rating"]
        per["pull"].append(statistics.fmean(said) - cold)
        per["move"].append(cf["history"]["expected_rating"] - cold)
        if figure is None and n >= 12:
            figure = {"id": ex.id, "gold": ex.output, "input_sentiment": s, "input": task.query_text(ex.input)[:160],
                      "items": [{"index": it["index"], "weight": it["weight"], "label": it["label"],
                                 "same_sentiment": sm, "input_aware": it.get("input_aware")}
                                for it, sm in zip(items, same)],
                      "uniform_weight": e["uniform_weight"], "gate": e["attention"]["gate"],
                      "effective_items": e["effective_items"],
                      "counterfactual": {k: {"output": v["output"], "expected_rating": v["expected_rating"]}
                                         for k, v in cf.items()}}

    def interval(a: list[float], b: list[float]) -> dict:
        d, lo, hi = paired_bootstrap(a, b)
        return {"mean": statistics.fmean(a), "uniform": statistics.fmean(b), "diff": d, "lo": lo, "hi": hi,
                "above_uniform": sum(x > y + 1e-9 for x, y in zip(a, b)) / len(a)}

    agree = [(p > 0) == (m > 0) for p, m in zip(per["pull"], per["move"]) if abs(p) >= 0.25]
    out = {
        "questions": len(examples), "with_history": len(per["n_items"]),
        "gate": rows[0]["attention"]["gate"] if rows else None,
        "temperature": rows[0]["attention"]["temperature"] if rows else None,
        "mass_on_gold_label": interval(per["mass_gold"], per["share_gold"]),
        "mass_on_same_sentiment": interval(per["mass_sent"], per["share_sent"]),
        "effective_items": {"exp_entropy": statistics.fmean(per["exp_entropy"]),
                            "inverse_simpson": statistics.fmean(per["inverse_simpson"]),
                            "history_items": statistics.fmean(per["n_items"])},
        "counterfactual": {
            "mae": {k: statistics.fmean(v) for k, v in errors.items()},
            "history_minus_cold_mae": dict(zip(("diff", "lo", "hi"),
                                               paired_bootstrap(errors["history"], errors["cold_start"]))),
            "moves_with_history": {"questions": len(agree), "agree": sum(agree) / len(agree) if agree else None,
                                   "pearson_r": _pearson(per["pull"], per["move"]),
                                   "min_pull": 0.25},
        },
        "explained_user": figure,
    }
    if per["alone_gold"]:
        out["input_aware_mass_on_gold_label"] = interval(per["alone_gold"], per["share_gold"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the `make train` run or checkpoint folder")
    p.add_argument("--data", default=str(ROOT / "lamp_data" / "synthetic" / "ratings"))
    p.add_argument("--n", type=int, default=200, help="dev questions (the first n)")
    p.add_argument("--dtype", default=None, help="override the checkpoint's LLM dtype (float32, bfloat16)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)

    import torch

    from pplug.lamp.data import load_split
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import ensure_default_data

    if Path(args.data) == ROOT / "lamp_data" / "synthetic" / "ratings":
        ensure_default_data(ROOT / "lamp_data" / "synthetic")
    examples = load_split(args.data, "dev").examples[: args.n]
    model = PPlugModel.from_pretrained(args.checkpoint, device="cpu",
                                       **({"torch_dtype": args.dtype} if args.dtype else {})).eval()
    torch.manual_seed(0)
    r = measure(model, examples)
    g, s, c = r["mass_on_gold_label"], r["mass_on_same_sentiment"], r["counterfactual"]
    print(f"{r['questions']} dev questions ({r['with_history']} with history), {args.checkpoint}")
    print(f"mass on the past reviews scored with the gold label: {g['mean']:.3f} vs uniform {g['uniform']:.3f} "
          f"(+{g['diff']:.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]; above uniform in {100 * g['above_uniform']:.0f}%)")
    print(f"mass on the past reviews of the input's sentiment: {s['mean']:.3f} vs uniform {s['uniform']:.3f}")
    e = r["effective_items"]
    print(f"effective items: exp(entropy) {e['exp_entropy']:.1f}, 1/sum(w^2) {e['inverse_simpson']:.1f} of "
          f"{e['history_items']:.1f}")
    m = c["mae"]
    print(f"MAE (expected rating): history {m['history']:.3f}, cold start {m['cold_start']:.3f}, persona alone "
          f"{m['persona_only']:.3f}; the history moves the rating the way it says in "
          f"{100 * (c['moves_with_history']['agree'] or 0):.0f}% of {c['moves_with_history']['questions']} questions"
          f" (r = {c['moves_with_history']['pearson_r']})")
    if args.out:
        from pplug.core.io import atomic_write_json

        dtype = args.dtype or model.config.torch_dtype
        atomic_write_json(Path(args.out), {"meta": run_meta(device="cpu", dtype=dtype), "checkpoint": args.checkpoint,
                                           "n": len(examples), **r})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
