"""Statistics for comparing methods on the same questions: per-question scores, paired bootstrap, mean ± sd.

A difference between two methods' means on a few hundred questions is noise unless it is large next to
how much it moves when the questions are redrawn. `paired_bootstrap` redraws the questions with
replacement (the same draw for both methods, since both answered the same questions) and reports the
observed difference with a percentile 95% interval; a method "leads" only where the interval excludes 0
(`leads`). Where a user has several of the questions, their errors move together (one history, one
writer), so the bootstrap draws users instead, each with all their questions. `mean_sd` summarises a cell over
training seeds.

Per-question scores (`example_scores`) decompose `pplug.lamp.metrics.score` exactly: their mean is the metric
(ROUGE-1/L and accuracy per question; absolute error for MAE; squared error for RMSE, whose metric is the
root of the mean, so `aggregate("rmse", ...)` takes the root and the bootstrap resamples squared errors
before the root). Macro-F1 is not a mean over questions, so it has no per-question score here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from pplug.core.tasks import OutputKind, TaskSpec, get_task

from .metrics import METRIC_DIRECTIONS, label_index, rating_value

ROOT_OF_MEAN = frozenset({"rmse"})
"""Metrics whose value is the square root of the mean per-question score (squared error)."""


def example_scores(task: str | TaskSpec, preds: Mapping[str, str], golds: Mapping[str, str]
                   ) -> dict[str, dict[str, float]]:
    """Per-question scores: metric -> (id -> score), over the ids of `golds` (which `preds` must all have).

    Ratings: "mae" -> |pred - gold|, "rmse" -> (pred - gold)^2 (official parse: an unparsable prediction
    counts as whichever of 1 or 5 is farther from the gold). Generation: "rouge1", "rougeL" F-measure.
    Classification: "accuracy" -> 1/0 (no "f1": macro-F1 is not a per-question mean).

    Raises:
        KeyError: a gold id has no prediction (names it).
    """
    from .metrics import _rouge_scorer

    spec = get_task(task)
    ids = list(golds)
    missing = [i for i in ids if i not in preds]
    if missing:
        raise KeyError(f"{len(missing)} gold ids have no prediction, e.g. {missing[:3]}")
    p = {i: preds[i] if preds[i] is not None else "" for i in ids}
    if spec.output_kind is OutputKind.RATING:
        err = {}
        for i in ids:
            g = float(str(golds[i]).strip())
            err[i] = rating_value(p[i], g) - g
        return {"mae": {i: abs(e) for i, e in err.items()}, "rmse": {i: e * e for i, e in err.items()}}
    if spec.output_kind is OutputKind.CLASSIFICATION:
        return {"accuracy": {i: float(label_index(p[i], spec.labels) == label_index(golds[i], spec.labels))
                             for i in ids}}
    scorer = _rouge_scorer()
    r1, rl = {}, {}
    for i in ids:
        s = scorer.score(str(golds[i]).strip(), str(p[i]).strip())  # score(target, prediction), as metrics.rouge
        r1[i], rl[i] = s["rouge1"].fmeasure, s["rougeL"].fmeasure
    return {"rouge1": r1, "rougeL": rl}


def aggregate(metric: str, values: Sequence[float]) -> float:
    """The metric from its per-question scores: the mean, or its square root for RMSE."""
    m = statistics.fmean(values) if len(values) else 0.0
    return math.sqrt(m) if metric in ROOT_OF_MEAN else m


def paired_bootstrap(a: Sequence[float], b: Sequence[float], metric: str | None = None, n_resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95, clusters: Sequence[object] | None = None
                     ) -> tuple[float, float, float]:
    """Observed `aggregate(a) - aggregate(b)` and its paired percentile bootstrap interval.

    Args:
        a, b: per-question scores of two methods on the same questions, in the same order.
        metric: the metric they are scores of ("rmse" takes the root of each resampled mean; None: the mean).
        n_resamples: bootstrap draws of len(a) questions with replacement (the same draw for a and b).
        seed: the draws' seed (same inputs and seed -> same interval).
        confidence: interval coverage (0.95: the 2.5th and 97.5th percentiles).
        clusters: each question's user (any hashable), in the same order: draw users with replacement, every
            question of a drawn user with it. A user's questions share their history, so their errors move
            together; drawing questions alone would then give intervals too narrow. None: draw questions.

    Returns:
        (difference, low, high).

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired scores need the same questions: {len(a)} vs {len(b)} scores")
    if not len(a):
        raise ValueError("paired_bootstrap needs at least one question")
    if clusters is not None and len(clusters) != len(a):
        raise ValueError(f"clusters name each question's user: {len(clusters)} names for {len(a)} scores")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    root = metric in ROOT_OF_MEAN
    diff = aggregate(metric or "", list(x)) - aggregate(metric or "", list(y))
    # per unit drawn (a question, or a user's questions): score sums and question counts
    if clusters is None:
        sx, sy, count = x, y, np.ones_like(x)
    else:
        first: dict[object, int] = {}  # users numbered in order of appearance
        unit = np.asarray([first.setdefault(c, len(first)) for c in clusters])
        sx, sy = np.bincount(unit, weights=x), np.bincount(unit, weights=y)
        count = np.bincount(unit).astype(np.float64)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    # chunks keep the index matrix small for large splits (n_resamples x n int64 otherwise)
    chunk = max(1, 2_000_000 // len(sx))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, len(sx), size=(stop - start, len(sx)))
        n = count[idx].sum(axis=1)
        mx, my = sx[idx].sum(axis=1) / n, sy[idx].sum(axis=1) / n
        diffs[start:stop] = np.sqrt(mx) - np.sqrt(my) if root else mx - my
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return float(diff), float(lo), float(hi)


def leads(metric: str, interval: Sequence[float]) -> bool:
    """True if (diff, lo, hi) of a-minus-b says `a` is better on `metric` with the interval excluding 0."""
    _, lo, hi = interval
    return lo > 0 if METRIC_DIRECTIONS.get(metric, True) else hi < 0


def interval_verdict(metric: str, interval: Sequence[float]) -> str:
    """"leads" (interval excludes 0 in a's favour), "behind" (excludes 0 the other way) or "tie" (includes 0)."""
    if leads(metric, interval):
        return "leads"
    _, lo, hi = interval
    return "behind" if (hi < 0 if METRIC_DIRECTIONS.get(metric, True) else lo > 0) else "tie (interval includes 0)"


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with a single value: one seed says nothing about spread)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_sd needs at least one value")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def format_mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """"0.412 ± 0.013 (3)" (mean ± sd over n values); a single value prints alone."""
    m, sd = mean_sd(values)
    return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f} ± {sd:.{digits}f} ({len(values)})"


