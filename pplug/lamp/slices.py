"""Shift checks on real data: slices of a split that stand for users and times a model was not fitted to.

- `cold_start`: users who have at most `max_items` history items. When a split has too few of them
  (acl_titles and enron_subjects have none), every question's profile is cut to its user's latest
  `max_items` items instead; the questions stay unseen (dev), only the history shrinks. (Training questions
  with cut profiles would also do, but their gold outputs were trained on, so they would flatter every
  trained method.)
- `time_shift_holdout`: each training user's latest training question held out of training (`fit` keeps
  the rest), so a model is scored on a later moment of users it trained on. For time-ordered sets the dev
  split already holds each user's latest questions; this adds the same check inside the training period.
- `later_than_training`: the dev questions of users who also have training questions, dated at or after
  every one of them. The same time shift without retraining (the trained models never saw these golds);
  it needs dated histories (acl_titles has them; music_ratings and enron_subjects do not).
- `topic_shift`: users split by what they write about: the users at one end of the main topic direction
  are held out whole (another domain and other users, as a new product category brings), the users at the
  other end are fitted on, and the users in between are left out so that the two groups stay apart.
- `write_slice`: a slice as a LaMP split folder `pplug.decode.evaluate.evaluate` reads, with the source's train
  files linked beside it (the no-model floors read train golds).

The synthetic domain shift (item topics change, the personal signal stays) is `pplug synth --domain-shift`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .data import Example, write_split


def _all_dated(items: Sequence[dict]) -> bool:
    """Whether there are items and every one has a non-empty "date"."""
    return bool(items) and all(str(it.get("date", "")).strip() for it in items)


def latest_items(profile: Sequence[dict], n: int) -> list[dict]:
    """The user's `n` latest profile items: by "date" when every item has one, else the last in file order."""
    items = list(profile)
    if _all_dated(items):
        items = sorted(items, key=lambda it: str(it["date"]))  # ISO dates and years sort as strings; stable
    return [dict(it) for it in items[-n:]] if n > 0 else []


def cold_start(examples: Sequence[Example], max_items: int = 4, min_n: int = 50) -> tuple[list[Example], str]:
    """Questions of users with at most `max_items` history items, and how the slice was built.

    Returns the questions whose profile already has at most `max_items` items when there are at least
    `min_n` of them ("natural"); otherwise every question with its profile cut to the `max_items` latest
    items ("truncated": the naturally cold questions unchanged, the others made cold).
    """
    if max_items < 0:
        raise ValueError(f"max_items must be >= 0, got {max_items}")
    natural = [ex for ex in examples if len(ex.profile) <= max_items]
    if len(natural) >= min_n:
        return list(natural), f"natural: {len(natural)} questions of users with <= {max_items} history items"
    cut = [ex if len(ex.profile) <= max_items else replace(ex, profile=latest_items(ex.profile, max_items))
           for ex in examples]
    return cut, (f"truncated: only {len(natural)} questions (< {min_n}) have <= {max_items} history items, so all "
                 f"{len(cut)} questions keep their user's {max_items} latest items")


def _when(ex: Example) -> tuple:
    dates = [str(it.get("date", "")) for it in ex.profile if str(it.get("date", "")).strip()]
    return (max(dates) if dates else "", len(ex.profile))


def time_shift_holdout(train: Sequence[Example], latest: int = 1) -> tuple[list[Example], list[Example]]:
    """(fit, heldout): each user's `latest` latest training questions held out, for users with more than that.

    "Latest": the question whose history reaches the latest date (else the longest history, since a
    user's history grows over time), ties broken by file order (the later one). Users with at most `latest`
    training questions stay in `fit` (holding them all out would make them new users, not a time shift).
    Why more than one: the news sets' dev splits hold one question per user (91 and 76), too few for paired
    intervals to separate methods; their training users hold ~50 questions each.
    """
    if latest < 1:
        raise ValueError(f"time_shift_holdout: latest must be at least 1, got {latest}")
    by_user: dict[str, list[int]] = {}
    for i, ex in enumerate(train):
        by_user.setdefault(ex.user_id if ex.user_id is not None else f"q:{ex.id}", []).append(i)
    held = set()
    for idx in by_user.values():
        if len(idx) > latest:
            held.update(sorted(idx, key=lambda i: (_when(train[i]), i))[-latest:])
    return [ex for i, ex in enumerate(train) if i not in held], [ex for i, ex in enumerate(train) if i in held]


