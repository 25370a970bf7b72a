"""The LaMP tasks, declared once: what a profile item carries, what text of it the history encoder
embeds, where the content of an input starts, which labels and metrics apply.

Every other module asks a `TaskSpec` instead of branching on task names, so adding a task means
adding one spec to `TASKS`. The history texts follow PPlug's choices (title+abstract for papers,
description for movies, text+title for news), except LaMP_3, whose items embed their score too
(`'{score} is the score for "{text}"'`): a rating history is only personal through its scores.
Query markers mirror the official LaMP / PPlug extraction: the content is the text after the first
marker found in the input (LaMP_1: the paper title between `title "` and `",`).

    >>> task = get_task("lamp-3")
    >>> task.query_text("What is the score ... review: Great album.")
    'Great album.'
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class OutputKind(str, Enum):
    """How a task's output is produced and scored."""

    CLASSIFICATION = "classification"
    RATING = "rating"
    GENERATION = "generation"


DECODINGS_BY_KIND: dict[OutputKind, tuple[str, ...]] = {
    OutputKind.CLASSIFICATION: ("argmax",),
    OutputKind.RATING: ("argmax", "expected", "median"),
    OutputKind.GENERATION: ("argmax", "greedy", "beam", "mbr", "preference", "reward-mbr"),
}
"""Decodings each kind of output supports, the default first. "argmax": the most likely label (greedy text
for generation, beam search with num_beams > 1); ratings also "expected" (expected value over 1..5, the
best guess for RMSE) and "median" (the median over 1..5, the best guess for MAE); generation also the
candidate decodings of `pplug.decode.choose` ("greedy", "beam", "mbr": minimum Bayes risk over sampled
candidates, "preference": weighted towards the user's own past outputs, "reward-mbr": weighted by the user's
retrieved facet preference models). `pplug.decode.inference.decode` runs them."""

_HISTORY_SIZE_LOG = math.log(513)
"""`history_stats` scales log(1 + history size) by this: 512 items (PPlug's history limit) read as 1."""

_CUE_BY_KIND = {OutputKind.CLASSIFICATION: "Answer:", OutputKind.RATING: "Score:", OutputKind.GENERATION: "Answer:"}