def format_interval(interval: Sequence[float], digits: int = 3) -> str:
    """"+0.041 [+0.012, +0.070]"."""
    d, lo, hi = interval
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def row_decoding(row: str) -> str | None:
    """The decoding of a results row ("pplug [median]" -> "median", "pplug" -> "argmax", a floor -> None)."""
    if row.startswith("floor:"):
        return None
    return row[row.rindex("[") + 1 : -1] if row.endswith("]") and " [" in row else "argmax"


def question_users(examples: Sequence) -> dict[str, str] | None:
    """id -> user of LaMP examples for `summarize(users=...)`; None where a question names no user."""
    if not examples or any(ex.user_id is None for ex in examples):
        return None
    return {ex.id: str(ex.user_id) for ex in examples}


def summarize(task: str | TaskSpec, golds: Mapping[str, str], preds: Mapping[str, Mapping[str, Mapping[str, str]]],
              refs: Sequence[str], n_resamples: int = 2000, seed: int = 0, compare_refs: bool = False,
              users: Mapping[str, str] | None = None) -> dict:
    """Mean ± sd of every row over seeds, and paired bootstrap intervals of each ref row minus the others.

    Args:
        task: the task (decides the metrics).
        golds: id -> gold of the questions scored (every row must answer all of them).
        preds: row -> seed label -> (id -> prediction). Rows that do not depend on the seed (`none` with
            greedy decoding, the floors) hold a single label.
        refs: rows compared with the others (e.g. "pplug", "pplug [median]"); each is compared with every
            other row of the same decoding (`row_decoding`) and with every floor.
        n_resamples, seed: bootstrap draws and their seed.
        compare_refs: also compare the refs with each other (variants of one method, say); by default a ref is
            compared with the rows that are not refs only.
        users: id -> the question's user. Where some user has several questions the bootstrap draws users
            (`paired_bootstrap`'s clusters), else questions; "resampled" in the result says which.

    Returns:
        {"cells": {row: {metric: {"mean", "sd", "values"}}},
         "comparisons": {ref: {other: {metric: {"diff", "lo", "hi", "leads", "per_seed": {label: [d, lo, hi]}}}}}}
        The main interval ("diff", "lo", "hi") pools the seeds: each question's score is averaged over a row's
        seeds (squared errors for RMSE, so its value is the RMSE over all seeds' answers), then the questions
        are resampled. "per_seed" pairs seed s of the ref with seed s of the other (or its single run).
    """
    spec = get_task(task)
    ids = list(golds)
    clusters = [users[i] for i in ids] if users is not None else None
    if clusters is not None and len(set(clusters)) == len(clusters):
        clusters = None  # one question per user: drawing users is drawing questions
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}  # row -> label -> metric -> scores in id order
    for row, by_seed in preds.items():
        scores[row] = {}
        for label, p in by_seed.items():
            per = example_scores(spec, p, golds)
            scores[row][label] = {m: [v[i] for i in ids] for m, v in per.items()}
    cells: dict[str, dict[str, dict]] = {}
    for row, by_label in scores.items():
        cells[row] = {}
        for m in next(iter(by_label.values())):
            values = [aggregate(m, s[m]) for s in by_label.values()]
            mean, sd = mean_sd(values)
            cells[row][m] = {"mean": mean, "sd": sd, "values": dict(zip(by_label, values))}

    def pooled(row: str, m: str) -> list[float]:
        runs = [s[m] for s in scores[row].values()]
        return [statistics.fmean(v) for v in zip(*runs)]

    comparisons: dict[str, dict[str, dict]] = {}
    for ref in refs:
        if ref not in scores:
            continue
        comparisons[ref] = {}
        for other in scores:
            if other == ref or (other in refs and not compare_refs) \
                    or row_decoding(other) not in (None, row_decoding(ref)):
                continue
            out = {}
            for m in scores[ref][next(iter(scores[ref]))]:
                d, lo, hi = paired_bootstrap(pooled(ref, m), pooled(other, m), m, n_resamples, seed,
                                             clusters=clusters)
                per_seed = {}
                for label, s in scores[ref].items():
                    o = scores[other].get(label) or next(iter(scores[other].values()))
                    per_seed[label] = [round(x, 5) for x in paired_bootstrap(s[m], o[m], m, n_resamples, seed,
                                                                             clusters=clusters)]
                out[m] = {"diff": d, "lo": lo, "hi": hi, "leads": leads(m, (d, lo, hi)), "per_seed": per_seed}
            comparisons[ref][other] = out
    resampled = "questions" if clusters is None else f"users ({len(set(clusters))})"
    return {"cells": cells, "comparisons": comparisons, "n": len(ids), "n_resamples": n_resamples,
            "resampled": resampled}


