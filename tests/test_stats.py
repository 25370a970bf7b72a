"""pplug.lamp.stats: per-question scores that give the official metrics back, paired bootstrap, mean ± sd, summaries."""

from __future__ import annotations

import math
import random

import pytest

from pplug.lamp.metrics import score
from pplug.lamp.stats import (
    aggregate,
    comparison_lines,
    example_scores,
    interval_verdict,
    leads,
    mean_sd,
    paired_bootstrap,
    row_decoding,
    summarize,
    summary_table,
)


def _ratings(n: int = 60, seed: int = 0):
    rng = random.Random(seed)
    golds = {f"q{i}": str(rng.randint(1, 5)) for i in range(n)}
    preds = {i: rng.choice(["1", "2", "3.5", "4", "5", "five", " 3 "]) for i in golds}  # "five": worst-case rule
    return golds, preds


def test_per_question_scores_give_the_metric_ratings():
    golds, preds = _ratings()
    per = example_scores("LaMP_3", preds, golds)
    official = score("LaMP_3", preds, golds)
    assert set(per) == {"mae", "rmse"}
    for m in ("mae", "rmse"):
        assert aggregate(m, list(per[m].values())) == pytest.approx(official[m], abs=1e-12)


def test_per_question_scores_give_the_metric_rouge_and_accuracy():
    golds = {"a": "neural machine translation with attention", "b": "a study of parsing", "c": "Re: meeting"}
    preds = {"a": "attention for machine translation", "b": "", "c": "meeting tomorrow"}
    per = example_scores("LaMP_5", preds, golds)
    official = score("LaMP_5", preds, golds)
    for m in ("rouge1", "rougeL"):
        assert aggregate(m, list(per[m].values())) == pytest.approx(official[m], abs=1e-12)
    assert per["rouge1"]["b"] == 0.0
    golds = {"1": "comedy", "2": "action", "3": "sci-fi"}
    preds = {"1": " comedy ", "2": "drama", "3": "sci-fi"}
    per = example_scores("LaMP_2", preds, golds)
    official = score("LaMP_2", preds, golds)["accuracy"]
    assert aggregate("accuracy", list(per["accuracy"].values())) == pytest.approx(official)


def test_missing_prediction_is_named():
    with pytest.raises(KeyError, match="q9"):
        example_scores("LaMP_3", {"q1": "3"}, {"q1": "3", "q9": "4"})


def test_identical_inputs_give_exactly_zero():
    xs = [random.Random(1).random() for _ in range(50)]
    assert paired_bootstrap(xs, list(xs), n_resamples=300) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(xs, list(xs), "rmse", n_resamples=300) == (0.0, 0.0, 0.0)


def test_drawing_users_widens_the_interval_where_a_users_questions_move_together():
    """20 users x 10 questions; the gap between two methods is mostly each user's own (shared by their
    questions): drawing questions sees 200 independent draws and excludes 0, drawing users sees 20 and must not."""
    rng = random.Random(3)
    offsets = [0.35] * 11 + [-0.3] * 9  # a mean gap of +0.0575, all of it between users
    users = [f"u{u}" for u in range(20) for _ in range(10)]
    a = [0.5 + offsets[u] + rng.gauss(0, 0.02) for u in range(20) for _ in range(10)]
    b = [0.5] * 200
    by_question = paired_bootstrap(a, b, n_resamples=1000)
    by_user = paired_bootstrap(a, b, n_resamples=1000, clusters=users)
    assert by_question[0] == by_user[0]  # the same observed difference
    assert by_question[1] > 0 and by_user[1] < 0 < by_user[2]
    assert paired_bootstrap(a, b, n_resamples=300, clusters=list(range(200))) == \
        paired_bootstrap(a, b, n_resamples=300)  # one question per user: the question bootstrap
    with pytest.raises(ValueError, match="1 names for 200 scores"):
        paired_bootstrap(a, b, clusters=["u0"])
    golds = {f"q{i}": "3" for i in range(200)}
    preds = {"pplug [median]": {"seed0": {f"q{i}": "3" for i in range(200)}},
             "none [median]": {"seed0": {f"q{i}": "4" for i in range(200)}}}
    users_of = dict(zip(golds, users))
    assert summarize("LaMP_3", golds, preds, ["pplug [median]"], n_resamples=50, users=users_of)["resampled"] \
        == "users (20)"
    assert summarize("LaMP_3", golds, preds, ["pplug [median]"], n_resamples=50,
                     users={i: i for i in golds})["resampled"] == "questions"