@dataclass(frozen=True)
class TaskSpec:
    """One LaMP task, declaratively."""

    name: str
    """Canonical name: "LaMP_1", "LaMP_2" (movie tags), "LaMP_2N" (older news categories), "LaMP_3".."LaMP_7"."""
    description: str
    """One line for humans."""
    profile_fields: tuple[str, ...]
    """Fields every profile item must carry (besides "id")."""
    history_template: str
    """`str.format` over an item's fields -> the text the history encoder embeds."""
    query_markers: tuple[str, ...]
    """The input's content starts after the earliest of these markers; no marker -> the whole input."""
    output_kind: OutputKind
    """Classification (label set), rating (1..5, scored as numbers) or free generation."""
    labels: tuple[str, ...]
    """Classification label set, in the official order; ("1",..,"5") for LaMP_3; () for generation."""
    metrics: tuple[str, ...]
    """Metric names `pplug.lamp.metrics.score` returns for this task."""
    main_metric: str
    """The metric used to pick checkpoints and compare methods."""
    higher_is_better: bool
    """False for the error metrics of LaMP_3 (MAE, RMSE)."""
    max_new_tokens: int
    """Default generation budget in tokens: about the 99th percentile of the outputs' length plus room for the
    EOS, so greedy decoding stops on its own and cannot run into long repetitions ("Re: Re: Re: ...")."""
    retrieval_template: str
    """How one retrieved history item is written into a prompt, as in LaMP's retrieval prompts."""
    input_field: str = ""
    """Profile item field holding the content of the question the item answers (the review a score was given
    for); "" when items carry no such pair (LaMP_1), so interactions cannot become training examples."""
    output_field: str = ""
    """Profile item field holding what the user wrote or chose (score, tag, title); "" for LaMP_1."""
    answer_cue: str = ""
    """Cue appended after the input for causal LMs, so the target is the continuation ("" -> the kind's)."""
    outputs_name: str = ""
    """The task name official outputs files of this task carry when it differs from `name` (the older news
    files of LaMP_2N say "LaMP_2")."""
    input_template: str = "{content}"
    """The official instruction with the content slot; used to build inputs (synthetic data, new users)."""
    query_end: str = ""
    """If set, the content stops at the first occurrence of this string after the marker (LaMP_1)."""
    aliases: tuple[str, ...] = field(default=())
    """Extra names `get_task` accepts (beyond the spelling variants of `name`)."""

    def __post_init__(self) -> None:
        if not self.answer_cue:  # frozen dataclass: set the kind's default through object.__setattr__
            object.__setattr__(self, "answer_cue", _CUE_BY_KIND[self.output_kind])
        if self.main_metric not in self.metrics:
            raise ValueError(f"task {self.name}: main_metric {self.main_metric!r} not in metrics {self.metrics}")
        for tmpl in (self.history_template, self.retrieval_template):
            missing = set(_template_fields(tmpl)) - set(self.profile_fields) - {"id"}
            if missing:
                raise ValueError(f"task {self.name}: template {tmpl!r} uses fields {sorted(missing)} not in profile_fields")

    def history_text(self, item: dict) -> str:
        """The text the history encoder embeds for one profile item.

        Raises:
            ValueError: the item lacks a field the template needs (names the item id and field).
        """
        return _format_item(self.history_template, item, self.name)

    def retrieval_text(self, item: dict) -> str:
        """One retrieved profile item written the LaMP way, e.g. `5 is the score for "..."`."""
        return _format_item(self.retrieval_template, item, self.name)

    def query_text(self, input: str) -> str:
        """The content part of an input (what the input encoder reads): text after the earliest marker.

        Markers are searched case-sensitively as they appear in official inputs; the earliest match
        wins, so a marker word repeated inside the content itself (a review quoting "review:") is
        kept as content. Without any marker the whole (stripped) input is the content.
        """
        best = -1
        best_end = -1
        for marker in self.query_markers:
            pos = input.find(marker)
            # earliest start wins; on a tie the longer marker (it ends later) is the more specific one
            if pos != -1 and (best == -1 or pos < best or (pos == best and pos + len(marker) > best_end)):
                best, best_end = pos, pos + len(marker)
        if best == -1:
            return input.strip()
        content = input[best_end:]
        if self.query_end:
            stop = content.find(self.query_end)
            if stop != -1:
                content = content[:stop]
        return content.strip()

    def make_input(self, content: str) -> str:
        """The official-style input for `content` (inverse of `query_text` for marker tasks)."""
        return self.input_template.format(content=content)

    @property
    def stats_dim(self) -> int:
        """Length of `history_stats`: label histogram + history size (ratings, labels), or output-length
        mean and spread + history size (generation), or history size alone (no output field, LaMP_1)."""
        if not self.output_field:
            return 1
        return len(self.labels) + 1 if self.labels else 3

    def history_stats(self, items: Sequence[dict]) -> list[float]:
        """What a user's history says about their outputs, as `stats_dim` numbers in [0, 1]-ish ranges.

        Why: the history encoder embeds each item's text, where the user's own output (a score, a title) is
        a few tokens among a review's or an abstract's hundreds, so a sentence embedding carries it weakly.
        These numbers state it: the share of each label / score in the history (the user's rating prior), or
        the mean and spread of log(1 + words) of the user's outputs (how long their titles and subjects run),
        and log(1 + number of items) / log(513) (how much there is to go on; 0 for a cold-start user). An
        item whose output is missing or not a known label is counted in the size only.
        """
        size = math.log1p(len(items)) / _HISTORY_SIZE_LOG
        if not self.output_field:
            return [size]
        if self.labels:
            counts = [0.0] * len(self.labels)
            for c in self.history_label_indices(items):
                if c >= 0:
                    counts[c] += 1
            total = sum(counts)
            return [c / total if total else 0.0 for c in counts] + [size]
        values = [str(it.get(self.output_field, "")).strip() for it in items]
        lengths = [math.log1p(len(v.split())) / math.log(65) for v in values if v]
        if not lengths:
            return [0.0, 0.0, size]
        mean = sum(lengths) / len(lengths)
        spread = math.sqrt(sum((x - mean) ** 2 for x in lengths) / len(lengths))
        return [mean, spread, size]

    def history_label_indices(self, items: Sequence[dict]) -> list[int]:
        """The index in `labels` of each item's output (what `label_token` reads), -1 where the item holds no known
        label; ratings read "5", "5.0" and 5 as the same score. All -1 for tasks without labels in the history."""
        if not (self.labels and self.output_field):
            return [-1] * len(items)
        index = {label: i for i, label in enumerate(self.labels)}
        out = []
        for it in items:
            v = str(it.get(self.output_field, "")).strip()
            if self.is_rating:
                try:
                    v = str(int(float(v)))
                except ValueError:
                    v = ""
            out.append(index.get(v, -1))
        return out

    def history_label_shares(self, stats: Any) -> tuple[Any, Any]:
        """`history_stats` of a label task read back from a (B, stats_dim) tensor: the (B, C) label shares and
        the (B,) number of history items they cover (0 where no item holds a label)."""
        shares = stats[..., : len(self.labels)]
        n = (stats[..., -1] * _HISTORY_SIZE_LOG).expm1().round() * (shares.sum(dim=-1) > 0)
        return shares, n

    def accepts_outputs_of(self, name: str) -> bool:
        """Whether an outputs file whose "task" field says `name` belongs to this task."""
        return name in (self.name, self.outputs_name)

    @property
    def decodings(self) -> tuple[str, ...]:
        """The decodings this task supports, the default first (see `DECODINGS_BY_KIND`)."""
        return DECODINGS_BY_KIND[self.output_kind]

    @property
    def is_classification(self) -> bool:
        return self.output_kind is OutputKind.CLASSIFICATION

    @property
    def is_rating(self) -> bool:
        return self.output_kind is OutputKind.RATING

    @property
    def is_generation(self) -> bool:
        return self.output_kind is OutputKind.GENERATION


