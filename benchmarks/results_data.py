"""The results files behind every table and figure: where they are, how they are read, and how a row is named.

`benchmarks.report` (tables) and `benchmarks.figures` (figures) both read results through here, so neither
imports the other's internals.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# --- reading results --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def load_file(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load(results: Path, name: str) -> dict:
    """benchmarks/results/<name>.json as a dict (cached per path)."""
    return load_file(Path(results) / f"{name}.json")


def _argmax_bare(row: str) -> str:
    return row[: -len(" [argmax]")] if row.endswith(" [argmax]") else row


def summaries(data: dict) -> dict[str, dict]:
    """slice -> {"cells", "comparisons", "n", ...} for every results layout the benchmarks write; rows named
    "pplug [argmax]" (every row names its decoding) are read as "pplug", the name results files used before."""
    out = _summaries(data)
    for s in out.values():
        if "cells" in s:
            s["cells"] = {_argmax_bare(k): v for k, v in s["cells"].items()}
        if "comparisons" in s:
            s["comparisons"] = {_argmax_bare(k): {_argmax_bare(o): c for o, c in v.items()}
                                for k, v in s["comparisons"].items()}
        if "pearson_r" in s:
            s["pearson_r"] = {_argmax_bare(k): v for k, v in s["pearson_r"].items()}
    return out


def _summaries(data: dict) -> dict[str, dict]:
    """slice -> {"cells", "comparisons", "n", ...} for every results layout the benchmarks write.

    bench_real_lamp --seeds: sets.<set>.slices; one run of bench_real_lamp: sets.<set>.metrics (one value per
    cell, no intervals); bench_ablation --seeds: summary (its slice is "dev", also for --cold-start);
    bench_ablation without seeds: metrics; bench_history_mix: dev (its --split, named as a slice).
    """
    if "sets" in data:
        (one,) = data["sets"].values()
        if "slices" in one:
            out = dict(one["slices"])
            if "synth_report" in one:
                for s in out.values():
                    s.setdefault("references", one["synth_report"])
            return out
        return {"dev": _single(one["metrics"], one.get("n"))}
    if "summary" in data:
        return {"dev": data["summary"]}
    if "metrics" in data:
        return {"dev": _single(data["metrics"], data.get("settings", {}).get("max_dev"))}
    # bench_history_mix keeps its scored split under "dev"; `--split time_shift` is the "time-shift" slice
    return {(data.get("settings", {}).get("split") or "dev").replace("_", "-"): data["dev"]}


def _single(metrics: dict, n: int | None) -> dict:
    cells = {row: {m: {"mean": v, "sd": None, "values": {"seed0": v}} for m, v in ms.items()}
             for row, ms in metrics.items()}
    return {"cells": cells, "comparisons": {}, "n": n}


def row_key(key: str, decoding: str | None) -> str:
    """"pplug" + "median" -> "pplug [median]"; floors and the undecoded row keep their name."""
    return key if decoding is None or key.startswith("floor:") else f"{key} [{decoding}]"



# the results files the tables and figures read (benchmarks/results/<name>.json)
MIX = "real_lamp_music_history_mix_cpu"
MUSIC = "real_lamp_music_rating_term_all_cpu"
GPU = "real_lamp_music_gpu"
ACL, ENRON = "real_lamp_acl_seeds_cpu", "real_lamp_enron_clip_cpu"
SYNTH, SYNTH_PUBLISHED = "synth_shift_all_methods_cpu", "synth_shift_published_all_methods_cpu"


# --- how the tables and figures name a column and a row ------------------------------------------------------


@dataclass(frozen=True)
class Col:
    """A column: `metric` of decoding `dec` on `slice` of results file `file` (a row's file wins)."""

    header: str
    metric: str
    dec: str | None = None
    slice: str = "dev"
    file: str | None = None
    seeds: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Row:
    """A row: results row `key` ("pplug", "floor: always-5", "ceiling") labelled `label`."""

    key: str
    label: str
    file: str | None = None
    seeds: tuple[str, ...] | None = None
    ref: str | None = None  # interval tables: the row compared (default: the table's ref)


MAE = Col("MAE (median) ↓", "mae", "median")
RMSE = Col("RMSE (expected) ↓", "rmse", "expected")
MAE_ARGMAX, MAE_EXPECTED = Col("MAE (argmax)", "mae"), Col("MAE (expected)", "mae", "expected")
COLD_MAE = Col("cold-start MAE (n={n})", "mae", "median", "cold-start")
COLD_RMSE = Col("cold-start RMSE", "rmse", "expected", "cold-start")
PEARSON = Col("Pearson r", "pearson_r")
R1, RL = Col("ROUGE-1 ↑", "rouge1"), Col("ROUGE-L ↑", "rougeL")
ACCURACY = Col("accuracy ↑", "accuracy")
TIME_SHIFT_R1 = Col("ROUGE-1 ↑", "rouge1", slice="time-shift")
TIME_SHIFT_ACCURACY = Col("accuracy ↑", "accuracy", slice="time-shift")

ALWAYS_5 = Row("floor: always-5", "floor: always 5")
USER_MEAN = Row("floor: user mean rating", "floor: the user's mean rating")
USER_MAJORITY = Row("floor: user majority rating", "floor: the user's most common rating")
RATING_FLOORS = (ALWAYS_5, USER_MEAN)
FROZEN_LLM = Row("none", "none (frozen LLM)")
BASELINES = (FROZEN_LLM, Row("prompt-tuned", "prompt-tuned"), Row("retrieval", "retrieval"))
METHODS = (*BASELINES, Row("pplug", "**pplug**"))
ENCODER_KNN = "encoder kNN, no LLM"  # bench_history_mix's NO_LLM_KNN
PRIOR_BASELINES = (
    Row("prompt-tuned+mix", "prompt-tuned + shares"), Row("prompt-tuned+encoder-mix", "prompt-tuned + encoder prior"),
    Row("retrieval+mix", "retrieval + shares"), Row("retrieval+encoder-mix", "retrieval + encoder prior"),
    Row(ENCODER_KNN, "encoder kNN, no LLM"))
"""The label sets' baselines (bench_history_mix --priors): each trained baseline with the user's label shares mixed
in and with the encoder prior (the labels of the user's past items weighted by the frozen encoder's likeness to the
input) mixed in, each k and temperature chosen on held-out training questions, and that prior alone over the
training split's label shares (no LLM)."""


def generation_floors(first_words: int, output: str) -> tuple[Row, Row]:
    """A generation set's two floors: the input's first N words (N fitted on train) and the output of the user's
    most similar past item."""
    return (Row(f"floor: first {first_words} words", f"floor: first {first_words} words"),
            Row("floor: user's nearest past title",  # LaMP's output field
                f"floor: the {output} of the user's most similar past item"))


# --- the README summary: one row per real set ----------------------------------------------------------------

MUSIC_RECIPE = "real_lamp_music_recipe_cpu"
"""music_ratings' recipe at the summary's budget (`--preset cpu`), beside every baseline retrained with it: each row's
history prior, k and LLM temperature chosen on held-out training questions (bench_history_mix)."""
ACL_BUDGET, ACL_FLOORS = "real_lamp_acl_titles_cpu", generation_floors(16, "title")
ACL_BEAM = "real_lamp_acl_titles_beam_cpu"  # the acl summary's checkpoints decoded greedy and with beam search
ENRON_BUDGET, ENRON_FLOORS = "real_lamp_enron_subjects_cpu", generation_floors(15, "email")
HEADLINES_TIME_SHIFT = "real_lamp_news_headlines_time_shift_cpu"
HEADLINES_TIME_SHIFT_FLOORS = generation_floors(25, "headline")
NEWS_CATEGORIES_RECIPE = "real_lamp_news_categories_time_shift_8_latest_cpu"
"""The recipe and every baseline retrained at the summary's budget (`--preset cpu`) and scored on each author's 8
latest questions, held out of every method's training."""


@dataclass(frozen=True)
class SetResult:
    """One real set's line in the README summary: PPlug's row and its baselines and floors in one results file."""

    name: str
    what: str
    file: str | None  # None: the set has no result at the CPU budget yet
    col: Col | None = None
    ref: str = "pplug"
    baselines: tuple[Row, ...] = ()
    floors: tuple[Row, ...] = ()


SETS_SUMMARY = (
    SetResult("music_ratings", "LaMP_3", MUSIC_RECIPE, MAE, "pplug+mix", PRIOR_BASELINES,
              (*RATING_FLOORS, USER_MAJORITY)),
    # every trainable baseline retrained at the summary's budget in the recipe's placement (`--preset cpu`)
    # acl_titles decodes with beam search (its recipe): every method in the same decoding, which is each one's best
    SetResult("acl_titles", "LaMP_5; beam search", ACL_BEAM, R1, "pplug [beam]",
              tuple(Row(f"{r.key} [beam]", r.label) for r in BASELINES), ACL_FLOORS),
    SetResult("enron_subjects", "LaMP_6", ENRON_BUDGET, R1, "pplug", BASELINES, ENRON_FLOORS),
    # the news sets on their time-shift slice: 3x (news_headlines), 4x (news_categories) their one-per-user dev splits
    # news_headlines' recipe is PPlug on top of retrieval (pplug+retrieval, the same 256-token prompt as retrieval)
    SetResult("news_headlines", "LaMP_4; PPlug + retrieval", HEADLINES_TIME_SHIFT, TIME_SHIFT_R1, "pplug+retrieval",
              BASELINES, HEADLINES_TIME_SHIFT_FLOORS),
    SetResult("news_categories", "LaMP_2N", NEWS_CATEGORIES_RECIPE, TIME_SHIFT_ACCURACY, "pplug+attention-mix",
              PRIOR_BASELINES,
              (Row("floor: always-politics", "always politics"), Row("floor: user majority label", "user majority"))),
)
"""The README's summary (benchmarks.report's table, benchmarks.figures' forest). music_ratings' `none` (MAE 1.511)
is in another file and far behind, so its best baseline is read among the rows that decode with the user's rating
shares too; so is news_categories' (0.066 accuracy on dev)."""