def test_large_gap_excludes_zero_and_small_noise_does_not():
    rng = random.Random(2)
    a = [0.6 + rng.gauss(0, 0.1) for _ in range(200)]
    b = [x - 0.3 + rng.gauss(0, 0.05) for x in a]  # a beats b by 0.3 on every question, give or take
    d, lo, hi = paired_bootstrap(a, b, "rouge1", n_resamples=1000, seed=0)
    assert lo > 0.25 and hi < 0.35 and lo < d < hi
    assert leads("rouge1", (d, lo, hi)) and interval_verdict("rouge1", (d, lo, hi)) == "leads"
    # lower is better for errors: b - a on absolute errors is a lead for b
    assert leads("mae", paired_bootstrap(b, a, "mae", n_resamples=500))
    assert interval_verdict("rouge1", paired_bootstrap(b, a, n_resamples=500)) == "behind"
    # pure noise around the same mean: the interval straddles 0
    c = [x + rng.choice((-0.01, 0.01)) for x in a]
    d, lo, hi = paired_bootstrap(a, c, n_resamples=1000)
    assert lo < 0 < hi and not leads("rouge1", (d, lo, hi))


def test_bootstrap_is_seeded_and_rmse_is_root_of_mean():
    rng = random.Random(3)
    a, b = [rng.random() * 4 for _ in range(80)], [rng.random() * 2 for _ in range(80)]
    once = paired_bootstrap(a, b, "rmse", n_resamples=400, seed=5)
    assert once == paired_bootstrap(a, b, "rmse", n_resamples=400, seed=5)
    d, _, _ = paired_bootstrap(a, b, "rmse", n_resamples=10)
    assert d == pytest.approx(math.sqrt(sum(a) / 80) - math.sqrt(sum(b) / 80))
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap(a, b[:-1])


def test_mean_sd():
    assert mean_sd([0.5]) == (0.5, None)
    m, sd = mean_sd([1.0, 2.0, 3.0])
    assert m == 2.0 and sd == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_sd([])


def test_row_decoding():
    assert row_decoding("pplug") == "argmax"
    assert row_decoding("pplug [median]") == "median"
    assert row_decoding("floor: always-5") is None


def test_summarize_pairs_same_decoding_and_floors():
    golds, _ = _ratings(40)
    ids = list(golds)
    exact = {i: golds[i] for i in ids}
    off = {i: str(min(5, int(golds[i]) + 2)) for i in ids}
    preds = {
        "pplug [median]": {"seed0": exact, "seed1": {**exact, ids[0]: "1"}},
        "retrieval [median]": {"seed0": off, "seed1": off},
        "retrieval [expected]": {"seed0": off, "seed1": off},
        "floor: always-5": {"seed0": {i: "5" for i in ids}},
    }
    s = summarize("LaMP_3", golds, preds, refs=["pplug [median]"], n_resamples=300)
    assert set(s["comparisons"]["pplug [median]"]) == {"retrieval [median]", "floor: always-5"}
    cell = s["cells"]["pplug [median]"]["mae"]
    assert cell["values"]["seed0"] == 0.0 and cell["sd"] > 0
    assert s["cells"]["floor: always-5"]["mae"]["sd"] is None
    c = s["comparisons"]["pplug [median]"]["retrieval [median]"]["mae"]
    assert c["leads"] and c["hi"] < 0 and set(c["per_seed"]) == {"seed0", "seed1"}
    assert "±" in summary_table(s)
    assert any("leads" in line for line in comparison_lines(s, ["mae"]))


def test_summarize_compares_refs_with_each_other_only_when_asked():
    golds, _ = _ratings(40)
    ids = list(golds)
    exact = {i: golds[i] for i in ids}
    off = {i: str(min(5, int(golds[i]) + 2)) for i in ids}
    preds = {"pplug base": {"seed0": off}, "pplug label-tokens": {"seed0": exact},
             "floor: always-5": {"seed0": {i: "5" for i in ids}}}
    refs = ["pplug base", "pplug label-tokens"]
    apart = summarize("LaMP_3", golds, preds, refs=refs, n_resamples=200)
    assert set(apart["comparisons"]["pplug label-tokens"]) == {"floor: always-5"}
    both = summarize("LaMP_3", golds, preds, refs=refs, n_resamples=200, compare_refs=True)
    assert set(both["comparisons"]["pplug label-tokens"]) == {"pplug base", "floor: always-5"}
    better = both["comparisons"]["pplug label-tokens"]["pplug base"]["mae"]
    worse = both["comparisons"]["pplug base"]["pplug label-tokens"]["mae"]
    assert better["leads"] and better["hi"] < 0 and worse["lo"] > 0 and not worse["leads"]
