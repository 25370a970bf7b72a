"""Mixing the user's own label shares into the decoded distribution (`PPlugConfig.history_mix_items`), for any
label task: ratings (MAE of the median, RMSE of the expected rating) and categories (accuracy of the argmax).

    p = (n * h_u + k * p_model) / (n + k)        h_u: the user's label shares over n history items

k is chosen on held-out *training* questions (the training questions each seed's subsample left out, so
the model never saw their answers), by the mean negative log-likelihood of the gold label pooled over
seeds: a proper score, so one k serves every decoding. Then dev is scored with the model alone and with the
chosen k, on the same trained models and questions, with mean ± sd over seeds and paired bootstrap intervals
(`pplug.lamp.stats`) of the mixed PPlug rows against every other row and the no-model floors. One forward pass
per question and model: the mixes are computed from the recorded label log-probabilities.

What the mix pulls toward (`--priors`, `PPlugConfig.history_mix_prior`): besides the user's label shares
(`<method>+mix`), the labels of the user's past items weighted by their likeness to the input, softmax_i(h_i . e_x
/ tau): with the frozen sentence encoder's embeddings (`<method>+encoder-mix`, every method gets it, tau chosen
with k; plus `encoder kNN, no LLM`, the same prior mixed into the training split's label shares, no LLM at all),
or with a PPlug model's own input-aware attention (`<method>+attention-mix`; and `<method> attention kNN, no LLM`,
that prior mixed into the training split's label shares: what the LLM adds to the model's own attention).
`--model-temperatures` reads the LLM's distribution at each temperature T before the mix, softmax(log p / T),
chosen with k (`PPlugConfig.history_mix_model_temperature`): a small LLM is over-confident over many labels, and
T > 1 lets a confident prior decide where the LLM is unsure.

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
from bench_real_lamp import run_folder, train_seconds_file  # noqa: E402
from meta import code_version, run_meta  # noqa: E402

GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


class _Recorder:
    """Quacks like the model for `pplug.decode.inference.predict`; keeps each batch's label log-probs of the model
    alone (no mix), the rows' history statistics and, for a model with input-aware attention, the attention-
    weighted label shares that `history_mix_prior: attention` mixes in, in example order."""

    def __init__(self, model):
        self.model, self.logp, self.stats, self.att = model, [], [], []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def choice_logprobs(self, batch, choices):
        logp = self.model.llm.choice_logprobs(self.model.prefix(batch), batch.prompts, choices).float().cpu()
        self.logp.append(logp)
        self.stats.append(torch.tensor(batch.history_stats, dtype=torch.float32))
        if self.model.config.has_input_aware_attention:
            emb, mask, labels = self.model.history_inputs(batch, "history_mix_prior 'attention'")
            self.att.append(self.model.history_prior_from(emb, mask, batch.queries, labels, kind="attention"))
        return logp


def label_distributions(model, method: str, task, examples: list, batch_size: int) -> dict[str, torch.Tensor]:
    """{"logp": (N, C) log-probs of the model alone, "stats": (N, stats_dim) history statistics, and for a model
    with input-aware attention "att": (N, C) its attention-weighted label shares}, one row per example."""
    from pplug.decode.inference import predict

    rec = _Recorder(model)
    cfg = model.config
    with torch.no_grad():
        predict(rec, task, examples, method, ["argmax"], batch_size=batch_size, max_history=cfg.max_history,
                retrieval_k=cfg.retrieval_k, retriever=cfg.retriever, encoder=model.history_encoder)
    out = {"logp": torch.cat(rec.logp), "stats": torch.cat(rec.stats)}
    if rec.att:
        out["att"] = torch.cat(rec.att)
    return out


def cached_distributions(ckpt: Path, name: str, load_model, method: str, task, examples: list,
                         batch_size: int, need_attention: bool = False) -> dict[str, torch.Tensor]:
    """`label_distributions`, kept in `<run>/eval/history_mix_<name>.safetensors` and read back (no pickle)
    when it holds the same question ids, is newer than the run's weights and holds "att" where
    `need_attention`; else computed and written."""
    from safetensors.torch import load_file, save_file

    path = ckpt.parent / "eval" / f"history_mix_{name}.safetensors"
    ids = path.with_suffix(".ids.json")
    trained = max(f.stat().st_mtime for f in ckpt.iterdir())
    if path.is_file() and ids.is_file() and path.stat().st_mtime > trained \
            and json.loads(ids.read_text()) == [ex.id for ex in examples]:
        t = load_file(str(path))
        if "att" in t or not need_attention:
            return t
    t = label_distributions(load_model(), method, task, examples, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in t.items()}, str(path))
    ids.write_text(json.dumps([ex.id for ex in examples]))
    return t


def encoder_prior(encoder, task, examples: list, max_history: int, temperatures: list[float]
                  ) -> dict[float, torch.Tensor]:
    """`history_mix_prior: encoder` for every method (it needs no trained model): {tau: (N, C)} the labels of each
    question's `max_history` most recent past items weighted by softmax_i(h_i . e_x / tau), h_i and e_x the frozen
    encoder's normalised embeddings of the items and of the input's content, as `PPlugModel.history_prior`
    computes them (`pplug.modeling.embedder.similarity_weights`); zeros for a question without labelled items."""
    import torch.nn.functional as F

    from pplug.methods.batches import recent_history
    from pplug.modeling.embedder import label_shares, similarity_weights

    out = {t: torch.zeros(len(examples), len(task.labels)) for t in temperatures}
    for i, ex in enumerate(examples):
        items = recent_history(ex.profile, max_history)
        if not items:
            continue
        idx = torch.tensor([task.history_label_indices(items)], dtype=torch.long)  # (1, n), -1: no label
        h = encoder.encode([task.history_text(it) for it in items]).float()[None]  # (1, n, d), rows normalised
        q = F.normalize(encoder.encode([task.query_text(ex.input)]).float(), dim=-1)  # (1, d)
        for t in temperatures:
            w = similarity_weights(h, torch.ones_like(idx, dtype=torch.bool), q, t)  # (1, n)
            out[t][i] = label_shares(w, idx, len(task.labels))[0]
    return out


NO_LLM_KNN = "encoder kNN, no LLM"
"""The row that mixes the frozen encoder's kNN prior into the training split's label shares: no LLM at all."""


def attention_knn(method: str) -> str:
    """The row of a model's own attention prior mixed into the training split's label shares, with no LLM: the
    `<method>+attention-mix` row without the LLM's distribution, so the table shows what the LLM adds to it."""
    return f"{method} attention kNN, no LLM"


