"""What the frozen LLM reads from PPlug's soft prompt before any training step, per way of building it.

    python benchmarks/bench_init_reading.py                      # 200 dev questions of the synthetic default
    python benchmarks/bench_init_reading.py --n 100 --out benchmarks/results/init_reading.json

A 60-step budget leaves little room for the LLM to learn to decode a soft prompt it has never seen. This
scores *untrained* embedders built from `configs/synthetic.yaml`'s model settings on the synthetic ratings and
asks whether the expected rating the frozen LLM gives (softmax over "1".."5") already follows the user:

- r(user mean): Pearson correlation with the mean score of the user's history (what `user_stats` carries);
- r(attended labels): with sum_i w_i y_i, the user's past scores weighted by the fresh input-aware attention
  (what `label_token` carries; also scored below as a predictor of its own, rounded);
- r(gold), and the MAE of the median decoding.

Variants: the statistics vector started at random (PPlug's projector init), started as the user's soft label
(`stats_init: labels`), and that plus the label token (`label_token`); the last with empty histories; two
floors that need no model. Writes `--out` (JSON) with the figures.
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

VARIANTS = {
    "statistics vector, random init": {"stats_init": "random", "label_token": False},
    "statistics vector as the soft label": {"stats_init": "labels", "label_token": False},
    "soft label + label token": {"stats_init": "labels", "label_token": True},
}


def pearson(xs: list[float], ys: list[float]) -> float:
    return statistics.correlation(xs, ys) if statistics.pstdev(xs) > 0 and statistics.pstdev(ys) > 0 else 0.0


def default_config(dtype: str):
    """The synthetic default's model section (`configs/synthetic.yaml` over `configs/base.yaml`) as a PPlugConfig
    (the optimiser settings left out)."""
    import yaml

    from pplug.modeling.config import PPlugConfig

    model = {k: v for name in ("base.yaml", "synthetic.yaml")
             for k, v in yaml.safe_load((ROOT / "configs" / name).read_text(encoding="utf-8"))["model"].items()}
    fields = {f.name for f in dataclasses.fields(PPlugConfig)}
    return PPlugConfig(**{**{k: v for k, v in model.items() if k in fields}, "torch_dtype": dtype})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="dev questions (the first n)")
    p.add_argument("--dtype", default="float32", help="the frozen LLM's dtype (float32: the same on every host)")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from pplug.core.batch import PPlugBatch
    from pplug.core.tasks import get_task
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import load_split
    from pplug.methods.batches import build_batch
    from pplug.modeling.llm import FrozenLLM
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import ensure_default_data

    data = ensure_default_data(ROOT / "lamp_data" / "synthetic")
    examples = load_split(data, "dev").examples[: args.n]
    task = get_task("LaMP_3")
    base = default_config(args.dtype)
    llm = FrozenLLM(base.base_model_name_or_path, dtype=args.dtype, device="cpu",
                    max_input_tokens=base.max_input_tokens, max_target_tokens=base.max_target_tokens)
    encoder = HistoryEncoder(base.encoder_name_or_path, device="cpu")
    golds = [float(ex.output) for ex in examples]

    def scores(items: list[dict]) -> list[int]:
        return [c + 1 for c in task.history_label_indices(items) if c >= 0]

    user_means = [statistics.mean(scores(ex.profile[-base.max_history:]) or [3]) for ex in examples]
    chunks = [examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    batches = [build_batch(task, c, "pplug", causal=True, max_history=base.max_history) for c in chunks]

    rows: dict[str, dict[str, float]] = {}
    attended: list[float] = []
    for name, fields in VARIANTS.items():
        torch.manual_seed(0)
        model = PPlugModel.from_config(dataclasses.replace(base, **fields), llm=llm, history_encoder=encoder)
        model.eval()
        if not attended:  # sum_i w_i y_i under the fresh attention (the same in every variant: seed and encoder)
            for b in batches:
                with torch.no_grad():
                    emb, mask = model.history_tensors(b.histories)
                    w = model.embedder.attention_weights(emb, mask, model.embedder.embed_query(b.queries))
                for i, labels in enumerate(b.history_labels):
                    y = torch.tensor([c + 1.0 if c >= 0 else 0.0 for c in labels[-base.max_history:]])
                    has = (y > 0).float()
                    wi = w[i, : len(y)] * has
                    attended.append(float((wi * y).sum() / wi.sum().clamp_min(1e-12)))
        rows[name] = pooled(model, batches, golds, user_means, attended)
        print(f"{name:40s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
        if name == "soft label + label token":
            cold = "soft label + label token, empty histories"
            empty = [PPlugBatch(b.prompts, b.queries, [[] for _ in b.histories], None,
                                [task.history_stats([]) for _ in b.histories], [[] for _ in b.histories])
                     for b in batches]
            rows[cold] = pooled(model, empty, golds, user_means, attended)
            print(f"{cold:40s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[cold].items()), flush=True)
    floors = {"attended labels, rounded (no LLM)": statistics.mean(abs(round(a) - g) for a, g in zip(attended, golds)),
              "user's median score (no LLM)": statistics.mean(
                  abs(statistics.median_low(scores(ex.profile[-base.max_history:]) or [3]) - g)
                  for ex, g in zip(examples, golds))}
    for name, mae in floors.items():
        print(f"{name:40s} mae {mae:.3f}")
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(Path(args.out), {"meta": run_meta(device="cpu", dtype=args.dtype), "n": len(examples),
                                           "rows": rows, "floors_mae": floors})
        print(f"wrote {args.out}")
    return 0


def pooled(model, batches, golds, user_means, attended) -> dict[str, float]:
    """The expected rating's correlations and the median decoding's MAE over every batch's rows together."""
    from pplug.core.tasks import get_task

    labels = list(get_task("LaMP_3").labels)
    with torch.no_grad():
        p = torch.cat([model.choice_logprobs(b, labels).float().softmax(-1).cpu() for b in batches])  # (n, 5)
    values = torch.arange(1, 6, dtype=torch.float32)
    expected = (p * values).sum(-1).tolist()
    median = (1 + (p.cumsum(-1) < 0.5).sum(-1)).float().tolist()
    return {"r_user_mean": pearson(expected, user_means), "r_attended_labels": pearson(expected, attended),
            "r_gold": pearson(expected, golds), "mae": statistics.mean(abs(m - g) for m, g in zip(median, golds)),
            "expected_sd": statistics.pstdev(expected)}


if __name__ == "__main__":
    sys.exit(main())
