"""The words of the synthetic LaMP sets (`pplug.synth`), the same for every user, and the parsers that read
back what a text was made from (its sentiment, its candidate tags, its topic and method, its title style).

Each domain has a shifted twin (other products, other paper topics and methods) for `--domain-shift`.
"""

from __future__ import annotations

from pplug.core.tasks import MOVIE_TAGS

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
TAG_GROUP_OF = {t: g for g, ts in TAG_GROUPS.items() for t in ts}
"""Tag -> its group."""
_PHRASE_TO_TAG = {p: t for t, ps in TAG_PHRASES.items() for p in ps}
assert sorted(TAG_GROUP_OF) == sorted(MOVIE_TAGS)


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


def capitalize(s: str) -> str:
    """`s` with its first letter upper-cased (the rest left as is)."""
    return s[:1].upper() + s[1:]


def format_title(style: str, topic: str, method: str) -> str:
    """A paper title in one of the `TITLE_STYLES`."""
    return style.format(topic=topic, method=method, Topic=capitalize(topic), Method=capitalize(method))


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
        if format_title(style, topic, method) == title:
            return k
    return -1


__all__ = [
    "ABSTRACT_TEMPLATES",
    "FILLERS",
    "METHODS",
    "PRODUCTS",
    "SENTIMENT_PHRASES",
    "SHIFTED_FILLERS",
    "SHIFTED_METHODS",
    "SHIFTED_PRODUCTS",
    "SHIFTED_SENTIMENT_PHRASES",
    "SHIFTED_TOPICS",
    "TAG_GROUPS",
    "TAG_GROUP_OF",
    "TAG_PHRASES",
    "TITLE_STYLES",
    "TOPICS",
    "capitalize",
    "format_title",
    "movie_candidates",
    "paper_topic_method",
    "text_sentiment",
    "title_style",
]
