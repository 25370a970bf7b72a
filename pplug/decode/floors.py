"""Predictions that need no model: the floors a learned method must beat to be worth running.

Each floor is the strongest simple rule of its kind, with any free choice made on the training split (never on
the questions it is scored on):

    ratings          always-<the training split's most common rating>, the user's mean past rating,
                     the user's most common past rating
    labels           always-<the training split's most common label>, the user's most common past label
    generation       the first N words of the input's content, N chosen by ROUGE-1 on training questions;
                     the output of the user's past item most similar to the input (BM25), e.g. the subject of
                     the user's nearest past email

Why chosen on train: a fixed N (the median gold length) gave ROUGE-1 0.017 on enron_subjects where the first 8
words give 0.077; a floor that is too weak flatters every learned method.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pplug.lamp.metrics import rouge
from pplug.methods.batches import BM25

MAX_FIRST_WORDS = 40
"""Largest N tried for the first-N-words floor."""

FIT_QUESTIONS = 400
"""Training questions (seeded sample) the first-N-words floor is fitted on: enough to pick N, cheap to score."""


def _mode(values: Sequence[str], order: Sequence[str] = ()) -> str:
    """The most common value; ties go to the one listed first in `order` (else the first seen)."""
    counts = Counter(values)
    rank = {v: i for i, v in enumerate(order)}
    return max(counts, key=lambda v: (counts[v], -rank.get(v, len(rank))))


def _past_outputs(task: Any, ex: Any) -> list[str]:
    field = task.output_field
    return [str(it[field]).strip() for it in ex.profile if field and str(it.get(field, "")).strip()]


def first_words(task: Any, input: str, n: int) -> str:
    """The first `n` words of the input's content (the text after the task instruction)."""
    return " ".join(task.query_text(input).split()[:n])


def fit_first_words(task: Any, train: Sequence[Any], seed: int = 0) -> int:
    """The N whose first-N-words prediction has the best mean ROUGE-1 on (a seeded sample of) `train`."""
    labelled = [ex for ex in train if ex.output and str(ex.output).strip()]
    if not labelled:
        raise ValueError("fit_first_words: no training question has a gold output")
    sample = random.Random(seed).sample(labelled, min(FIT_QUESTIONS, len(labelled)))
    golds = [str(ex.output) for ex in sample]
    contents = [task.query_text(ex.input).split() for ex in sample]
    scores = {n: rouge([" ".join(c[:n]) for c in contents], golds)["rouge1"] for n in range(1, MAX_FIRST_WORDS + 1)}
    return max(scores, key=lambda n: (scores[n], -n))  # the shorter N on a tie


def nearest_past_output(task: Any, ex: Any) -> str:
    """The output of the user's past item whose text is most similar (BM25) to this input's content; "" for none."""
    items = [it for it in ex.profile if str(it.get(task.output_field, "")).strip()] if task.output_field else []
    if not items:
        return ""
    texts = [" ".join(str(v) for k, v in it.items() if k not in ("id", "date", task.output_field) and isinstance(v, str))
             for it in items]
    best = BM25(texts).top_k(task.query_text(ex.input), 1)[0]
    return str(items[best][task.output_field]).strip()


def floor_predictions(task: Any, examples: Sequence[Any], train: Sequence[Any] = (), seed: int = 0
                      ) -> dict[str, dict[str, str]]:
    """Every floor of `task` on `examples`: {floor name: {question id: prediction}}.

    Args:
        task: the TaskSpec.
        examples: the questions to predict (their profiles are read, never their golds).
        train: the training split's questions with golds: the global majority and the first-N-words length are
            chosen on them. Empty: both come from the examples' profiles (N: the past outputs' median length).
        seed: the seed of the training sample the first-N-words floor is fitted on.
    """
    floors: dict[str, dict[str, str]] = {}
    if task.is_rating or task.is_classification:
        train_golds = [str(ex.output).strip() for ex in train if ex.output is not None and str(ex.output).strip()]
        pool = train_golds or [v for ex in examples for v in _past_outputs(task, ex)] or [task.labels[-1]]
        majority = _mode(pool, task.labels)
        floors[f"always-{majority}"] = {ex.id: majority for ex in examples}
        per_user = {ex.id: _past_outputs(task, ex) for ex in examples}
        if task.is_rating:
            floors["user mean rating"] = {i: f"{statistics.fmean(float(v) for v in past):.4f}" if past else majority
                                          for i, past in per_user.items()}
            floors["user majority rating"] = {i: _mode(past, task.labels[::-1]) if past else majority
                                              for i, past in per_user.items()}  # ties: the higher rating
        else:
            floors["user majority label"] = {i: _mode(past, task.labels) if past else majority
                                             for i, past in per_user.items()}
        return floors
    if any(ex.output for ex in train):
        n = fit_first_words(task, train, seed)
    else:  # no training golds: as long as the users' past outputs are (median words), else 8
        lengths = [len(v.split()) for ex in examples for v in _past_outputs(task, ex)]
        n = max(1, round(statistics.median(lengths))) if lengths else 8
    floors[f"first {n} words"] = {ex.id: first_words(task, ex.input, n) for ex in examples}
    if task.output_field:
        floors[f"user's nearest past {task.output_field}"] = {ex.id: nearest_past_output(task, ex) for ex in examples}
    return floors


def data_floors(task: Any, examples: Sequence[Any], data: Any, seed: int = 0, train_split: str = "train"
                ) -> dict[str, dict[str, str]]:
    """`floor_predictions` fitted on the `train_split` of the LaMP folder `data` (from the profiles alone where the
    folder holds no such split). Pass the split the learned methods trained on: a slice held out of training
    (the time-shift slice trains on `fit`) must stay out of the floors' fitting too."""
    from pplug.lamp.data import load_split

    try:
        train = load_split(data, train_split, task).examples
    except (ValueError, FileNotFoundError):
        train = []
    return floor_predictions(task, examples, train, seed)


__all__ = ["FIT_QUESTIONS", "MAX_FIRST_WORDS", "data_floors", "first_words", "fit_first_words", "floor_predictions",
           "nearest_past_output"]