def _template_fields(template: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"\{(\w+)[^{}]*\}", template)]


def _format_item(template: str, item: dict, task_name: str) -> str:
    try:
        return template.format(**item)
    except KeyError as e:
        raise ValueError(
            f"{task_name}: profile item {item.get('id', '?')!s}: field {e.args[0]!r}: missing (needed by {template!r})"
        ) from None


_CLASSIFY = ("accuracy", "f1")
_RATE = ("mae", "rmse")
_ROUGE = ("rouge1", "rougeL")

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy", "classic",
    "psychology", "fantasy", "romance", "thought-provoking", "social commentary", "violence", "true story",
)  # fmt: skip
# Order and spelling follow the official LaMP evaluation script (eval/evaluation.py) for the news variant;
# note "education", not "education & schools": the script maps any other string to -1.
NEWS_CATEGORIES = (
    "food & drink", "sports", "education", "parents", "religion", "travel", "business", "crime",
    "science & technology", "culture & arts", "entertainment", "politics", "women", "style & beauty",
    "healthy living",
)  # fmt: skip

_SPECS = (
    TaskSpec(
        name="LaMP_1",
        description="Personalized citation identification: which of two papers would the author cite",
        profile_fields=("title", "abstract"),
        history_template="{title} {abstract}",
        query_markers=('title "',),
        query_end='",',
        output_kind=OutputKind.CLASSIFICATION,
        labels=("[1]", "[2]"),
        metrics=_CLASSIFY,
        main_metric="accuracy",
        higher_is_better=True,
        max_new_tokens=8,
        answer_cue="Answer:",
        retrieval_template='"{title}"',
        input_template='For an author who has written the paper with the title "{content}", which reference is '
        "related? Just answer with [1] or [2] without explanation.",
        aliases=("citation",),
    ),
    TaskSpec(
        name="LaMP_2",
        description="Personalized movie tagging: the tag this user gives a movie description",
        profile_fields=("description", "tag"),
        history_template="{description}",
        query_markers=("description:",),
        output_kind=OutputKind.CLASSIFICATION,
        labels=MOVIE_TAGS,
        metrics=_CLASSIFY,
        main_metric="accuracy",
        higher_is_better=True,
        max_new_tokens=16,
        input_field="description",
        output_field="tag",
        answer_cue="Tag:",
        retrieval_template='the tag for the movie: "{description}" is "{tag}"',
        input_template="Which tag does this movie relate to among the following tags? Just answer with the tag "
        "name without further explanation. tags: [" + ", ".join(MOVIE_TAGS) + "] description: {content}",
        aliases=("LaMP_2M", "movies", "movie_tags", "LaMP_2_movie"),
    ),
    TaskSpec(
        name="LaMP_2N",
        description="Personalized news categorization (the original LaMP-2): the category of this user's article",
        profile_fields=("text", "title", "category"),
        history_template="{title} {text}",
        query_markers=("article:",),
        output_kind=OutputKind.CLASSIFICATION,
        labels=NEWS_CATEGORIES,
        metrics=_CLASSIFY,
        main_metric="accuracy",
        higher_is_better=True,
        max_new_tokens=16,
        input_field="text",
        output_field="category",
        answer_cue="Category:",
        outputs_name="LaMP_2",
        retrieval_template='the category for the article: "{text}" is "{category}"',
        input_template="Which category does this article relate to among the following categories? Just answer "
        "with the category name without further explanation. categories: [women, religion, politics, style & "
        "beauty, entertainment, culture & arts, sports, science & technology, travel, business, crime, education, "
        "healthy living, parents, food & drink] article: {content}",
        aliases=("news_categories", "LaMP_2_old", "LaMP_2_news"),
    ),
    TaskSpec(
        name="LaMP_3",
        description="Personalized product rating: the 1-5 score this user gives a review",
        profile_fields=("text", "score"),
        history_template='{score} is the score for "{text}"',
        query_markers=("review:",),
        output_kind=OutputKind.RATING,
        labels=("1", "2", "3", "4", "5"),
        metrics=_RATE,
        main_metric="mae",
        higher_is_better=False,
        max_new_tokens=10,
        input_field="text",
        output_field="score",
        answer_cue="Score:",
        retrieval_template='{score} is the score for "{text}"',
        input_template="What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, "
        "4, or 5 without further explanation. review: {content}",
        aliases=("ratings", "product_rating"),
    ),
    TaskSpec(
        name="LaMP_4",
        description="Personalized news headline generation",
        profile_fields=("text", "title"),
        history_template="{text} {title}",
        query_markers=("article:",),
        output_kind=OutputKind.GENERATION,
        labels=(),
        metrics=_ROUGE,
        main_metric="rouge1",
        higher_is_better=True,
        max_new_tokens=32,
        input_field="text",
        output_field="title",
        answer_cue="Headline:",
        retrieval_template='"{title}" is the title for "{text}"',
        input_template="Generate a headline for the following article: {content}",
        aliases=("headlines", "news_headline"),
    ),
    TaskSpec(
        name="LaMP_5",
        description="Personalized scholarly title generation",
        profile_fields=("title", "abstract"),
        history_template="{title} {abstract}",
        query_markers=("abstract of a paper:", "paper:", "abstract:"),
        output_kind=OutputKind.GENERATION,
        labels=(),
        metrics=_ROUGE,
        main_metric="rouge1",
        higher_is_better=True,
        max_new_tokens=48,
        input_field="abstract",
        output_field="title",
        answer_cue="Title:",
        retrieval_template='"{title}" is a title for "{abstract}"',
        input_template="Generate a title for the following abstract of a paper: {content}",
        aliases=("titles", "scholarly_title"),
    ),
    TaskSpec(
        name="LaMP_6",
        description="Personalized email subject generation",
        profile_fields=("text", "title"),
        history_template="{text} {title}",
        query_markers=("email:",),
        output_kind=OutputKind.GENERATION,
        labels=(),
        metrics=_ROUGE,
        main_metric="rouge1",
        higher_is_better=True,
        max_new_tokens=24,
        input_field="text",
        output_field="title",
        answer_cue="Subject:",
        retrieval_template='"{title}" is the title for "{text}"',
        input_template="Generate a subject for the following email: {content}",
        aliases=("email_subject", "subjects"),
    ),
    TaskSpec(
        name="LaMP_7",
        description="Personalized tweet paraphrasing",
        profile_fields=("text",),
        history_template="{text}",
        query_markers=("before or after it:", "tweet:"),
        output_kind=OutputKind.GENERATION,
        labels=(),
        metrics=_ROUGE,
        main_metric="rouge1",
        higher_is_better=True,
        max_new_tokens=80,
        input_field="text",  # no paraphrase source is stored: the tweet is its own input
        output_field="text",
        answer_cue="Paraphrase:",
        retrieval_template='"{text}"',
        input_template="Paraphrase the following tweet without any explanation before or after it: {content}",
        aliases=("tweets", "tweet_paraphrase"),
    ),
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}


def _key(name: str) -> str:
    # "LaMP-3", "lamp_3", "lamp3", "LaMP 3" all reduce to "lamp3"
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


_ALIASES: dict[str, str] = {}
for _spec in _SPECS:
    for _alias in (_spec.name, *_spec.aliases):
        _ALIASES[_key(_alias)] = _spec.name


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The `TaskSpec` for a task name; accepts "LaMP_3", "LaMP-3", "lamp3", "lamp_3" and listed aliases.

    Raises:
        ValueError: unknown task (the message lists the known ones).
    """
    if isinstance(name, TaskSpec):
        return name
    canonical = _ALIASES.get(_key(str(name)))
    if canonical is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[canonical]
