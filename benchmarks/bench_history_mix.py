"""Mixing the user's own label shares into the decoded distribution (`PPlugConfig.history_mix_items`), for any
label task: ratings (MAE of the median, RMSE of the expected rating) and categories (accuracy of the argmax).

    p = (n * h_u + k * p_model) / (n + k)        h_u: the user's label shares over n history items

k is chosen on held-out *training* questions (the training questions each seed's subsample left out, so
the model never saw their answers), by the mean negative log-likelihood of the gold label pooled over
seeds: a proper score, so one k serves every decoding. Then dev is scored with the model alone and with the
chosen k, on the same trained models and questions, with mean ± sd over seeds and paired bootstrap intervals
(`pplug.lamp.stats`) of the mixed PPlug rows against every other row and the no-model floors. One forward pass
per question and model: the mixes are computed from the recorded label log-probabilities.

Calibration (`--calibrate`): on the same held-out training questions, each seed's model (with the chosen k)
also gets one log-offset per label, fitted by the NLL of the gold label, p_cal = softmax(log p + b): the
label shares the model learned in training corrected toward what held-out questions show. Scored as
`pplug+mix+cal`, beside the model alone and the mix. And a label-shift correction that needs no gold of the
scored split, `pplug+mix+prior`: p ∝ p_mix x π_scored / π_train, π_train the training golds' label shares
and π_scored the label shares of the scored questions' own histories pooled (what a new domain's users have
rated before), so a domain whose users rate higher moves every answer up by the same factor. `--split`
scores another split of --data than dev (a shift check's in-domain questions, say).

Train the runs first (a rating set, any methods; `--train-only` skips the benchmark's own scoring):

    python benchmarks/bench_real_lamp.py --sets music_ratings --methods retrieval pplug --seeds 0 1 2 \\
        --max-steps 100 --jobs 3 --train-only --checkpoints checkpoints/mix_music
    python benchmarks/bench_history_mix.py --checkpoints checkpoints/mix_music/music_ratings \\
        --data ../shared/data/real_lamp/music_ratings --methods retrieval pplug --seeds 0 1 2 \\
        --out benchmarks/results/real_lamp_music_history_mix_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from meta import run_meta  # noqa: E402

GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


class _Recorder:
    """Quacks like the model for `pplug.decode.inference.predict`; keeps each batch's label log-probs of the model
    alone (no mix) and the rows' history statistics, in example order."""

    def __init__(self, model):
        self.model, self.logp, self.stats = model, [], []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def choice_logprobs(self, batch, choices):
        logp = self.model.llm.choice_logprobs(self.model.prefix(batch), batch.prompts, choices).float().cpu()
        self.logp.append(logp)
        self.stats.append(torch.tensor(batch.history_stats, dtype=torch.float32))
        return logp


def label_distributions(model, method: str, task, examples: list, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) log-probs of the model alone and (N, stats_dim) history statistics, one row per example."""
    from pplug.decode.inference import predict

    rec = _Recorder(model)
    cfg = model.config
    with torch.no_grad():
        predict(rec, task, examples, method, ["argmax"], batch_size=batch_size, max_history=cfg.max_history,
                retrieval_k=cfg.retrieval_k, retriever=cfg.retriever, encoder=model.history_encoder)
    return torch.cat(rec.logp), torch.cat(rec.stats)


def cached_distributions(ckpt: Path, name: str, load_model, method: str, task, examples: list,
                         batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`label_distributions`, kept in `<run>/eval/history_mix_<name>.safetensors` and read back (no pickle)
    when it holds the same question ids and is newer than the run's weights; else computed and written."""
    from safetensors.torch import load_file, save_file

    path = ckpt.parent / "eval" / f"history_mix_{name}.safetensors"
    ids = path.with_suffix(".ids.json")
    trained = max(f.stat().st_mtime for f in ckpt.iterdir())
    if path.is_file() and ids.is_file() and path.stat().st_mtime > trained \
            and json.loads(ids.read_text()) == [ex.id for ex in examples]:
        t = load_file(str(path))
        return t["logp"], t["stats"]
    logp, stats = label_distributions(load_model(), method, task, examples, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"logp": logp.contiguous(), "stats": stats.contiguous()}, str(path))
    ids.write_text(json.dumps([ex.id for ex in examples]))
    return logp, stats


def decoded(task, probs: torch.Tensor) -> dict[str, list[str]]:
    """The `median` and `expected` decodings of (N, C) probabilities (ratings), or `argmax` (other labels)."""
    from pplug.modeling.label_rules import decode_labels

    return decode_labels(task, probs, ["median", "expected"] if task.is_rating else ["argmax"])


def gold_label(task, output: str) -> str:
    """The label a gold output names ("5", "5.0" -> "5" for ratings)."""
    return str(int(float(output))) if task.is_rating else str(output).strip()


