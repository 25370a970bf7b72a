"""The label decoding rules, in one place: a label distribution -> the user's own prior mixed in -> outputs.

Label tasks (ratings, tags, categories) are decoded from the LLM's (B, C) log-probabilities over
`TaskSpec.labels`. `mix_history_prior` (`PPlugConfig.history_mix_items`) pulls that distribution toward the
user's own label shares; `PPlugModel.choice_logprobs` applies it, so every caller that scores labels through
the model (training, `pplug.decode.inference.decode`, `pplug serve`) gets the same mixed distribution.
`decode_labels` then turns the distribution into output strings: `argmax` the most likely label; for ratings
`expected` the expected value (minimises the expected squared error, so RMSE) and `median` the smallest rating
whose cumulative probability reaches 1/2 (minimises the expected absolute error, so MAE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pplug.core.tasks import TaskSpec, get_task


def mix_history_prior(logp: torch.Tensor, history_stats: Sequence[Sequence[float]] | torch.Tensor | None,
                      k: float | None, task: str, choices: Sequence[str], prior: torch.Tensor | None = None,
                      model_temperature: float = 1.0) -> torch.Tensor:
    """`PPlugConfig.history_mix_items` = k applied to label log-probs: (B, C) -> (B, C) log p, where
    p = (n * h + k * softmax(logp / T)) / (n + k), h the user's label shares and n their history size, both read
    off `TaskSpec.history_stats` (`TaskSpec.history_label_shares`), T = `model_temperature`
    (`history_mix_model_temperature`). `prior` (B, C), when given, replaces h (the
    labels of the past items weighted by likeness, `history_mix_prior`; a row of zeros keeps h); n stays the
    user's labelled items. Rows whose history holds no label (cold start) keep the model's distribution (at T).
    Returns `logp` unchanged when k is None."""
    if k is None:
        return logp
    spec = get_task(task)
    if list(choices) != list(spec.labels):
        raise ValueError(f"history_mix_items mixes over {spec.name}'s labels {list(spec.labels)}, got {list(choices)}")
    if history_stats is None:
        raise ValueError("history_mix_items needs each row's history statistics: build the batch with "
                         "pplug.methods.batches.build_batch, or pass PPlugBatch(history_stats=...)")
    stats = torch.as_tensor(history_stats, dtype=torch.float32).reshape(logp.shape[0], -1)  # (B, C + 1)
    shares, n = spec.history_label_shares(stats)  # (B, C) summing to 1 (0 without labels), (B,) items
    if prior is not None:
        if tuple(prior.shape) != tuple(shares.shape):
            raise ValueError(f"prior must be {tuple(shares.shape)} (rows x labels), got {tuple(prior.shape)}")
        prior = prior.float().cpu()
        # a row whose prior weighs no labelled item keeps the plain shares (both are 0 at cold start)
        shares = torch.where(prior.sum(dim=-1, keepdim=True) > 0, prior, shares)
    w = (n / (n + k)).unsqueeze(-1)  # (B, 1): the weight of the user's own shares
    probs = (1 - w) * (logp.float() / model_temperature).softmax(dim=-1).cpu() + w * shares  # (B, C)
    return probs.clamp_min(1e-12).log().to(logp.device)


def expected_rating(probs: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """(B,) the expected value of (B, C) probabilities over numeric labels ("1".."5"): `expected` decoding's
    answer, and what the rating loss (`PPlugConfig.rating_loss_weight`) compares with the gold rating."""
    values = torch.tensor([float(x) for x in labels], dtype=torch.float32, device=probs.device)  # (C,)
    return (probs * values).sum(dim=-1)


def decode_labels(task: TaskSpec, probs: torch.Tensor, decodings: Sequence[str]) -> dict[str, list[str]]:
    """Label decodings of (B, C) probabilities over `task.labels`: decoding -> one output string per row
    ("expected" and "median" on a task that is not a rating act as "argmax")."""
    out: dict[str, list[str]] = {}
    for d in decodings:
        if d == "expected" and task.is_rating:
            out[d] = [f"{v:.4f}" for v in expected_rating(probs, task.labels).tolist()]
        elif d == "median" and task.is_rating:
            cdf = probs.cumsum(dim=-1)  # (B, C), labels in ascending order "1".."5"
            # first label with cdf >= 1/2 (the tolerance keeps an exact 50/50 split from rounding past it)
            idx = (cdf < 0.5 - 1e-6).sum(dim=-1).clamp_max(len(task.labels) - 1)
            out[d] = [task.labels[i] for i in idx.tolist()]
        else:
            out[d] = [task.labels[i] for i in probs.argmax(dim=-1).tolist()]
    return out


__all__ = ["decode_labels", "expected_rating", "mix_history_prior"]