def summary_table(summary: dict, title: str | None = None, digits: int = 3) -> str:
    """Markdown: one row per results row, "mean ± sd (seeds)" per metric (`pplug.lamp.metrics.format_table` layout)."""
    from .metrics import format_table

    rows = {}
    for row, cells in summary["cells"].items():
        rows[row] = {m: format_mean_sd(list(c["values"].values()), digits) for m, c in cells.items()}
    return format_table(rows, title=title)


def comparison_lines(summary: dict, metrics: Sequence[str] | None = None, digits: int = 3) -> list[str]:
    """One line per (ref, other, metric): the pooled interval and whether the ref leads."""
    lines = []
    for ref, others in summary["comparisons"].items():
        for other, by_metric in others.items():
            for m, c in by_metric.items():
                if metrics is not None and m not in metrics:
                    continue
                verdict = interval_verdict(m, (c["diff"], c["lo"], c["hi"]))
                lines.append(f"{ref} - {other} {m}: {format_interval((c['diff'], c['lo'], c['hi']), digits)} "
                             f"{verdict}")
    return lines


__all__ = ["ROOT_OF_MEAN", "aggregate", "comparison_lines", "example_scores", "format_interval", "format_mean_sd",
           "interval_verdict", "leads", "mean_sd", "paired_bootstrap", "row_decoding", "summarize", "summary_table"]
