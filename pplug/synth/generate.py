"""Synthetic LaMP data whose users carry real, learnable personal signal that only their history shows.

The default data (`kind="ratings"`, LaMP_3 shape) is what `make train` trains on: short reviews whose
wording reveals a *text sentiment* s in 1..5 to anyone, while each user adds a personal bias b
(harsh users rate 1-2 points lower, generous ones higher) and a little noise:

    rating = clip(s + b + noise, 1, 5)        b ~ biases (same for all of a user's reviews)

The text is drawn the same way for every user, so nothing but the history (past (text, score) pairs)
tells a model who is harsh. `synth_report.json` states what that is worth:
`history_blind_ceiling` is the best score any model ignoring the history (and the user id) can reach
on the dev split: it knows s exactly and predicts, per s, the pooled optimum (the median for MAE, the
mean for RMSE), fitted on dev itself, so it is if anything optimistic. `history_oracle` estimates b
from the profile (median of score - s) and `user_mean_floor` ignores the text, predicting the
user's own median / mean score. Kind "tags" (LaMP_2) gives each user a ranking of three tag groups;
kind "titles" (LaMP_5) gives each user a title style.

`domain_shift=True` (`pplug synth --domain-shift`, kinds ratings and titles) keeps train as it is and
replaces dev with questions from another domain: garden-tool reviews in their own wording instead of
household products (ratings), or papers on other topics with other methods (titles), each with a history
of the same kind. The personal signal survives (the same user has the same rating offset or title style),
only the items change, so a model that learned the user and not the training vocabulary still beats the
history-blind ceiling there. The report's ceiling and floors are computed on that dev split.

All draws come from one `random.Random(seed)`: the same arguments give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from pplug.core.io import atomic_write_json
from pplug.core.tasks import get_task
from pplug.lamp.data import Example, LaMPSplit, load_split, write_split

from .report import ratings_report, tags_report, titles_report
from .vocab import (
    ABSTRACT_TEMPLATES,
    FILLERS,
    METHODS,
    PRODUCTS,
    SENTIMENT_PHRASES,
    SHIFTED_FILLERS,
    SHIFTED_METHODS,
    SHIFTED_PRODUCTS,
    SHIFTED_SENTIMENT_PHRASES,
    SHIFTED_TOPICS,
    TAG_GROUPS,
    TAG_PHRASES,
    TITLE_STYLES,
    TOPICS,
    capitalize,
    format_title,
)

KINDS = ("ratings", "tags", "titles")
REPORT_NAME = "synth_report.json"

# --- generation -------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    """Size and difficulty of a synthetic set (defaults: the `make train` data, small enough for 2 CPU cores)."""

    kind: str = "ratings"
    """ratings (LaMP_3), tags (LaMP_2) or titles (LaMP_5)."""
    n_users: int = 150
    """Users; every user appears in train and dev."""
    seed: int = 0
    """Seed of the one random generator all draws come from."""
    min_history: int = 10
    """Fewest profile items a user has before their first question."""
    max_history: int = 24
    """Most profile items before the first question."""
    min_train: int = 8
    """Fewest train questions per user."""
    max_train: int = 16
    """Most train questions per user."""
    dev_per_user: int = 2
    """Dev questions per user: the user's latest ones (time-based split)."""
    max_profile: int = 40
    """Profiles keep the most recent items up to this many."""
    noise: float = 0.1
    """Probability that a user departs from their personal rule (a rating ±1, the other tag, another style)."""
    biases: tuple[int, ...] = (-2, -1, 0, 1, 2)
    """ratings: the personal offsets users draw from uniformly."""
    domain_shift: bool = False
    """ratings, titles: dev questions (and their histories) come from another item domain (module docstring)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown synthetic kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.n_users < 1:
            raise ValueError("n_users must be >= 1")
        if not (0 <= self.min_history <= self.max_history):
            raise ValueError("need 0 <= min_history <= max_history")
        if not (1 <= self.min_train <= self.max_train):
            raise ValueError("need 1 <= min_train <= max_train")
        if self.dev_per_user < 1:
            raise ValueError("dev_per_user must be >= 1")
        if self.max_profile < 1:
            raise ValueError("max_profile must be >= 1")
        if not (0.0 <= self.noise < 0.5):
            raise ValueError("noise must be in [0, 0.5)")
        self.biases = tuple(int(b) for b in self.biases)
        if not self.biases:
            raise ValueError("biases must not be empty")
        if self.domain_shift and self.kind == "tags":
            raise ValueError("domain_shift: kind 'tags' has no second domain; use kind 'ratings' or 'titles'")


TASK_OF_KIND = {"ratings": "LaMP_3", "tags": "LaMP_2", "titles": "LaMP_5"}


def _rating_event(rng: random.Random, bias: int, noise: float, shifted: bool = False) -> tuple[dict, str]:
    products, phrases, fillers = ((SHIFTED_PRODUCTS, SHIFTED_SENTIMENT_PHRASES, SHIFTED_FILLERS) if shifted
                                  else (PRODUCTS, SENTIMENT_PHRASES, FILLERS))
    s = rng.randint(1, 5)
    filler = rng.choice(fillers)
    text = f"The {rng.choice(products)} {rng.choice(phrases[s])}." + (f" {filler}" if filler else "")
    eps = 0
    if rng.random() < noise:
        eps = rng.choice((-1, 1))
    score = min(5, max(1, s + bias + eps))
    return {"text": text}, str(score)


def _tag_event(rng: random.Random, ranking: tuple[str, ...], noise: float) -> tuple[dict, str]:
    g1, g2 = rng.sample(sorted(TAG_GROUPS), 2)
    a, b = rng.choice(TAG_GROUPS[g1]), rng.choice(TAG_GROUPS[g2])
    desc = f"A film {rng.choice(TAG_PHRASES[a])} and {rng.choice(TAG_PHRASES[b])}."
    pick = a if ranking.index(g1) < ranking.index(g2) else b
    if rng.random() < noise:
        pick = b if pick == a else a
    return {"description": desc}, pick


def _title_event(rng: random.Random, style: int, noise: float, shifted: bool = False) -> tuple[dict, str]:
    topics, methods = (SHIFTED_TOPICS, SHIFTED_METHODS) if shifted else (TOPICS, METHODS)
    topic, method = rng.choice(topics), rng.choice(methods)
    abstract = rng.choice(ABSTRACT_TEMPLATES).format(topic=topic, method=method, Topic=capitalize(topic))
    k = style
    if rng.random() < noise:
        k = rng.choice([i for i in range(len(TITLE_STYLES)) if i != style])
    return {"abstract": abstract}, format_title(TITLE_STYLES[k], topic, method)


def _generate(cfg: SynthConfig) -> tuple[dict[str, list[Example]], dict[str, object]]:
    """Build train/dev examples and each user's hidden trait. Pure: no files."""
    rng = random.Random(cfg.seed)
    # the shifted dev draws come from their own generator, so train is byte-identical with and without the shift
    shift_rng = random.Random(f"domain-shift-{cfg.seed}")
    task = get_task(TASK_OF_KIND[cfg.kind])
    splits: dict[str, list[Example]] = {"train": [], "dev": []}
    traits: dict[str, object] = {}
    rankings = [tuple(p) for p in _permutations(sorted(TAG_GROUPS))]
    base_day = dt.date(2020, 1, 1)
    width = len(str(cfg.n_users - 1))
    for u in range(cfg.n_users):
        uid = f"u{u:0{width}d}"
        if cfg.kind == "ratings":
            trait: object = rng.choice(cfg.biases)
            event = lambda t=trait: _rating_event(rng, t, cfg.noise)  # noqa: E731
        elif cfg.kind == "tags":
            trait = rng.choice(rankings)
            event = lambda t=trait: _tag_event(rng, t, cfg.noise)  # noqa: E731
        else:
            trait = rng.randrange(len(TITLE_STYLES))
            event = lambda t=trait: _title_event(rng, t, cfg.noise)  # noqa: E731
        traits[uid] = trait
        n_hist = rng.randint(cfg.min_history, cfg.max_history)
        n_train = rng.randint(cfg.min_train, cfg.max_train)
        day = base_day + dt.timedelta(days=rng.randrange(365))
        timeline: list[dict] = []
        for t in range(n_hist + n_train + cfg.dev_per_user):
            fields, gold = event()
            day += dt.timedelta(days=rng.randint(1, 9))
            item_id = f"{uid}-{t:03d}"
            if t >= n_hist:
                q = t - n_hist
                split = "train" if q < n_train else "dev"
                content = next(iter(fields.values()))
                splits[split].append(
                    Example(
                        id=f"synth-{cfg.kind}-{item_id}",
                        input=task.make_input(content),
                        profile=[dict(it) for it in timeline[-cfg.max_profile :]],
                        output=gold,
                        user_id=uid,
                    )
                )
            out_field = {"ratings": "score", "tags": "tag", "titles": "title"}[cfg.kind]
            timeline.append({"id": item_id, **fields, out_field: gold, "date": day.isoformat()})
        if cfg.domain_shift:
            splits["dev"] = splits["dev"][: len(splits["dev"]) - cfg.dev_per_user]  # the in-domain dev questions
            splits["dev"].extend(_shifted_questions(cfg, shift_rng, task, uid, trait, day))
    return splits, traits


