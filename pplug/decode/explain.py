"""Why a user got their output: what the user embedder read of the history, and what the history changed.

`explain(model, examples)` gives, per row (`pplug.explain`, `pplug explain`, `POST /v1/explain`):

- `items`: every history item the embedder read (the checkpoint's `max_history` most recent, oldest first) with
  its weight w_i in the user vector P_u = sum_i w_i Proj(h_i), the very weights `UserEmbedder.attention_weights`
  gives (they sum to 1), its label where the task has one, and an excerpt; `top` orders the heaviest first.
- `effective_items`: how many items the weights read, two ways: `exp_entropy` = exp(-sum w log w) (the
  perplexity of the weights) and `inverse_simpson` = 1 / sum w^2; both are N for uniform weights and 1 when
  one item takes everything.
- `attention`: the aggregation, its temperature and, for "mixed", the gate g (the share of the input-aware
  attention; the rest is the history mean) and the input-aware weights alone (`input_aware`, per item).
- `statistics`: what the statistics token (`user_stats`) and the history prior (`history_mix_items`) read: the
  user's label shares and the number of items behind them, or for generation tasks the mean and spread of the
  user's output lengths; `label_token`: the labels of the past items weighted by the attention, as `label_token`
  reads them; `history_prior`: the labels of the past items weighted by their likeness to the input, what
  `history_mix_prior` "encoder" / "attention" mixes in. Each only where the checkpoint reads it.
- `counterfactual`: the output (and for label tasks the label distribution, after the checkpoint's history
  prior) three ways: `history` (what `personalize` gives), `cold_start` (no history: the learned default user
  vector) and `persona_only` (no history, the persona text alone in the prompt: the one given, else the persona
  the history tells, `pplug.persona.from_history.history_persona_text`).

A method without a user embedding (`none`, `prompt-tuned`, `retrieval`) has nothing to explain: ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pplug.core.tasks import TaskSpec, get_task
from pplug.lamp.data import Example
from pplug.methods.batches import build_batch, recent_history
from pplug.methods.registry import get_method, method_rows
from pplug.modeling.label_rules import decode_labels
from pplug.modeling.embedder import history_label_tensor
from pplug.persona.from_history import history_persona_text

from .inference import clean_generation

EXCERPT_CHARS = 160
"""Characters of an item's text shown in an explanation (the full text is the caller's own)."""


def check_explainable(method: str) -> None:
    """ValueError, one line, when `method` has no user embedding to explain."""
    if not get_method(method).use_user_embedding:
        raise ValueError(f"method '{method}' has no user embedding: there are no history weights to explain "
                         "(its outputs do not depend on the history through a user vector)")


def excerpt(text: str, n: int = EXCERPT_CHARS) -> str:
    """`text` on one line, cut to `n` characters with "..." where it was longer."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def effective_items(w: torch.Tensor) -> dict[str, float]:
    """exp(entropy) and 1 / sum(w^2) of one row's weights (N,), summing to 1; 0 for an empty row."""
    w = w.double()
    if w.numel() == 0 or float(w.sum()) <= 0:
        return {"exp_entropy": 0.0, "inverse_simpson": 0.0}
    nz = w[w > 0]
    return {"exp_entropy": float(torch.exp(-(nz * nz.log()).sum())), "inverse_simpson": float(1.0 / (w * w).sum())}


def _statistics(task: TaskSpec, stats: Sequence[float]) -> dict[str, Any]:
    """`TaskSpec.history_stats` in words: the label shares (label tasks) or the output lengths (generation)."""
    n_items = round(math.expm1(stats[-1] * math.log(513)))  # history_stats' size: log(1 + N) / log(513)
    if task.labels and task.output_field:
        return {"label_shares": {lab: round(float(s), 6) for lab, s in zip(task.labels, stats)},
                "history_items": n_items}
    if task.output_field:  # log(1 + words) / log(65): back to words
        return {"output_words_mean": round(math.expm1(stats[0] * math.log(65)), 3),
                "output_log_words_spread": round(float(stats[1]), 6), "history_items": n_items}
    return {"history_items": n_items}


def _outputs(model: Any, task: TaskSpec, batch: Any, decoding: str, max_new_tokens: int | None
             ) -> tuple[list[str], torch.Tensor | None]:
    """The rows' outputs and, for label tasks, their (B, C) distributions (after the checkpoint's prior)."""
    if task.labels:
        probs = model.choice_logprobs(batch, list(task.labels)).float().cpu().softmax(dim=-1)  # (B, C)
        return decode_labels(task, probs, [decoding])[decoding], probs
    texts = model.generate(batch, max_new_tokens=max_new_tokens or task.max_new_tokens)
    return [clean_generation(t) for t in texts], None