def later_than_training(train: Sequence[Example], dev: Sequence[Example]) -> tuple[list[Example], str]:
    """Dev questions of users seen in training whose history reaches at least as late as each of their training
    questions' histories, and how the slice was built.

    "As late": by the latest "date" in the history (a question's history holds only earlier items of its
    user), so only questions whose histories, and those of the user's training questions, are fully dated
    count. Returns ([], why) where the split has no dates or no user in both splits.
    """
    train_users = {ex.user_id for ex in train if ex.user_id is not None}
    undated_users = {ex.user_id for ex in train if ex.user_id is not None and not _all_dated(ex.profile)}
    latest_train: dict[str, str] = {}  # only users whose training questions are all dated can be placed in time
    for ex in train:
        if ex.user_id is not None and ex.user_id not in undated_users:
            latest_train[ex.user_id] = max(latest_train.get(ex.user_id, ""), _when(ex)[0])
    seen = [ex for ex in dev if ex.user_id in train_users]
    if not seen:
        return [], "no dev question's user has training questions"
    later = [ex for ex in seen
             if ex.user_id in latest_train and _all_dated(ex.profile) and _when(ex)[0] >= latest_train[ex.user_id]]
    if not later:
        return [], (f"none of the {len(seen)} dev questions of users seen in training is dated at or after that "
                    f"user's training questions" + (f" ({len(undated_users)} users have undated histories)"
                                                     if undated_users else ""))
    return later, (f"{len(later)} of {len(seen)} dev questions of users seen in training are dated at or after all "
                   f"of that user's training questions (never trained on)")


def topic_shift(train: Sequence[Example], dev: Sequence[Example], embed: Callable[[list[str]], Any],
                query_text: Callable[[str], str] = str, shifted_share: float = 0.25, gap_share: float = 0.15,
                ) -> tuple[list[Example], list[Example], list[Example], str]:
    """(fit_train, fit_dev, shifted, note): a domain shift inside one set, by the users' topics.

    Each user is placed by the mean embedding (`embed(texts) -> (N, d)`, unit rows) of the contents of their
    questions (`query_text(input)`, never the outputs), centred, projected on the first principal direction of
    the users' means. The end of that direction whose `shifted_share` of users lies farther from the centre
    (the more distinct topic) is the shifted group: all their questions, train and dev, with their own
    histories, form `shifted`. The users beyond the next `gap_share` are fitted on (`fit_train`, their train
    questions) and checked in-domain (`fit_dev`, their dev questions); the users in between are in neither.
    """
    import numpy as np

    if not 0 < shifted_share < 1 or not 0 <= gap_share < 1 - shifted_share:
        raise ValueError(f"need 0 < shifted_share < 1 and 0 <= gap_share < 1 - shifted_share, got "
                         f"{shifted_share}, {gap_share}")
    by_user: dict[str, list[Example]] = {}
    for ex in (*train, *dev):
        if ex.user_id is None:
            raise ValueError(f"question {ex.id!r}: field 'user_id' is missing; a topic split needs users")
        by_user.setdefault(ex.user_id, []).append(ex)
    users = sorted(by_user)
    if len(users) < 4:
        raise ValueError(f"a topic split needs at least 4 users, got {len(users)}")
    texts = sorted({query_text(ex.input) for exs in by_user.values() for ex in exs})
    row = {t: i for i, t in enumerate(texts)}
    emb = np.asarray(embed(texts), dtype=np.float64)  # (T, d)
    means = np.stack([emb[[row[query_text(ex.input)] for ex in by_user[u]]].mean(0) for u in users])  # (U, d)
    means = means / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)
    centred = means - means.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]  # (d,) first principal direction
    proj = centred @ direction  # (U,)
    n_shift = max(1, round(shifted_share * len(users)))
    order = np.argsort(proj, kind="stable")
    if abs(proj[order[:n_shift]].mean()) < abs(proj[order[-n_shift:]].mean()):
        order = order[::-1]  # the shifted end is the more distinct one
    n_gap = round(gap_share * len(users))
    shifted_users = {users[i] for i in order[:n_shift]}
    fit_users = {users[i] for i in order[n_shift + n_gap:]}
    fit_train = [ex for ex in train if ex.user_id in fit_users]
    fit_dev = [ex for ex in dev if ex.user_id in fit_users]
    shifted = [ex for ex in (*train, *dev) if ex.user_id in shifted_users]
    note = (f"{len(shifted_users)} shifted users ({len(shifted)} questions), {len(fit_users)} fitted users "
            f"({len(fit_train)} train / {len(fit_dev)} dev questions), {len(users) - len(shifted_users) - len(fit_users)}"
            f" users between them left out")
    return fit_train, fit_dev, shifted, note


def write_slice(out: str | Path, split: str, task_name: str, examples: Sequence[Example],
                train_from: str | Path | None = None) -> Path:
    """Write `examples` as split `split` of the LaMP folder `out`; link `train_from`'s train files beside it.

    The train files are symlinked (never copied: the real sets stay where they are) so that the floors of
    `pplug.decode.evaluate.evaluate(..., floors=True)` read the same train golds as on the source folder.
    """
    out = Path(out)
    write_split(out, split, task_name, list(examples))
    if train_from is not None:
        for name in ("train_questions.json", "train_outputs.json"):
            src, dst = Path(train_from).resolve() / name, out / name
            if src.is_file() and not dst.exists():
                tmp = dst.with_name(f".{name}.{os.getpid()}.tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(src)
                os.replace(tmp, dst)  # atomic: a concurrent reader sees the link or nothing
    return out


__all__ = ["cold_start", "later_than_training", "latest_items", "time_shift_holdout", "topic_shift", "write_slice"]
