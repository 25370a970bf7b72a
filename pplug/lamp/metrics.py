"""LaMP scoring, identical to the official `eval/evaluation.py` of the LaMP benchmark.

- Prediction ids must equal gold ids (one-line LaMPDataError otherwise).
- Classification (LaMP_1, LaMP_2, LaMP_2N): strip, map to the label's index in the official label
  list (anything else -> -1), then accuracy over all rows (so a -1 prediction of a -1 gold counts as
  correct, as in sklearn on the mapped ints) and macro-F1 over `labels=range(len(labels))` with
  sklearn's semantics: a class absent from both golds and predictions scores F1 0 and still counts in
  the mean. torchmetrics' MulticlassF1Score drops such classes from the mean (and `ignore_index`
  drops rows by their *gold*), so it gives other numbers; the F1 here is written out by hand.
- Rating (LaMP_3): `float(pred.strip())`; if that fails, the prediction becomes whichever of 1 or 5
  is farther from the gold. MAE and RMSE (root of the mean squared error).
- Generation (LaMP_4..7): ROUGE-1 and ROUGE-L F-measure from the `rouge_score` package with default
  options (no stemming, its default tokenizer), averaged over rows. (The official script goes through
  `evaluate`'s bootstrap aggregator, whose "mid" is a resampled estimate of this same mean.)
"""

from __future__ import annotations

import math

from pplug.core.tasks import OutputKind, TaskSpec, get_task

from .data import LaMPDataError, check_same_ids

METRIC_DIRECTIONS = {"accuracy": True, "f1": True, "mae": False, "rmse": False, "rouge1": True, "rougeL": True}
"""metric name -> True if higher is better."""


def label_index(text: str, labels: tuple[str, ...] | list[str]) -> int:
    """Official mapping of an output string to a label index: exact match after strip, else -1."""
    s = str(text).strip()
    try:
        return list(labels).index(s)
    except ValueError:
        return -1


def accuracy_f1(preds: list[str], golds: list[str], labels: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over `labels` (sklearn `f1_score(average='macro', labels=range(n))` semantics)."""
    p = [label_index(x, labels) for x in preds]
    g = [label_index(x, labels) for x in golds]
    n = len(g)
    acc = sum(int(a == b) for a, b in zip(p, g)) / n if n else 0.0
    f1s = []
    for c in range(len(labels)):
        tp = sum(1 for a, b in zip(p, g) if a == c and b == c)
        fp = sum(1 for a, b in zip(p, g) if a == c and b != c)
        fn = sum(1 for a, b in zip(p, g) if a != c and b == c)
        # F = 2tp / (2tp + fp + fn); sklearn's zero_division default ("warn") makes 0/0 -> 0
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": acc, "f1": sum(f1s) / len(f1s) if f1s else 0.0}


def rating_value(pred: str, gold: float) -> float:
    """Official LaMP_3 parse: float(pred); unparsable -> whichever of 1 or 5 is farther from `gold`."""
    try:
        return float(str(pred).strip())
    except ValueError:
        return 1.0 if abs(1 - gold) > abs(5 - gold) else 5.0


def mae_rmse(preds: list[str], golds: list[str], ids: list[str] | None = None) -> dict[str, float]:
    """MAE and RMSE with the official worst-case rule for unparsable predictions."""
    g = []
    for i, x in enumerate(golds):
        try:
            g.append(float(str(x).strip()))
        except ValueError:
            rid = ids[i] if ids else f"#{i}"
            raise LaMPDataError(f"golds: record {rid}: field 'output': gold rating {x!r} is not a number") from None
    p = [rating_value(x, y) for x, y in zip(preds, g)]
    n = len(g)
    if n == 0:
        return {"mae": 0.0, "rmse": 0.0}
    mae = sum(abs(a - b) for a, b in zip(p, g)) / n
    rmse = math.sqrt(sum((a - b) ** 2 for a, b in zip(p, g)) / n)
    return {"mae": mae, "rmse": rmse}


_SCORER = None


def _rouge_scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"])  # defaults: no stemmer, default tokenizer
    return _SCORER


def rouge(preds: list[str], golds: list[str]) -> dict[str, float]:
    """Mean ROUGE-1 / ROUGE-L F-measure as `rouge_score` computes them (default options)."""
    scorer = _rouge_scorer()
    r1 = rl = 0.0
    for pred, gold in zip(preds, golds):
        s = scorer.score(gold.strip(), pred.strip())  # score(target, prediction)
        r1 += s["rouge1"].fmeasure
        rl += s["rougeL"].fmeasure
    n = len(golds)
    return {"rouge1": r1 / n if n else 0.0, "rougeL": rl / n if n else 0.0}


def score(task: str | TaskSpec, preds: dict[str, str], golds: dict[str, str]) -> dict[str, float]:
    """Score predictions against golds with official LaMP semantics.

    Args:
        task: task name or spec (decides labels and metrics).
        preds: id -> predicted output string.
        golds: id -> gold output string; must have exactly the ids of `preds`.

    Returns:
        {metric: value} with keys `task.metrics`.

    Raises:
        LaMPDataError: the id sets differ (names how many and a few examples).
    """
    spec = get_task(task)
    check_same_ids(golds, preds, "predictions", what="prediction vs gold")
    ids = list(golds)
    g = [golds[i] for i in ids]
    p = [preds[i] if preds[i] is not None else "" for i in ids]
    if spec.output_kind is OutputKind.CLASSIFICATION:
        out = accuracy_f1(p, g, spec.labels)
    elif spec.output_kind is OutputKind.RATING:
        out = mae_rmse(p, g, ids)
    else:
        out = rouge(p, g)
    return {k: float(out[k]) for k in spec.metrics}


def format_table(rows: dict[str, dict[str, float]], title: str | None = None) -> str:
    """A Markdown table: one row per method, one column per metric (arrows show the better direction).

    >>> print(format_table({"pplug": {"mae": 0.25, "rmse": 0.5}}))
    | method | mae ↓ | rmse ↓ |
    |---|---|---|
    | pplug | 0.2500 | 0.5000 |
    """
    cols: list[str] = []
    for metrics in rows.values():
        for k in metrics:
            if k not in cols:
                cols.append(k)

    def head(k: str) -> str:
        d = METRIC_DIRECTIONS.get(k)
        return k if d is None else f"{k} {'↑' if d else '↓'}"

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    lines = []
    if title:
        lines.append(f"**{title}**")
        lines.append("")
    lines.append("| method | " + " | ".join(head(k) for k in cols) + " |")
    lines.append("|" + "---|" * (len(cols) + 1))
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(metrics.get(k)) for k in cols) + " |")
    return "\n".join(lines)


def is_better(metric: str, a: float, b: float) -> bool:
    """True if value `a` of `metric` beats `b`."""
    return a > b if METRIC_DIRECTIONS.get(metric, True) else a < b