def train_seconds(ck_root: Path, methods: list[str], seeds: list[int]) -> dict[str, dict[str, float | None]]:
    """method -> seed -> the training wall time bench_real_lamp recorded beside each run (`<run>.train_seconds`;
    None where the run has no record), so a score is reported with what it cost to train."""
    def read(mark: Path) -> float | None:
        return float(mark.read_text()) if mark.is_file() else None

    return {m: {f"seed{s}": read(train_seconds_file(ck_root / f"seed{s}", run_folder(m))) for s in seeds}
            for m in methods}


def _key(pk: tuple) -> str:
    """A (tau, T, k) parameter triple as a key: "k=32", "tau=0.05 k=32", "T=2.0 k=32" (T shown where not 1)."""
    tau, t, k = pk
    return " ".join([*([f"tau={tau}"] if tau is not None else []), *([f"T={t}"] if t != 1.0 else []), f"k={k}"])


def _label_shares_logp(task, golds: list[str]) -> torch.Tensor:
    """(C,) log of the training golds' label shares (add-one smoothed): the no-LLM rows' stand-in model."""
    labels = [gold_label(task, g) for g in golds]
    counts = torch.tensor([labels.count(lab) + 1.0 for lab in task.labels])
    return (counts / counts.sum()).log()


def decoded(task, probs: torch.Tensor) -> dict[str, list[str]]:
    """The `median` and `expected` decodings of (N, C) probabilities (ratings), or `argmax` (other labels)."""
    from pplug.modeling.label_rules import decode_labels

    return decode_labels(task, probs, ["median", "expected"] if task.is_rating else ["argmax"])