def _shifted_questions(cfg: SynthConfig, rng: random.Random, task, uid: str, trait, day: dt.date) -> list[Example]:
    """One user's dev questions in the other domain, after a history in that domain (same trait, new items)."""
    shifted_event = _rating_event if cfg.kind == "ratings" else _title_event
    out_field = {"ratings": "score", "titles": "title"}[cfg.kind]
    n_hist = rng.randint(cfg.min_history, cfg.max_history)
    timeline: list[dict] = []
    out = []
    for t in range(n_hist + cfg.dev_per_user):
        fields, gold = shifted_event(rng, trait, cfg.noise, shifted=True)
        day += dt.timedelta(days=rng.randint(1, 9))
        item_id = f"{uid}-x{t:03d}"
        if t >= n_hist:
            out.append(Example(id=f"synth-{cfg.kind}-{item_id}", input=task.make_input(next(iter(fields.values()))),
                               profile=[dict(it) for it in timeline[-cfg.max_profile :]], output=gold, user_id=uid))
        timeline.append({"id": item_id, **fields, out_field: gold, "date": day.isoformat()})
    return out


def _permutations(xs: list[str]) -> list[list[str]]:
    if len(xs) <= 1:
        return [list(xs)]
    return [[x, *rest] for i, x in enumerate(xs) for rest in _permutations(xs[:i] + xs[i + 1 :])]


