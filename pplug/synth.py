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
import math
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from pplug.data import Example, LaMPSplit, load_split, write_split
from pplug.io import atomic_write_json
from pplug.metrics import accuracy_f1, rouge
from pplug.tasks import MOVIE_TAGS, get_task

KINDS = ("ratings", "tags", "titles")
REPORT_NAME = "synth_report.json"

# --- vocabulary (user-independent) -----------------------------------------------------------------

PRODUCTS = (
    "coffee maker", "blender", "desk lamp", "backpack", "phone case", "kettle", "rain jacket", "yoga mat",
    "water bottle", "keyboard", "mouse", "toaster", "speaker", "headphones", "office chair", "frying pan",
    "alarm clock", "umbrella", "wallet", "notebook", "board game", "tent", "hair dryer", "vacuum cleaner",
    "power bank", "cookbook", "album", "running shoes", "watch", "sleeping bag",
)  # fmt: skip

SENTIMENT_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("is a total waste of money", "broke on the very first day", "is awful and completely useless",
        "was a terrible purchase"),
    2: ("is rather disappointing overall", "works poorly most of the time", "feels cheap and flimsy",
        "has too many annoying flaws"),
    3: ("is okay but nothing special", "is average for the price", "does the job without impressing",
        "is fine, neither good nor bad"),
    4: ("works well and feels solid", "is a good buy for the money", "is pleasant to use every day",
        "does its job nicely"),
    5: ("is absolutely excellent", "exceeded all my expectations", "is the best one I have ever owned",
        "is perfect in every way"),
}  # fmt: skip

FILLERS = (
    "I bought it last month.", "Shipping was quick.", "A friend recommended it.", "I use it at home.",
    "It came in a plain box.", "I got it as a gift.", "I have used it for a few weeks.", "",
)  # fmt: skip

# domain shift (ratings): another product category, described in other words, on the same 1..5 scale
SHIFTED_PRODUCTS = (
    "garden hose", "lawn mower", "hedge trimmer", "flower pot", "watering can", "bird feeder", "wheelbarrow",
    "rake", "seed tray", "compost bin", "patio heater", "pair of garden gloves", "pruning shears", "sprinkler",
    "planter box",
)  # fmt: skip

SHIFTED_SENTIMENT_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("fell apart after one season", "is a complete disaster outdoors", "is junk I regret ordering",
        "failed me badly from the start"),
    2: ("is a letdown for outdoor work", "rusts far too quickly", "struggles with simple chores",
        "is below what I hoped for"),
    3: ("is serviceable and unremarkable", "gets the chores done, just about", "is middling in most respects",
        "is acceptable, no more"),
    4: ("holds up nicely outdoors", "makes yard work easier", "is sturdy and dependable",
        "is a solid pick for the yard"),
    5: ("is a wonderful addition to my garden", "outperforms everything I have tried", "is flawless from top to bottom",
        "delights me every single time"),
}  # fmt: skip

SHIFTED_FILLERS = (
    "I ordered it in spring.", "The box was dented but it was fine.", "My neighbour has one too.",
    "I use it on weekends.", "",
)  # fmt: skip

_PHRASE_TO_SENTIMENT = {p: s for table in (SENTIMENT_PHRASES, SHIFTED_SENTIMENT_PHRASES)
                        for s, ps in table.items() for p in ps}


def text_sentiment(text: str) -> int:
    """The text sentiment (1..5) a synthetic review's wording reveals (what any reader can infer).

    Raises:
        ValueError: the text holds no known sentiment phrase (not a synthetic review).
    """
    for phrase, s in _PHRASE_TO_SENTIMENT.items():
        if phrase in text:
            return s
    raise ValueError(f"no synthetic sentiment phrase in {text!r}")