@torch.no_grad()
def explain(model: Any, examples: Sequence[Example], personas: Sequence[str | None] | None = None,
            decoding: str | None = None, top: int = 5, excerpt_chars: int = EXCERPT_CHARS,
            max_new_tokens: int | None = None, query_encoder: Any = None) -> list[dict[str, Any]]:
    """One explanation per example, in order (see the module docstring for its fields).

    Args:
        model: a `PPlugModel` whose method has a user embedding (`pplug`, `pplug+retrieval`).
        examples: `pplug.lamp.data.Example` records (input + that user's profile, oldest first).
        personas: persona text per example: written into the `history` row's prompt (as `personalize`'s
            `personas`) and the one of `persona_only`; None (or a None entry): no persona in the `history` row,
            and `persona_only` reads the persona the history tells.
        decoding: label tasks' decoding (None: the checkpoint's); generation is greedy.
        top: how many of the heaviest items `top` lists.
        excerpt_chars: characters of each item's excerpt.
        max_new_tokens: generation budget (None: the task's).
        query_encoder: encodes the inputs for a frozen input encoder instead of the cached history encoder
            (`pplug serve` passes `HistoryEncoder.encode_uncached`, so no input reaches the embedding cache).
    """
    if not hasattr(model, "embedder"):
        raise ValueError("explain needs a PPlug model (pplug.PPlugModel), not the frozen LLM alone or a plug-in")
    check_explainable(model.config.method)
    cfg, examples = model.config, list(examples)
    task = get_task(cfg.task)
    decoding = decoding or cfg.decoding
    if task.labels and decoding not in task.decodings:
        raise ValueError(f"decoding {decoding!r}: {task.name} decodes with {', '.join(task.decodings)}")
    if personas is not None and len(personas) != len(examples):
        raise ValueError(f"explain: {len(personas)} personas for {len(examples)} examples")
    if not examples:
        return []
    method, causal, budget = cfg.method, not model.llm.is_seq2seq, model.llm.prompt_budget()
    kept = [recent_history(ex.profile, cfg.max_history) for ex in examples]
    given = list(personas) if personas is not None else [None] * len(examples)
    persona_texts = [p if p else history_persona_text(k, task) for p, k in zip(given, kept)]

    def batch_of(rows: list[Example], row_personas: Sequence[str | None]) -> Any:
        return build_batch(task, rows, method, causal=causal, max_history=cfg.max_history,
                           retrieval_k=cfg.retrieval_k, retriever=cfg.retriever, encoder=model.history_encoder,
                           personas=list(row_personas), with_targets=False, budget=budget)

    cold = [Example(ex.id, ex.input, [], ex.output, ex.user_id) for ex in examples]
    batches = {"history": (examples, batch_of(examples, given)),
               "cold_start": (cold, batch_of(cold, [None] * len(cold))),
               "persona_only": (cold, batch_of(cold, [p or None for p in persona_texts]))}

    # the embedder's own weights, from the same tensors `PPlugModel.prefix` builds
    batch = batches["history"][1]
    emb, mask = model.history_tensors(batch.histories)  # (B, N, d), (B, N)
    embedder = model.embedder
    q = None
    if embedder.needs_query and emb.shape[1]:
        if embedder.needs_query_text:
            q = embedder.embed_query(batch.queries)
        else:
            encode = query_encoder or model.history_encoder.encode
            q = embedder.embed_query(encode(batch.queries))
    n = emb.shape[1]
    weights = embedder.attention_weights(emb, mask, q) if n else torch.zeros(len(examples), 0)  # (B, N)
    gate = embedder.mix_gate()
    alone = embedder.input_aware_weights(emb, mask, q) if (gate is not None and q is not None) else None
    label_idx = [task.history_label_indices(k) for k in kept]
    attended = prior = None
    if cfg.reads_history_labels and n:
        labels = history_label_tensor(label_idx, cfg.max_history, n)  # (B, N)
        if cfg.label_token:  # what the label token reads: the attention over the labelled items
            attended = embedder.label_shares(weights, labels).cpu()  # (B, C)
        if cfg.mixes_item_prior:  # what `history_mix_prior` mixes in
            prior = model.history_prior_from(emb, mask, batch.queries, labels, encode=query_encoder)  # (B, C)

    results: dict[str, tuple[list[str], torch.Tensor | None]] = {}
    for name, (rows, b) in batches.items():
        with method_rows(model.llm, method, [ex.profile for ex in rows]):
            results[name] = _outputs(model, task, b, decoding, max_new_tokens)

    out = []
    for i, ex in enumerate(examples):
        items_i = kept[i]
        w_i = weights[i, : len(items_i)].float().cpu()
        item_rows = []
        for j, item in enumerate(items_i):
            row = {"index": j, "id": item.get("id"), "weight": round(float(w_i[j]), 6),
                   "excerpt": excerpt(task.history_text(item), excerpt_chars)}
            if task.labels and task.output_field:
                row["label"] = task.labels[label_idx[i][j]] if label_idx[i][j] >= 0 else None
            if alone is not None:
                row["input_aware"] = round(float(alone[i, j]), 6)
            item_rows.append(row)
        order = sorted(range(len(items_i)), key=lambda j: (-float(w_i[j]), -j))  # ties: the more recent first
        attention = {"aggregation": cfg.aggregation, "temperature": cfg.temperature,
                     "gate": round(float(gate), 6) if gate is not None else None,
                     "reads_input": bool(embedder.needs_query)}
        stats = task.history_stats(items_i)
        counterfactual = {}
        for name, (texts, probs) in results.items():
            entry: dict[str, Any] = {"output": texts[i]}
            if probs is not None:
                entry["label_probs"] = {lab: round(float(p), 6) for lab, p in zip(task.labels, probs[i])}
                if task.is_rating:
                    entry["expected_rating"] = round(sum(float(lab) * float(p)
                                                         for lab, p in zip(task.labels, probs[i])), 6)
            if name == "persona_only":
                entry["persona"] = persona_texts[i] or None
            counterfactual[name] = entry
        out.append({
            "id": ex.id, "task": task.name, "method": method, "decoding": decoding if task.labels else "greedy",
            "history_items": len(items_i), "history_items_total": len(ex.profile),
            "uniform_weight": round(1.0 / len(items_i), 6) if items_i else None,
            "effective_items": {k: round(v, 4) for k, v in effective_items(w_i).items()},
            "attention": attention,
            "items": item_rows,
            "top": [item_rows[j] for j in order[: max(0, top)]],
            "statistics": _statistics(task, stats) if cfg.reads_history_stats else None,
            "label_token": ({lab: round(float(s), 6) for lab, s in zip(task.labels, attended[i])}
                            if attended is not None else None),
            "history_prior": ({lab: round(float(s), 6) for lab, s in zip(task.labels, prior[i])}
                              if prior is not None else None),
            "counterfactual": counterfactual,
        })
    return out