def make_synthetic(
    out_dir: str | Path,
    kind: str = "ratings",
    n_users: int = 150,
    seed: int = 0,
    **overrides,
) -> dict:
    """Write a synthetic LaMP set (train + dev splits and `synth_report.json`) into `out_dir`.

    Args:
        out_dir: folder for `{train,dev}_{questions,outputs}.json` and the report.
        kind: "ratings" (LaMP_3 shape, the default data), "tags" (LaMP_2) or "titles" (LaMP_5).
        n_users: number of users (each has train questions and `dev_per_user` later dev questions).
        seed: all randomness comes from this seed; same arguments -> identical files.
        **overrides: any other `SynthConfig` field (min_history, noise, biases, ...).

    Returns:
        The report: task, sizes, `history_blind_ceiling` {metric: value} and the reference scores
        (`history_oracle`, `user_mean_floor`, ...), as written to `synth_report.json`.
    """
    cfg = SynthConfig(kind=kind, n_users=n_users, seed=seed, **overrides)
    splits, traits = _generate(cfg)
    task = get_task(TASK_OF_KIND[cfg.kind])
    out_dir = Path(out_dir)
    for name, examples in splits.items():
        write_split(out_dir, name, task.name, examples)
    if cfg.kind == "ratings":
        scores = ratings_report(splits["dev"], cfg)
        trait_summary = {str(b): n for b, n in sorted(Counter(traits.values()).items())}  # type: ignore[arg-type]
    elif cfg.kind == "tags":
        scores = tags_report(splits["dev"], cfg)
        trait_summary = {">".join(r): n for r, n in sorted(Counter(traits.values()).items())}  # type: ignore[arg-type]
    else:
        scores = titles_report(splits["dev"], cfg)
        trait_summary = {TITLE_STYLES[k]: n for k, n in sorted(Counter(traits.values()).items())}  # type: ignore[arg-type]
    profile_sizes = [len(ex.profile) for ex in splits["train"] + splits["dev"]]
    report = {
        "kind": cfg.kind,
        "task": task.name,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "splits": {k: len(v) for k, v in splits.items()},
        "users": cfg.n_users,
        "profile_size": {"min": min(profile_sizes), "max": max(profile_sizes),
                         "mean": sum(profile_sizes) / len(profile_sizes)},
        "user_traits": trait_summary,
        "dev_domain": "shifted (other items, same users and traits)" if cfg.domain_shift else "same as train",
        "main_metric": task.main_metric,
        "higher_is_better": task.higher_is_better,
        **scores,
        "notes": (
            "history_blind_ceiling: best dev score of a model that ignores history and user id, fitted on dev "
            "itself (optimistic). history_oracle: reads the user's rule off their profile. A personalized "
            "model is only personalizing if it beats history_blind_ceiling."
        ),
    }  # fmt: skip
    atomic_write_json(out_dir / REPORT_NAME, report)
    return report


def ensure_default_data(root: str | Path = "lamp_data/synthetic", kind: str = "ratings") -> Path:
    """The default synthetic set of `kind` under `root/kind`, generated on first use; returns that folder.

    Existing files are reused when their report says they were made with the default settings
    for this kind; otherwise (missing, partial or other settings) they are regenerated.
    """
    import json

    folder = Path(root) / kind
    cfg = SynthConfig(kind=kind)
    want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    report_path = folder / REPORT_NAME
    needed = [folder / f"{s}_{f}.json" for s in ("train", "dev") for f in ("questions", "outputs")]
    if report_path.is_file() and all(p.is_file() for p in needed):
        try:
            if json.loads(report_path.read_text(encoding="utf-8")).get("config") == want:
                return folder
        except (OSError, ValueError):
            pass
    make_synthetic(folder, kind=kind)
    return folder


def load_synthetic(folder: str | Path, split: str) -> LaMPSplit:
    """Load one split of a synthetic set (task read from its outputs file)."""
    return load_split(folder, split)


__all__ = ["KINDS", "REPORT_NAME", "SynthConfig", "TASK_OF_KIND", "ensure_default_data", "load_synthetic",
           "make_synthetic"]