# LaMP_2: three tag groups; a user ranks the groups and always tags a movie with the tag of the
# better-ranked group among the two the description mixes.
TAG_GROUPS: dict[str, tuple[str, ...]] = {
    "light": ("comedy", "romance", "fantasy", "classic", "based on a book"),
    "serious": ("dystopia", "violence", "psychology", "thought-provoking", "social commentary"),
    "thrill": ("sci-fi", "action", "twist ending", "true story", "dark comedy"),
}
TAG_PHRASES: dict[str, tuple[str, ...]] = {
    "comedy": ("full of silly jokes", "with a clumsy hero and endless gags"),
    "romance": ("about two lovers who meet by chance", "with a tender love story"),
    "fantasy": ("with dragons and a magic kingdom", "where a young wizard learns spells"),
    "classic": ("from the golden age of cinema", "that shaped film history"),
    "based on a book": ("adapted from a famous novel", "based on a bestselling book"),
    "dystopia": ("in a grim future ruled by a tyrant", "set in a collapsed society"),
    "violence": ("with brutal fights and bloodshed", "full of gunfire and revenge"),
    "psychology": ("about a troubled mind and its fears", "exploring memory and guilt"),
    "thought-provoking": ("that raises deep moral questions", "that makes you rethink your life"),
    "social commentary": ("about poverty and injustice in a city", "that criticises modern media"),
    "sci-fi": ("set aboard a distant space station", "with robots and time machines"),
    "action": ("packed with car chases and explosions", "with a daring heist on a train"),
    "twist ending": ("with a shocking final twist", "where nothing is what it seems"),
    "true story": ("based on real events", "retelling the life of a real pilot"),
    "dark comedy": ("with morbid jokes about death", "where a funeral goes hilariously wrong"),
}
_TAG_GROUP = {t: g for g, ts in TAG_GROUPS.items() for t in ts}
_PHRASE_TO_TAG = {p: t for t, ps in TAG_PHRASES.items() for p in ps}
assert sorted(_TAG_GROUP) == sorted(MOVIE_TAGS)


def movie_candidates(description: str) -> tuple[str, str]:
    """The two candidate tags a synthetic movie description mixes, in order of appearance."""
    found = sorted((description.find(p), t) for p, t in _PHRASE_TO_TAG.items() if p in description)
    if len(found) != 2:
        raise ValueError(f"not a synthetic movie description: {description!r}")
    return found[0][1], found[1][1]


