"""How far PPlug's input-aware attention gets on a label task when it trains on the past items' labels alone.

    python benchmarks/bench_attention_alone.py --out benchmarks/results/attention_alone_news_categories_cpu.json

news_categories' recipe decodes with the categories of the author's past articles weighted by the trained
attention (`history_mix_prior: attention`), and that prior read with no LLM scores as well as the recipe: the
user embedder carries the gain. The attention's own term (`attention_label_loss_weight`) is cheap, since it needs
only the trainable input encoder over the input and the cached history embeddings, while each of the recipe's 100
steps pays the frozen LLM. This asks whether those 100 steps leave the attention short: it trains the input
encoder on `UserEmbedder.attention_label_loss` alone (no LLM), on the summary's split (`--preset cpu`: each author's
8 latest training questions held out, a seeded 300 of them scored; a 1,600-question subsample of the rest
trained), and reads the attention as the recipe's prior does (`UserEmbedder.attention_label_shares`, argmax).

Snapshots of one run per seed (AdamW at the recipe's encoder lr, a 50-step warm-up, then constant) at each of
`--snapshots`; the snapshot each seed keeps is the one with the lowest NLL of the gold category on 300 other
training questions (not in the subsample). Beside it, on the same questions: the frozen encoder's prior (its
temperature chosen the same way) and the no-model floors, with paired bootstrap intervals over the authors.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_history_mix import NO_LLM_KNN, encoder_prior  # noqa: E402
from meta import code_version, run_meta  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_lamp" / "news_categories"


def history_inputs(encoder, task, examples: list, max_history: int):
    """(B, N, d) cached history embeddings, (B, N) mask, (B, N) label indices, (B,) gold indices, B query texts."""
    from pplug.methods.batches import recent_history
    from pplug.modeling.embedder import history_label_tensor

    items = [recent_history(ex.profile, max_history) for ex in examples]
    texts = [[task.history_text(it) for it in row] for row in items]
    unique = list(dict.fromkeys(t for row in texts for t in row))
    table, row_of = encoder.encode(unique), {t: i for i, t in enumerate(unique)}  # (U, d)
    n = max(len(row) for row in texts)
    emb, mask = torch.zeros(len(examples), n, encoder.dim), torch.zeros(len(examples), n, dtype=torch.bool)
    for i, row in enumerate(texts):
        if row:
            emb[i, : len(row)] = table[[row_of[t] for t in row]]
            mask[i, : len(row)] = True
    labels = history_label_tensor([task.history_label_indices(row) for row in items], max_history, n)
    gold = torch.tensor([task.labels.index(ex.output) for ex in examples])
    return emb, mask, labels, gold, [task.query_text(ex.input) for ex in examples]


def attention_shares(embedder, inputs) -> torch.Tensor:
    """(B, C): the past items' labels weighted by the embedder's input-aware attention, as the recipe's
    `history_mix_prior: attention` reads them; inputs as `history_inputs` returns them."""
    emb, mask, labels, _, queries = inputs
    with torch.no_grad():
        q = torch.cat([embedder.embed_query(queries[i:i + 64]) for i in range(0, len(queries), 64)])  # (B, d)
        return embedder.attention_label_shares(emb, mask, q, labels)


def shares_nll(shares: torch.Tensor, gold: torch.Tensor) -> float:
    """Mean NLL of the gold label under (B, C) shares, floored at 1e-3 (a share of 0 is not infinitely wrong)."""
    return -shares.gather(1, gold[:, None]).clamp_min(1e-3).log().mean().item()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--snapshots", type=int, nargs="+", default=[100, 200, 400, 800])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="configs/base.yaml's encoder_lr")
    p.add_argument("--temperature", type=float, default=0.05, help="the recipe's attention temperature")
    p.add_argument("--encoder-temperatures", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--time-shift-latest", type=int, default=8)
    p.add_argument("--max-scored", type=int, default=300)
    p.add_argument("--max-train", type=int, default=1600)
    p.add_argument("--max-history", type=int, default=32)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    code = code_version()

    from pplug.decode.floors import floor_predictions
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.slices import time_shift_holdout
    from pplug.lamp.stats import question_users, summarize, summary_table
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.embedder import UserEmbedder

    t0 = time.monotonic()
    train = load_split(args.data, "train")
    task = train.task
    fit, held = time_shift_holdout(train.examples, args.time_shift_latest)
    scored = subsample(held, args.max_scored, 0)  # bench_real_lamp's slice (its --seed 0)
    encoder = HistoryEncoder("default", cache_path=":memory:")
    slice_in = history_inputs(encoder, task, scored, args.max_history)
    golds = {ex.id: ex.output for ex in scored}
    ids = [ex.id for ex in scored]

    def labels_of(shares: torch.Tensor) -> dict[str, str]:
        return dict(zip(ids, (task.labels[i] for i in shares.argmax(dim=1).tolist())))

    preds: dict[str, dict[str, dict[str, str]]] = {}
    chosen: dict[str, dict] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        trained = subsample(fit, args.max_train, seed)
        kept = {ex.id for ex in trained}
        check = subsample([ex for ex in fit if ex.id not in kept], 300, seed)  # held-out training questions
        if not check:
            raise SystemExit(f"{args.data}: --max-train {args.max_train} leaves no training question of the "
                             f"{len(fit)} to choose the snapshot on; lower it")
        train_in, check_in = (history_inputs(encoder, task, x, args.max_history) for x in (trained, check))
        check_prior = encoder_prior(encoder, task, check, args.max_history, args.encoder_temperatures)  # {tau: (B, C)}
        tau = min(check_prior, key=lambda t: shares_nll(check_prior[t], check_in[3]))
        preds.setdefault(NO_LLM_KNN, {})[f"seed{seed}"] = labels_of(
            encoder_prior(encoder, task, scored, args.max_history, [tau])[tau])
        config = PPlugConfig(task=task.name, aggregation="mixed", temperature=args.temperature, label_token=True,
                             max_history=args.max_history)
        embedder = UserEmbedder(config, encoder.dim, 576, sentence_encoder=encoder.model)  # 576: SmolLM2's width
        optimizer = torch.optim.AdamW(embedder.input_encoder.parameters(), lr=args.encoder_lr)
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50))
        emb, mask, labels, gold, queries = train_in
        order: list[int] = []
        rng = random.Random(seed)
        best: tuple[float, int] | None = None
        for step in range(1, max(args.snapshots) + 1):
            if not order:
                order = rng.sample(range(len(queries)), len(queries))
            rows = [order.pop() for _ in range(min(args.batch_size, len(order)))]
            embedder.input_encoder.train()
            loss = embedder.attention_label_loss(emb[rows], mask[rows], [queries[i] for i in rows], labels[rows],
                                                 gold[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            warmup.step()
            if step in args.snapshots:
                embedder.input_encoder.eval()
                nll = shares_nll(attention_shares(embedder, check_in), check_in[3])
                on_slice = labels_of(attention_shares(embedder, slice_in))
                preds.setdefault(f"attention alone, {step} steps", {})[f"seed{seed}"] = on_slice
                if best is None or nll < best[0]:
                    best = (nll, step)
                    preds.setdefault("attention alone, chosen steps", {})[f"seed{seed}"] = on_slice
                chosen.setdefault(f"seed{seed}", {"encoder_temperature": tau, "heldout_nll": {}})["heldout_nll"][
                    str(step)] = nll
                print(f"seed {seed} step {step}: held-out NLL {nll:.4f}, {time.monotonic() - t0:.0f} s", flush=True)
        chosen[f"seed{seed}"]["steps"] = best[1]
    for name, outs in floor_predictions(task, scored, fit).items():
        preds[f"floor: {name}"] = {"seed0": outs}
    summary = summarize(task, golds, preds, ["attention alone, chosen steps"], users=question_users(scored))
    print(summary_table(summary, title=f"{task.name} time-shift slice (n={len(golds)}), {len(args.seeds)} seeds"))
    result = {"meta": {**run_meta(device="cpu", dtype="float32"), "code_version": code},
              "settings": {**vars(args), "split": "time_shift"}, "chosen": chosen, "dev": summary,
              "seconds": round(time.monotonic() - t0)}
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