def mixed(logp: torch.Tensor, stats: torch.Tensor, task, k: float | None) -> torch.Tensor:
    """(N, C) probabilities with `history_mix_items` = k (None: the model alone)."""
    from pplug.modeling.label_rules import mix_history_prior

    return mix_history_prior(logp, stats, k, task.name, list(task.labels)).softmax(dim=-1)


def fit_label_offsets(logp: torch.Tensor, gold_idx: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """(C,) log-offsets b minimising the mean NLL of the gold labels under softmax(logp + b) (a convex fit)."""
    b = torch.zeros(logp.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([b], max_iter=steps, line_search_fn="strong_wolfe")
    logp = logp.detach()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logp + b, gold_idx)
        loss.backward()
        return loss

    opt.step(closure)
    return b.detach() - b.detach().mean()


def label_shift(probs: torch.Tensor, stats: torch.Tensor, task, train_golds: list[str]) -> torch.Tensor:
    """(N, C) probabilities reweighted by π_scored / π_train (see the module docstring), renormalised."""
    shares, n = task.history_label_shares(stats)  # (N, C), (N,)
    scored = (shares * n.unsqueeze(-1)).sum(0)  # (C,) label counts over the scored questions' histories
    gold_labels = [gold_label(task, g) for g in train_golds]
    train = torch.tensor([gold_labels.count(lab) for lab in task.labels], dtype=torch.float32)  # (C,)
    ratio = (scored / scored.sum().clamp_min(1e-12) + 1e-3) / (train / train.sum() + 1e-3)  # smoothed: no 0 / 0
    out = probs * ratio
    return out / out.sum(dim=-1, keepdim=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="a set's folder of bench_real_lamp (seed<k>/<method>/final)")
    p.add_argument("--data", required=True, help="the set's LaMP folder (train + dev splits)")
    p.add_argument("--methods", nargs="+", default=["pplug"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-train", type=int, default=1600, help="the trainings' train subsample (their data.seed = seed)")
    p.add_argument("--max-heldout", type=int, default=200, help="held-out training questions per seed")
    p.add_argument("--max-dev", type=int, default=None)
    p.add_argument("--grid", nargs="+", type=float, default=list(GRID))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--split", default="dev", help="the split of --data scored (default dev)")
    p.add_argument("--train-split", default="train",
                   help="the split of --data the runs trained on, whose left-out questions choose k (default train; "
                        "`fit` for the time-shift slice folder of bench_real_lamp --slices time-shift)")
    p.add_argument("--calibrate", action="store_true", help="also score pplug+mix+cal (label offsets, held-out fit)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from pplug.decode.floors import floor_predictions
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.stats import aggregate, comparison_lines, example_scores, question_users, summarize, summary_table
    from pplug.modeling.model import PPlugModel

    t0 = time.monotonic()
    ck_root = Path(args.checkpoints)
    train, dev = load_split(args.data, args.train_split), load_split(args.data, args.split)
    task = dev.task
    if not task.labels:
        sys.exit(f"{args.data}: {task.name} has no labels; this benchmark scores label tasks (ratings, categories)")
    dev_examples = subsample(dev.examples, args.max_dev, 0)
    dev_golds = {ex.id: ex.output for ex in dev_examples}
    label_of = {lab: i for i, lab in enumerate(task.labels)}
    grid: list[float | None] = [None, *args.grid]
    nll: dict[str, dict[str, list[float]]] = {m: {str(k): [] for k in grid} for m in args.methods}
    heldout_metrics: dict[str, dict] = {m: {} for m in args.methods}
    dev_dists: dict[str, dict[str, tuple]] = {m: {} for m in args.methods}
    held_dists: dict[str, dict[str, tuple]] = {m: {} for m in args.methods}
    llm = encoder = None
    for seed in args.seeds:
        used = {ex.id for ex in subsample(train.examples, args.max_train, seed)}
        held = subsample([ex for ex in train.examples if ex.id not in used], args.max_heldout, seed)
        gold_idx = torch.tensor([label_of[gold_label(task, ex.output)] for ex in held])
        for m in args.methods:
            ckpt = ck_root / f"seed{seed}" / m.replace("+", "_") / "final"
            loaded: list = []

            def load_model():
                nonlocal llm, encoder
                if not loaded:
                    loaded.append(PPlugModel.from_pretrained(ckpt, llm=llm, history_encoder=encoder, device="cpu"))
                    llm, encoder = loaded[0].llm, loaded[0].history_encoder  # frozen: shared by every run
                return loaded[0]

            logp, stats = cached_distributions(ckpt, "heldout", load_model, m, task, held, args.batch_size)
            held_dists[m][f"seed{seed}"] = (logp, stats, gold_idx)
            golds = {ex.id: ex.output for ex in held}
            for k in grid:
                probs = mixed(logp, stats, task, k)
                nll[m][str(k)].extend((-probs[torch.arange(len(held)), gold_idx].clamp_min(1e-12).log()).tolist())
                dec = decoded(task, probs)
                sc = {d: example_scores(task, dict(zip(golds, dec[d])), golds) for d in dec}
                if task.is_rating:
                    cell = heldout_metrics[m].setdefault(str(k), {"mae_median": [], "rmse_expected": []})
                    cell["mae_median"].append(aggregate("mae", list(sc["median"]["mae"].values())))
                    cell["rmse_expected"].append(aggregate("rmse", list(sc["expected"]["rmse"].values())))
                else:
                    cell = heldout_metrics[m].setdefault(str(k), {"accuracy": []})
                    cell["accuracy"].append(aggregate("accuracy", list(sc["argmax"]["accuracy"].values())))
            dev_dists[m][f"seed{seed}"] = cached_distributions(ckpt, args.split, load_model, m, task, dev_examples,
                                                               args.batch_size)
            print(f"seed {seed} {m}: {len(held)} held-out + {len(dev_examples)} dev questions "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)

    chosen: dict[str, float | None] = {}
    print(f"\nheld-out training questions ({args.max_heldout} per seed): mean NLL of the gold label / "
          "MAE median / RMSE expected (mean over seeds)")
    for m in args.methods:
        for k in grid:
            h = heldout_metrics[m][str(k)]
            means = "  ".join(f"{name} {sum(v) / len(v):.3f}" for name, v in h.items())
            print(f"  {m:16s} k={str(k):6s} NLL {sum(nll[m][str(k)]) / len(nll[m][str(k)]):.4f}  {means}")
        chosen[m] = min(grid, key=lambda k: sum(nll[m][str(k)]))
        print(f"  {m}: chosen k = {chosen[m]}")

    train_golds = list(train.golds().values())
    preds: dict[str, dict[str, dict[str, str]]] = {}
    offsets: dict[str, dict[str, list[float]]] = {m: {} for m in args.methods}
    for m in args.methods:
        for label, (logp, stats) in dev_dists[m].items():
            for name, k in ((m, None), (f"{m}+mix", chosen[m])):
                for d, outs in decoded(task, mixed(logp, stats, task, k)).items():
                    preds.setdefault(f"{name} [{d}]", {})[label] = dict(zip(dev_golds, outs))
            if args.calibrate:
                h_logp, h_stats, h_gold = held_dists[m][label]
                b = fit_label_offsets(mixed(h_logp, h_stats, task, chosen[m]).clamp_min(1e-12).log(), h_gold)
                offsets[m][label] = [round(x, 4) for x in b.tolist()]
                p_mix = mixed(logp, stats, task, chosen[m])  # (N, C), the `+mix` row's distribution
                cal = (p_mix.clamp_min(1e-12).log() + b).softmax(dim=-1)
                for d, outs in decoded(task, cal).items():
                    preds.setdefault(f"{m}+mix+cal [{d}]", {})[label] = dict(zip(dev_golds, outs))
                shifted = label_shift(p_mix, stats, task, train_golds)
                for d, outs in decoded(task, shifted).items():
                    preds.setdefault(f"{m}+mix+prior [{d}]", {})[label] = dict(zip(dev_golds, outs))
        if args.calibrate:
            print(f"  {m}: label log-offsets fitted on held-out questions: {json.dumps(offsets[m])}")
    for name, outs in floor_predictions(task, dev_examples, train.examples).items():
        if name in ("always-5", "user mean rating") or not task.is_rating:
            preds[f"floor: {name}"] = {"seed0": outs}
    # with --calibrate every model row is set against the floors (the shift check's question); else the mix rows
    refs = [r for r in preds if not r.startswith("floor:")] if args.calibrate else \
        [r for r in preds if r.startswith("pplug+mix [")]
    summary = summarize(task, dev_golds, preds, refs, users=question_users(dev_examples))
    print()
    print(summary_table(summary, title=f"{task.name} {args.split} (n={len(dev_golds)}), {len(args.seeds)} seeds"))
    for line in comparison_lines(summary, metrics=["mae", "rmse"] if task.is_rating else ["accuracy", "f1"]):
        if not task.is_rating or ("[median]" in line.split(" - ")[0] and " mae:" in line) or \
                ("[expected]" in line.split(" - ")[0] and " rmse:" in line):
            print(line)
    print(f"\n{time.monotonic() - t0:.0f} s")
    if args.out:
        from pplug.core.io import atomic_write_json

        dtype = "/".join(sorted({json.loads((ck_root / f"seed{seed}" / m.replace("+", "_") / "final" /
                                             "pplug_config.json").read_text()).get("torch_dtype", "auto")
                                 for seed in args.seeds for m in args.methods}))  # the checkpoints' own
        atomic_write_json(args.out, {"meta": run_meta(device="cpu", dtype=dtype), "settings": vars(args),
                                     "chosen_k": chosen,
                                     "label_offsets": offsets if args.calibrate else None,
                                     "heldout": {m: {"nll": {k: sum(v) / len(v) for k, v in nll[m].items()},
                                                     "metrics": heldout_metrics[m]} for m in args.methods},
                                     "dev": summary})


if __name__ == "__main__":
    main()