# LaMP_5: abstracts about a topic and a method; each user titles papers in one personal style.
TOPICS = (
    "machine translation", "speech recognition", "question answering", "sentiment analysis", "dependency parsing",
    "text summarization", "named entity recognition", "dialogue systems", "information retrieval",
    "image captioning", "code generation", "spelling correction",
)  # fmt: skip
METHODS = (
    "graph networks", "contrastive learning", "data augmentation", "curriculum learning", "sparse attention",
    "active learning", "knowledge distillation", "reinforcement learning", "prompt tuning", "label smoothing",
)  # fmt: skip
# domain shift (titles): papers of another field with other methods; the title styles stay the same
SHIFTED_TOPICS = (
    "protein folding", "climate modelling", "drug discovery", "traffic forecasting", "crop yield prediction",
    "galaxy classification", "earthquake detection", "materials design",
)  # fmt: skip
SHIFTED_METHODS = (
    "bayesian optimisation", "gradient boosting", "diffusion models", "federated training", "kernel methods",
    "evolutionary search",
)  # fmt: skip
TITLE_STYLES = (
    "{Method} for {topic}",
    "Improving {topic} with {method}",
    "{Topic}: a {method} approach",
    "On the use of {method} in {topic}",
    "Does {method} help {topic}?",
)
ABSTRACT_TEMPLATES = (
    "We study {topic}. We propose a model based on {method} and show gains on three benchmarks.",
    "This paper applies {method} to {topic}. Experiments show consistent improvements over strong baselines.",
    "{Topic} remains hard. We introduce {method} into a standard pipeline and report better accuracy.",
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _title(style: str, topic: str, method: str) -> str:
    return style.format(topic=topic, method=method, Topic=_cap(topic), Method=_cap(method))


def paper_topic_method(abstract: str) -> tuple[str, str]:
    """(topic, method) a synthetic abstract is about."""
    low = abstract.lower()
    topic = next((t for t in TOPICS + SHIFTED_TOPICS if t in low), None)
    method = next((m for m in METHODS + SHIFTED_METHODS if m in low), None)
    if topic is None or method is None:
        raise ValueError(f"not a synthetic abstract: {abstract!r}")
    return topic, method


def title_style(title: str, topic: str, method: str) -> int:
    """Index of the style that produced `title` (-1 if none)."""
    for k, style in enumerate(TITLE_STYLES):
        if _title(style, topic, method) == title:
            return k
    return -1


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
    abstract = rng.choice(ABSTRACT_TEMPLATES).format(topic=topic, method=method, Topic=_cap(topic))
    k = style
    if rng.random() < noise:
        k = rng.choice([i for i in range(len(TITLE_STYLES)) if i != style])
    return {"abstract": abstract}, _title(TITLE_STYLES[k], topic, method)


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


# --- report: what a history-blind model can reach, and what history buys ----------------------------


def _mae_rmse_of(preds: list[float], golds: list[float]) -> dict[str, float]:
    n = len(golds)
    return {
        "mae": sum(abs(p - g) for p, g in zip(preds, golds)) / n,
        "rmse": math.sqrt(sum((p - g) ** 2 for p, g in zip(preds, golds)) / n),
    }


def _low_median(xs: list[float]) -> float:
    # any value between the two middle ones minimises absolute error; the lower one keeps it an integer score
    return statistics.median_low(xs)


def _ratings_report(dev: list[Example], cfg: SynthConfig) -> dict:
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


def _expected_blind_ratings(cfg: SynthConfig) -> tuple[float, float]:
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


def _tags_report(dev: list[Example], cfg: SynthConfig) -> dict:
    task = get_task("LaMP_2")
    golds = [ex.output or "" for ex in dev]
    cands = [movie_candidates(task.query_text(ex.input)) for ex in dev]
    # history-blind: for each unordered pair of tag groups, always pick the group the pooled users prefer
    wins: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (a, b), g in zip(cands, golds):
        key = tuple(sorted((_TAG_GROUP[a], _TAG_GROUP[b])))
        wins[key][_TAG_GROUP[g]] += 1  # type: ignore[index]
    best_group = {k: max(sorted(c), key=lambda grp: c[grp]) for k, c in wins.items()}
    blind = []
    for a, b in cands:
        key = tuple(sorted((_TAG_GROUP[a], _TAG_GROUP[b])))
        blind.append(a if _TAG_GROUP[a] == best_group[key] else b)
    # history oracle: which of the two groups did this user pick more often in their profile?
    hist = []
    for ex, (a, b) in zip(dev, cands):
        ga, gb = _TAG_GROUP[a], _TAG_GROUP[b]
        score = 0
        for it in ex.profile:
            ca, cb = movie_candidates(it["description"])
            groups = {_TAG_GROUP[ca], _TAG_GROUP[cb]}
            if groups == {ga, gb}:
                score += 1 if _TAG_GROUP[it["tag"]] == ga else -1
            else:  # a group picked over any other still says it ranks high
                if _TAG_GROUP[it["tag"]] == ga:
                    score += 0.5
                elif _TAG_GROUP[it["tag"]] == gb:
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


def _titles_report(dev: list[Example], cfg: SynthConfig) -> dict:
    task = get_task("LaMP_5")
    golds = [ex.output or "" for ex in dev]
    tms = [paper_topic_method(task.query_text(ex.input)) for ex in dev]
    per_style = [rouge([_title(st, t, m) for t, m in tms], golds) for st in TITLE_STYLES]
    blind = {k: max(r[k] for r in per_style) for k in ("rouge1", "rougeL")}
    best_l = lambda i: per_style[i]["rougeL"]  # noqa: E731
    hist = []
    for ex, (t, m) in zip(dev, tms):
        votes = Counter(title_style(it["title"], *paper_topic_method(it["abstract"])) for it in ex.profile)
        votes.pop(-1, None)
        k = votes.most_common(1)[0][0] if votes else 0
        hist.append(_title(TITLE_STYLES[k], t, m))
    return {
        # approximate: the best single style for everyone; a blended string could score a little higher
        "history_blind_ceiling": blind,
        "history_blind_rule": {"best_single_style": TITLE_STYLES[max(range(len(TITLE_STYLES)), key=best_l)]},
        "history_oracle": rouge(hist, golds),
    }


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
        scores = _ratings_report(splits["dev"], cfg)
        trait_summary = {str(b): n for b, n in sorted(Counter(traits.values()).items())}  # type: ignore[arg-type]
    elif cfg.kind == "tags":
        scores = _tags_report(splits["dev"], cfg)
        trait_summary = {">".join(r): n for r, n in sorted(Counter(traits.values()).items())}  # type: ignore[arg-type]
    else:
        scores = _titles_report(splits["dev"], cfg)
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