def gold_label(task, output: str) -> str:
    """The label a gold output names ("5", "5.0" -> "5" for ratings)."""
    return str(int(float(output))) if task.is_rating else str(output).strip()


def mixed(logp: torch.Tensor, stats: torch.Tensor, task, k: float | None, prior: torch.Tensor | None = None,
          model_temperature: float = 1.0) -> torch.Tensor:
    """(N, C) probabilities with `history_mix_items` = k (None: the model alone), mixing in `prior` (N, C)
    instead of the user's label shares where given (`history_mix_prior: attention`), the model's distribution
    read at `model_temperature` (`history_mix_model_temperature`)."""
    from pplug.modeling.label_rules import mix_history_prior

    return mix_history_prior(logp, stats, k, task.name, list(task.labels), prior=prior,
                             model_temperature=model_temperature).softmax(dim=-1)


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
    p.add_argument("--priors", nargs="+", choices=["shares", "encoder", "attention"], default=["shares"],
                   help="what the mix pulls toward (`history_mix_prior`): the user's label shares (`<method>+mix`, "
                        "always), the labels of the past items weighted by the frozen encoder's likeness "
                        f"(`<method>+encoder-mix`, any method, plus the no-LLM row '{NO_LLM_KNN}'), or by the "
                        "model's input-aware attention (`<method>+attention-mix`, models that have one)")
    p.add_argument("--encoder-temperatures", nargs="+", type=float, default=[0.02, 0.05, 0.1],
                   help="the encoder prior's temperatures tried (`history_mix_temperature`, chosen with k on "
                        "held-out questions)")
    p.add_argument("--model-temperatures", nargs="+", type=float, default=[1.0],
                   help="the temperatures the LLM's label distribution is read at before the mix "
                        "(`history_mix_model_temperature`, chosen with k on held-out questions; rows that read an LLM)")
    p.add_argument("--max-history", type=int, default=32, help="past items the encoder prior reads (the "
                                                                "recipes' max_history)")
    p.add_argument("--calibrate", action="store_true", help="also score pplug+mix+cal (label offsets, held-out fit)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from pplug.decode.floors import floor_predictions
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.stats import aggregate, comparison_lines, example_scores, question_users, summarize, summary_table
    from pplug.modeling.model import PPlugModel

    t0 = time.monotonic()
    code = code_version()  # the code that computes the results: read now, not when the file is written
    ck_root = Path(args.checkpoints)
    train, dev = load_split(args.data, args.train_split), load_split(args.data, args.split)
    task = dev.task
    if not task.labels:
        sys.exit(f"{args.data}: {task.name} has no labels; this benchmark scores label tasks (ratings, categories)")
    dev_examples = subsample(dev.examples, args.max_dev, 0)
    dev_golds = {ex.id: ex.output for ex in dev_examples}
    label_of = {lab: i for i, lab in enumerate(task.labels)}
    grid: list[float | None] = [None, *args.grid]
    # the decodings scored: row name -> (method, prior); each row's parameters are chosen on held-out questions
    variants: dict[str, tuple[str | None, str, bool]] = {}  # row -> (method, prior, whether the LLM is read)
    for m in args.methods:
        variants[f"{m}+mix"] = (m, "shares", True)
        if "attention" in args.priors:
            variants[f"{m}+attention-mix"] = (m, "attention", True)  # dropped below where the model has no attention
            variants[attention_knn(m)] = (m, "attention", False)  # the same prior alone: what the LLM adds
        if "encoder" in args.priors:
            variants[f"{m}+encoder-mix"] = (m, "encoder", True)
    if "encoder" in args.priors:
        variants[NO_LLM_KNN] = (None, "encoder", False)
    # each row's grid of (tau, T, k): the encoder prior's temperature (None: another prior), the temperature the
    # LLM's distribution is read at (1.0 for rows without an LLM or without a mix), the mix's k (None: no mix)
    def grid_of(prior: str, reads_llm: bool) -> list[tuple]:
        taus = args.encoder_temperatures if prior == "encoder" else [None]
        temps = args.model_temperatures if reads_llm else [1.0]
        ks = args.grid if prior == "encoder" else grid
        return [(tau, t, k) for tau in taus for t in temps for k in ks if k is not None or t == 1.0]

    params = {v: grid_of(prior, reads_llm) for v, (_, prior, reads_llm) in variants.items()}
    nll: dict[str, dict[str, list[float]]] = {v: {_key(pk): [] for pk in params[v]} for v in variants}
    heldout_metrics: dict[str, dict] = {v: {} for v in variants}
    dev_dists: dict[str, dict[str, dict]] = {m: {} for m in args.methods}
    held_dists: dict[str, dict[str, tuple]] = {m: {} for m in args.methods}
    train_golds = list(train.golds().values())
    global_logp = _label_shares_logp(task, train_golds)  # (C,): the no-LLM rows' "model"
    llm = encoder = None
    knn_held: dict[str, dict[float, torch.Tensor]] = {}
    knn_dev: dict[float, torch.Tensor] = {}

    def frozen_encoder():
        nonlocal encoder
        if encoder is None:
            from pplug.encode.history import HistoryEncoder

            cfg, _ = PPlugModel.load_checkpoint_config(ck_root / f"seed{args.seeds[0]}" /
                                                       run_folder(args.methods[0]) / "final")
            encoder = HistoryEncoder(cfg.encoder_name_or_path)
        return encoder

    def probs_of(v: str, dist: dict, knn: dict[float, torch.Tensor], pk: tuple) -> torch.Tensor:
        """(N, C) probabilities of row `v` with parameters pk = (tau, T, k)."""
        prior = variants[v][1]
        logp = dist["logp"] if variants[v][2] else global_logp.expand(len(dist["stats"]), -1)
        extra = dist["att"] if prior == "attention" else knn[pk[0]] if prior == "encoder" else None
        return mixed(logp, dist["stats"], task, pk[2], prior=extra, model_temperature=pk[1])

    for seed in args.seeds:
        used = {ex.id for ex in subsample(train.examples, args.max_train, seed)}
        held = subsample([ex for ex in train.examples if ex.id not in used], args.max_heldout, seed)
        gold_idx = torch.tensor([label_of[gold_label(task, ex.output)] for ex in held])
        golds = {ex.id: ex.output for ex in held}
        if "encoder" in args.priors:
            knn_held[f"seed{seed}"] = encoder_prior(frozen_encoder(), task, held, args.max_history,
                                                         args.encoder_temperatures)
            if not knn_dev:
                knn_dev = encoder_prior(frozen_encoder(), task, dev_examples, args.max_history,
                                             args.encoder_temperatures)
        for m in args.methods:
            ckpt = ck_root / f"seed{seed}" / run_folder(m) / "final"
            loaded: list = []

            def load_model():
                nonlocal llm, encoder
                if not loaded:
                    loaded.append(PPlugModel.from_pretrained(ckpt, llm=llm, history_encoder=encoder, device="cpu"))
                    llm, encoder = loaded[0].llm, loaded[0].history_encoder  # frozen: shared by every run
                return loaded[0]

            cfg, _ = PPlugModel.load_checkpoint_config(ckpt)
            attention = "attention" in args.priors and cfg.has_input_aware_attention
            if not attention:
                variants.pop(f"{m}+attention-mix", None)
                variants.pop(attention_knn(m), None)
            dist = cached_distributions(ckpt, "heldout", load_model, m, task, held, args.batch_size, attention)
            held_dists[m][f"seed{seed}"] = (dist, gold_idx)
            dev_dists[m][f"seed{seed}"] = cached_distributions(ckpt, args.split, load_model, m, task, dev_examples,
                                                               args.batch_size, attention)
            print(f"seed {seed} {m}: {len(held)} held-out + {len(dev_examples)} dev questions "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
        for v, (m, *_) in variants.items():
            dist = held_dists[m][f"seed{seed}"][0] if m is not None else {"stats": held_dists[args.methods[0]][
                f"seed{seed}"][0]["stats"]}
            for pk in params[v]:
                probs = probs_of(v, dist, knn_held.get(f"seed{seed}", {}), pk)
                nll[v][_key(pk)].extend((-probs[torch.arange(len(held)), gold_idx].clamp_min(1e-12).log()).tolist())
                dec = decoded(task, probs)
                sc = {d: example_scores(task, dict(zip(golds, dec[d])), golds) for d in dec}
                cell = heldout_metrics[v].setdefault(_key(pk), {})
                if task.is_rating:
                    cell.setdefault("mae_median", []).append(aggregate("mae", list(sc["median"]["mae"].values())))
                    cell.setdefault("rmse_expected", []).append(
                        aggregate("rmse", list(sc["expected"]["rmse"].values())))
                else:
                    cell.setdefault("accuracy", []).append(
                        aggregate("accuracy", list(sc["argmax"]["accuracy"].values())))

    chosen_params: dict[str, tuple] = {}
    print(f"\nheld-out training questions ({args.max_heldout} per seed): mean NLL of the gold label / "
          "MAE median / RMSE expected (mean over seeds); (tau, k): the kNN temperature and the mix's k")
    for v in variants:
        for pk in params[v]:
            h = heldout_metrics[v][_key(pk)]
            means = "  ".join(f"{name} {sum(x) / len(x):.3f}" for name, x in h.items())
            print(f"  {v:24s} {_key(pk):14s} NLL {sum(nll[v][_key(pk)]) / len(nll[v][_key(pk)]):.4f}  {means}")
        chosen_params[v] = min(params[v], key=lambda pk: sum(nll[v][_key(pk)]))
        print(f"  {v}: chosen {_key(chosen_params[v])}")
    chosen = {m: chosen_params[f"{m}+mix"][2] for m in args.methods}  # the user-shares mix's k, per method

    preds: dict[str, dict[str, dict[str, str]]] = {}
    offsets: dict[str, dict[str, list[float]]] = {m: {} for m in args.methods}
    for m in args.methods:
        for label, dist in dev_dists[m].items():
            for d, outs in decoded(task, mixed(dist["logp"], dist["stats"], task, None)).items():
                preds.setdefault(f"{m} [{d}]", {})[label] = dict(zip(dev_golds, outs))
            for v in (v for v, (vm, *_) in variants.items() if vm == m):
                for d, outs in decoded(task, probs_of(v, dist, knn_dev, chosen_params[v])).items():
                    preds.setdefault(f"{v} [{d}]", {})[label] = dict(zip(dev_golds, outs))
            if args.calibrate:
                h_dist, h_gold = held_dists[m][label]
                _, t, k = chosen_params[f"{m}+mix"]
                b = fit_label_offsets(mixed(h_dist["logp"], h_dist["stats"], task, k, model_temperature=t)
                                      .clamp_min(1e-12).log(), h_gold)
                offsets[m][label] = [round(x, 4) for x in b.tolist()]
                p_mix = mixed(dist["logp"], dist["stats"], task, k, model_temperature=t)  # (N, C), the `+mix` row's
                cal = (p_mix.clamp_min(1e-12).log() + b).softmax(dim=-1)
                for d, outs in decoded(task, cal).items():
                    preds.setdefault(f"{m}+mix+cal [{d}]", {})[label] = dict(zip(dev_golds, outs))
                shifted = label_shift(p_mix, dist["stats"], task, train_golds)
                for d, outs in decoded(task, shifted).items():
                    preds.setdefault(f"{m}+mix+prior [{d}]", {})[label] = dict(zip(dev_golds, outs))
        if args.calibrate:
            print(f"  {m}: label log-offsets fitted on held-out questions: {json.dumps(offsets[m])}")
    if NO_LLM_KNN in variants:  # one row: it depends on no trained model
        stats = next(iter(dev_dists[args.methods[0]].values()))["stats"]
        for d, outs in decoded(task, probs_of(NO_LLM_KNN, {"stats": stats}, knn_dev,
                                              chosen_params[NO_LLM_KNN])).items():
            preds[f"{NO_LLM_KNN} [{d}]"] = {"seed0": dict(zip(dev_golds, outs))}
    for name, outs in floor_predictions(task, dev_examples, train.examples).items():  # every floor: paired intervals
        preds[f"floor: {name}"] = {"seed0": outs}
    # with --calibrate every model row is set against the floors (the shift check's question); else the mix rows
    refs = [r for r in preds if not r.startswith("floor:")] if args.calibrate else \
        [r for r in preds if r.startswith(("pplug+mix [", "pplug+encoder-mix [", "pplug+attention-mix ["))]
    summary = summarize(task, dev_golds, preds, refs, users=question_users(dev_examples), compare_refs=True)
    print()
    print(summary_table(summary, title=f"{task.name} {args.split} (n={len(dev_golds)}), {len(args.seeds)} seeds"))
    for line in comparison_lines(summary, metrics=["mae", "rmse"] if task.is_rating else ["accuracy", "f1"]):
        if not task.is_rating or ("[median]" in line.split(" - ")[0] and " mae:" in line) or \
                ("[expected]" in line.split(" - ")[0] and " rmse:" in line):
            print(line)
    print(f"\n{time.monotonic() - t0:.0f} s")
    if args.out:
        from pplug.core.io import atomic_write_json

        dtype = "/".join(sorted({json.loads((ck_root / f"seed{seed}" / run_folder(m) / "final" /
                                             "pplug_config.json").read_text()).get("torch_dtype", "auto")
                                 for seed in args.seeds for m in args.methods}))  # the checkpoints' own
        atomic_write_json(args.out, {"meta": {**run_meta(device="cpu", dtype=dtype), "code_version": code},
                                     "settings": vars(args),
                                     "chosen_k": chosen,
                                     "chosen": {v: {"temperature": pk[0], "model_temperature": pk[1], "k": pk[2]}
                                                for v, pk in chosen_params.items()},
                                     "label_offsets": offsets if args.calibrate else None,
                                     # the user-shares mix per method at T = 1, keyed by k ("None": the model alone)
                                     "heldout": {m: {"nll": {str(pk[2]): sum(nll[f"{m}+mix"][_key(pk)]) /
                                                             len(nll[f"{m}+mix"][_key(pk)])
                                                             for pk in params[f"{m}+mix"] if pk[1] == 1.0},
                                                     "metrics": {str(pk[2]): heldout_metrics[f"{m}+mix"][_key(pk)]
                                                                 for pk in params[f"{m}+mix"] if pk[1] == 1.0}}
                                                 for m in args.methods},
                                     # every row's, keyed by _key ("k=32", "tau=0.05 k=16")
                                     "heldout_rows": {v: {"nll": {k: sum(x) / len(x) for k, x in nll[v].items()},
                                                          "metrics": heldout_metrics[v]} for v in variants},
                                     "dev": summary,
                                     "train_seconds": train_seconds(ck_root, args.methods, args.seeds)})


if __name__ == "__main__":
    main()