def format_explanation(e: dict[str, Any]) -> str:
    """An explanation as a few readable lines (what `pplug explain` prints)."""
    lines = [f"{e['id']}: {e['history_items']} history items read ({e['method']}, {e['task']})"]
    if e["history_items"]:
        eff, att = e["effective_items"], e["attention"]
        gate = "" if att["gate"] is None else f", gate g = {att['gate']:.3f} (input-aware share; the rest: the mean)"
        lines.append(f"  effective items: exp(entropy) {eff['exp_entropy']:.2f}, 1/sum(w^2) {eff['inverse_simpson']:.2f}"
                     f" of {e['history_items']} (uniform weight {e['uniform_weight']:.4f}); {att['aggregation']}, "
                     f"temperature {att['temperature']:g}{gate}")
        for it in e["top"]:
            label = f" [{it['label']}]" if it.get("label") is not None else ""
            lines.append(f"  w={it['weight']:.4f} #{it['index']}{label} {it['excerpt']}")
    if e["statistics"]:
        lines.append(f"  statistics token / prior: {e['statistics']}")
    if e["label_token"]:
        lines.append(f"  label token (attended label shares): {e['label_token']}")
    if e.get("history_prior"):
        lines.append(f"  history prior (past labels weighted by likeness): {e['history_prior']}")
    for name, c in e["counterfactual"].items():
        probs = ""
        if "label_probs" in c:
            probs = " p=" + " ".join(f"{k}:{v:.3f}" for k, v in c["label_probs"].items())
            if "expected_rating" in c:
                probs += f" E={c['expected_rating']:.3f}"
        lines.append(f"  {name:>12}: {c['output']!r}{probs}")
    return "\n".join(lines)


__all__ = ["EXCERPT_CHARS", "check_explainable", "effective_items", "excerpt", "explain", "format_explanation"]
