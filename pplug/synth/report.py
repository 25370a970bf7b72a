"""What a history-blind model can reach on a synthetic dev split, and what the history buys: the reference
scores (`history_blind_ceiling`, `user_mean_floor`, `history_oracle`, ...) of `synth_report.json`."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from typing import Any

from pplug.core.tasks import MOVIE_TAGS, get_task
from pplug.lamp.data import Example
from pplug.lamp.metrics import accuracy_f1, rouge

from .vocab import (
    TAG_GROUP_OF,
    TITLE_STYLES,
    format_title,
    movie_candidates,
    paper_topic_method,
    text_sentiment,
    title_style,
)


def _mae_rmse_of(preds: list[float], golds: list[float]) -> dict[str, float]:
    n = len(golds)
    return {
        "mae": sum(abs(p - g) for p, g in zip(preds, golds)) / n,
        "rmse": math.sqrt(sum((p - g) ** 2 for p, g in zip(preds, golds)) / n),
    }


def _low_median(xs: list[float]) -> float:
    # any value between the two middle ones minimises absolute error; the lower one keeps it an integer score
    return statistics.median_low(xs)


def ratings_report(dev: list[Example], cfg: Any) -> dict:
    """Reference scores on a ratings dev split made with `cfg` (a `pplug.synth.SynthConfig`)."""
    golds = [float(ex.output) for ex in dev]  # type: ignore[arg-type]
    sents = [text_sentiment(get_task("LaMP_3").query_text(ex.input)) for ex in dev]
    by_s: dict[int, list[float]] = defaultdict(list)
    for s, g in zip(sents, golds):
        by_s[s].append(g)
    med = {s: _low_median(v) for s, v in by_s.items()}
    avg = {s: sum(v) / len(v) for s, v in by_s.items()}
    blind_mae = _mae_rmse_of([med[s] for s in sents], golds)["mae"]
    blind_rmse = _mae_rmse_of([avg[s] for s in sents], golds)["rmse"]

    # expected value of the same oracle under the generative process (infinite data)
    exp_mae, exp_rmse = _expected_blind_ratings(cfg)

    # history users: per-user median / mean of profile scores (text ignored)
    um_mae_p, um_rmse_p, hist_p = [], [], []
    for ex, s in zip(dev, sents):
        scores = [float(it["score"]) for it in ex.profile] or [3.0]
        um_mae_p.append(_low_median(scores))
        um_rmse_p.append(sum(scores) / len(scores))
        offsets = [float(it["score"]) - text_sentiment(it["text"]) for it in ex.profile] or [0.0]
        hist_p.append(min(5.0, max(1.0, s + statistics.median_low(offsets))))
    allg = sorted(golds)
    return {
        "history_blind_ceiling": {"mae": blind_mae, "rmse": blind_rmse},
        "history_blind_ceiling_expected": {"mae": exp_mae, "rmse": exp_rmse},  # the same in either domain
        "history_blind_rule": {"mae_per_sentiment_median": med, "rmse_per_sentiment_mean": avg},
        "user_mean_floor": {
            "mae": _mae_rmse_of(um_mae_p, golds)["mae"],
            "rmse": _mae_rmse_of(um_rmse_p, golds)["rmse"],
        },
        "global_constant": {
            "mae": _mae_rmse_of([_low_median(allg)] * len(allg), golds)["mae"],
            "rmse": _mae_rmse_of([sum(allg) / len(allg)] * len(allg), golds)["rmse"],
        },
        "history_oracle": _mae_rmse_of(hist_p, golds),
    }


def _expected_blind_ratings(cfg: Any) -> tuple[float, float]:
    mae = mse = 0.0
    for s in range(1, 6):
        dist: Counter = Counter()
        for b in cfg.biases:
            pb = 1.0 / len(cfg.biases)
            for eps, pe in ((0, 1 - cfg.noise), (-1, cfg.noise / 2), (1, cfg.noise / 2)):
                dist[min(5, max(1, s + b + eps))] += pb * pe
        vals = sorted(dist)
        cum, medv = 0.0, vals[-1]
        for v in vals:
            cum += dist[v]
            if cum >= 0.5:
                medv = v
                break
        mean = sum(v * p for v, p in dist.items())
        mae += sum(abs(v - medv) * p for v, p in dist.items()) / 5
        mse += sum((v - mean) ** 2 * p for v, p in dist.items()) / 5
    return mae, math.sqrt(mse)


def tags_report(dev: list[Example], cfg: Any) -> dict:
    """Reference scores on a tags dev split."""
    task = get_task("LaMP_2")
    golds = [ex.output or "" for ex in dev]
    cands = [movie_candidates(task.query_text(ex.input)) for ex in dev]
    # history-blind: for each unordered pair of tag groups, always pick the group the pooled users prefer
    wins: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (a, b), g in zip(cands, golds):
        key = tuple(sorted((TAG_GROUP_OF[a], TAG_GROUP_OF[b])))
        wins[key][TAG_GROUP_OF[g]] += 1  # type: ignore[index]
    best_group = {k: max(sorted(c), key=lambda grp: c[grp]) for k, c in wins.items()}
    blind = []
    for a, b in cands:
        key = tuple(sorted((TAG_GROUP_OF[a], TAG_GROUP_OF[b])))
        blind.append(a if TAG_GROUP_OF[a] == best_group[key] else b)
    # history oracle: which of the two groups did this user pick more often in their profile?
    hist = []
    for ex, (a, b) in zip(dev, cands):
        ga, gb = TAG_GROUP_OF[a], TAG_GROUP_OF[b]
        score = 0
        for it in ex.profile:
            ca, cb = movie_candidates(it["description"])
            groups = {TAG_GROUP_OF[ca], TAG_GROUP_OF[cb]}
            if groups == {ga, gb}:
                score += 1 if TAG_GROUP_OF[it["tag"]] == ga else -1
            else:  # a group picked over any other still says it ranks high
                if TAG_GROUP_OF[it["tag"]] == ga:
                    score += 0.5
                elif TAG_GROUP_OF[it["tag"]] == gb:
                    score -= 0.5
                elif ga in groups:
                    score -= 0.25
                elif gb in groups:
                    score += 0.25
        if score == 0:  # no evidence either way: fall back to the pooled choice
            score = 1 if ga == best_group[tuple(sorted((ga, gb)))] else -1  # type: ignore[index]
        hist.append(a if score > 0 else b)
    return {
        "history_blind_ceiling": accuracy_f1(blind, golds, task.labels),
        "history_blind_ceiling_expected": {"accuracy": 0.5},
        "history_blind_rule": {"preferred_group_per_group_pair": {"|".join(k): v for k, v in best_group.items()}},
        # the user's most frequent tag, whatever the movie
        "user_mean_floor": accuracy_f1([_most_common_tag(ex) for ex in dev], golds, task.labels),
        "history_oracle": accuracy_f1(hist, golds, task.labels),
    }


def _most_common_tag(ex: Example) -> str:
    return Counter(it["tag"] for it in ex.profile).most_common(1)[0][0] if ex.profile else MOVIE_TAGS[0]


def titles_report(dev: list[Example], cfg: Any) -> dict:
    """Reference scores on a titles dev split."""
    task = get_task("LaMP_5")
    golds = [ex.output or "" for ex in dev]
    tms = [paper_topic_method(task.query_text(ex.input)) for ex in dev]
    per_style = [rouge([format_title(st, t, m) for t, m in tms], golds) for st in TITLE_STYLES]
    blind = {k: max(r[k] for r in per_style) for k in ("rouge1", "rougeL")}
    best_l = lambda i: per_style[i]["rougeL"]  # noqa: E731
    hist = []
    for ex, (t, m) in zip(dev, tms):
        votes = Counter(title_style(it["title"], *paper_topic_method(it["abstract"])) for it in ex.profile)
        votes.pop(-1, None)
        k = votes.most_common(1)[0][0] if votes else 0
        hist.append(format_title(TITLE_STYLES[k], t, m))
    return {
        # approximate: the best single style for everyone; a blended string could score a little higher
        "history_blind_ceiling": blind,
        "history_blind_rule": {"best_single_style": TITLE_STYLES[max(range(len(TITLE_STYLES)), key=best_l)]},
        "history_oracle": rouge(hist, golds),
    }


__all__ = ["ratings_report", "tags_report", "titles_report"]
