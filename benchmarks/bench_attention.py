"""Where PPlug's input-aware attention looks on the synthetic ratings, at several temperatures.

    python benchmarks/bench_attention.py                                   # a fresh (untrained) embedder
    python benchmarks/bench_attention.py --checkpoint checkpoints/pplug-synthetic --temperatures 1 0.05

On the synthetic ratings a rating is the review's text sentiment plus the user's offset, so the history items
that tell most about this review's rating are the user's past reviews *of the same sentiment*: their scores
are this one's answer. For each dev question this measures, from the embedder's weights w over the user's
history (`UserEmbedder.attention_weights`, with the checkpoint's encoder at each temperature):

- the effective number of items attended, 1 / sum(w_i^2), beside the number of items N (uniform = N);
- the attention mass on the items of the input's sentiment, beside their share of the history (uniform).

These are the weights of the attention itself; a model with `aggregation: mixed` blends them with the plain
mean through a learned gate g, printed beside.

h_i . e_x is a cosine in [-1, 1], so at temperature 1 the largest weight is at most e^2 times the smallest:
whatever the encoder learns, the pooled vector stays close to the plain mean of the history. Writes
`benchmarks/results/attention_synthetic.json` with `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def attention_figures(model, examples, temperatures: list[float]) -> dict[str, dict[str, float]]:
    from pplug.core.tasks import get_task
    from pplug.methods.batches import build_batch
    from pplug.synth.vocab import text_sentiment

    task = get_task(model.config.task)
    batch = build_batch(task, examples, model.config.method, causal=True, max_history=model.config.max_history)
    with torch.no_grad():
        emb, mask = model.history_tensors(batch.histories)
        q = model.embedder.embed_query(batch.queries)
    same = torch.zeros_like(mask, dtype=torch.float32)  # (B, N): 1 where the item has the input's sentiment
    for i, ex in enumerate(examples):
        s = text_sentiment(task.query_text(ex.input))
        kept = ex.profile[-model.config.max_history:]
        for j, item in enumerate(kept):
            same[i, j] = float(text_sentiment(item["text"]) == s)
    n_items = mask.sum(-1).float()
    rows = {}
    original = model.embedder.config
    for t in temperatures:
        # the attention part alone (a "mixed" model blends it with the mean through its gate, reported beside)
        model.embedder.config = dataclasses.replace(original, temperature=t, aggregation="input_aware")
        with torch.no_grad():
            w = model.embedder.attention_weights(emb, mask, q)  # (B, N)
        model.embedder.config = original
        rows[f"temperature {t:g}"] = {
            "effective_items": statistics.mean((1.0 / (w ** 2).sum(-1)).tolist()),
            "history_items": statistics.mean(n_items.tolist()),
            "mass_on_same_sentiment": statistics.mean((w * same).sum(-1).tolist()),
            "same_sentiment_share": statistics.mean((same.sum(-1) / n_items).tolist()),
        }
    return rows


def mix_gate(model) -> float | None:
    """The learned share g of the attention in a "mixed" model (the rest is the history mean); None otherwise."""
    logit = getattr(model.embedder, "mix_logit", None)
    return float(torch.sigmoid(logit).item()) if model.config.aggregation == "mixed" and logit is not None else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="a trained run or checkpoint folder (default: a fresh model)")
    p.add_argument("--data", default=str(ROOT / "lamp_data" / "synthetic" / "ratings"))
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.1, 0.05])
    p.add_argument("--n", type=int, default=200, help="dev questions (the first n)")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from pplug.lamp.data import load_split
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import ensure_default_data

    if Path(args.data) == ROOT / "lamp_data" / "synthetic" / "ratings":
        ensure_default_data(ROOT / "lamp_data" / "synthetic")
    examples = load_split(args.data, "dev").examples[: args.n]
    model = (PPlugModel.from_pretrained(args.checkpoint, device="cpu") if args.checkpoint
             else PPlugModel.from_config(PPlugConfig(task="LaMP_3", torch_dtype="float32")))
    model.eval()
    rows = attention_figures(model, examples, args.temperatures)
    gate = mix_gate(model)
    which = args.checkpoint or "a fresh embedder (the input encoder as the sentence encoder ships)"
    if gate is not None:
        which += f"; mixed aggregation, attention share g = {gate:.3f}"
    print(f"attention over the user's history, {len(examples)} dev questions, {which}")
    print("| temperature | items attended (1/Σw²) | history items | mass on the input's sentiment | its share |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name.split()[-1]} | {r['effective_items']:.1f} | {r['history_items']:.1f} | "
              f"{r['mass_on_same_sentiment']:.3f} | {r['same_sentiment_share']:.3f} |")
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(Path(args.out), {"meta": run_meta(device="cpu", dtype="float32"),
                                           "checkpoint": args.checkpoint, "n": len(examples), "mix_gate": gate,
                                           "rows": rows})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
