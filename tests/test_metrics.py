"""Official LaMP scoring, pinned to hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from pplug.cli.main import main
from pplug.lamp.data import LaMPDataError, write_outputs
from pplug.lamp.metrics import accuracy_f1, format_table, rating_value, score


def test_lamp1_accuracy_f1_with_whitespace_and_unknown():
    golds = {"a": "[1]", "b": "[2]", "c": "[1]", "d": "[2]"}
    preds = {"a": " [1] \n", "b": "[1]", "c": "maybe", "d": "[2]"}
    m = score("LaMP_1", preds, golds)
    # mapped preds [0, 0, -1, 1] vs golds [0, 1, 0, 1]: class 0 F = 2/(2+1+1), class 1 F = 2/(2+0+1)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert list(m) == ["accuracy", "f1"]


def test_lamp2_macro_f1_counts_absent_classes_as_zero():
    golds = {"a": "comedy", "b": "comedy", "c": "sci-fi"}
    preds = {"a": "comedy", "b": "Comedy", "c": "sci-fi"}  # case matters: "Comedy" -> -1
    m = score("LaMP_2", preds, golds)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx((2 / 3 + 1.0) / 15)  # 13 classes absent from both still count


def test_labels_outside_the_set_map_to_minus_one():
    # both sides -1 counts as a hit for accuracy (as sklearn on the mapped ints), never for F1
    m = score("LaMP_2", {"a": "horror", "b": "action"}, {"a": "horror", "b": "comedy"})
    assert m == {"accuracy": 0.5, "f1": 0.0}


def test_f1_matches_sklearn_when_available():
    sk = pytest.importorskip("sklearn.metrics")
    labels = ("x", "y", "z", "w")
    golds = ["x", "y", "y", "z", "q", "x", "x"]
    preds = ["x", "x", "y", "q", "q", "z", "w"]
    idx = {l: i for i, l in enumerate(labels)}
    g = [idx.get(v, -1) for v in golds]
    p = [idx.get(v, -1) for v in preds]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sk.f1_score(g, p, labels=list(range(len(labels))), average="macro")
    got = accuracy_f1(preds, golds, labels)
    assert got["f1"] == pytest.approx(want)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(g, p))


def test_lamp3_mae_rmse_worst_case_rule():
    golds = {"a": "5", "b": "1", "c": "3", "d": "2", "e": "4"}
    preds = {"a": "4.5", "b": "", "c": "three", "d": " 2 ", "e": "5"}
    # errors: 0.5, |5-1| (empty -> farther of 1/5), |5-3| (tie -> 5), 0, 1
    m = score("LaMP_3", preds, golds)
    assert m["mae"] == pytest.approx(7.5 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 16 + 4 + 0 + 1) / 5))
    assert list(m) == ["mae", "rmse"]


def test_rating_value():
    assert rating_value("4.5", 1.0) == 4.5
    assert rating_value(" 3\n", 1.0) == 3.0
    assert rating_value("five", 2.0) == 5.0
    assert rating_value("five", 4.0) == 1.0
    assert rating_value("5 stars", 5.0) == 1.0


def test_lamp3_unparsable_gold_is_an_error():
    with pytest.raises(LaMPDataError, match="record a: field 'output'"):
        score("LaMP_3", {"a": "3"}, {"a": "n/a"})


def test_rouge_as_rouge_score_computes_it():
    golds = {"a": "The Quick brown fox", "b": "a b c d", "c": "x"}
    preds = {"a": "quick brown dog", "b": "d c b a", "c": "   "}
    m = score("LaMP_4", preds, golds)
    # a: 2 of 3 pred / 4 gold unigrams -> F = 4/7 (LCS also 2); b: all unigrams, LCS 1 -> 1.0 / 0.25; c: empty -> 0
    assert m["rouge1"] == pytest.approx((4 / 7 + 1.0 + 0.0) / 3)
    assert m["rougeL"] == pytest.approx((4 / 7 + 0.25 + 0.0) / 3)


def test_rouge_matches_package_directly():
    from rouge_score import rouge_scorer

    golds = {"1": "Neural Machine Translation by Jointly Learning to Align", "2": "Re: lunch tomorrow?"}
    preds = {"1": "Jointly learning to align and translate", "2": "lunch"}
    sc = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    want1 = sum(sc.score(golds[k], preds[k])["rouge1"].fmeasure for k in golds) / 2
    wantL = sum(sc.score(golds[k], preds[k])["rougeL"].fmeasure for k in golds) / 2
    for task in ("LaMP_5", "LaMP_6", "LaMP_7"):
        m = score(task, preds, golds)
        assert m["rouge1"] == pytest.approx(want1) and m["rougeL"] == pytest.approx(wantL)


def test_id_mismatch_is_clear():
    with pytest.raises(LaMPDataError) as e:
        score("LaMP_3", {"a": "1", "z": "2"}, {"a": "1", "b": "2"})
    msg = str(e.value)
    assert "1 id(s) missing (e.g. b)" in msg and "1 unexpected id(s) (e.g. z)" in msg and "\n" not in msg


def test_format_table():
    t = format_table({"pplug": {"mae": 0.25, "rmse": 0.5}, "blind": {"mae": 1.0}}, title="LaMP_3")
    lines = t.splitlines()
    assert lines[0] == "**LaMP_3**"
    assert lines[2] == "| method | mae ↓ | rmse ↓ |"
    assert lines[4] == "| pplug | 0.2500 | 0.5000 |"
    assert lines[5] == "| blind | 1.0000 |  |"


def test_cli_score_writes_metrics(tmp_path, capsys):
    write_outputs(tmp_path / "golds.json", "LaMP_3", {"a": "5", "b": "1"})
    write_outputs(tmp_path / "preds.json", "LaMP_3", {"a": "4", "b": "x"})
    out = tmp_path / "m" / "metrics.json"
    rc = main(["score", "--preds", str(tmp_path / "preds.json"), "--golds", str(tmp_path / "golds.json"),
                   "--out", str(out)])  # fmt: skip
    assert rc == 0
    obj = json.loads(out.read_text())
    assert obj["task"] == "LaMP_3" and obj["num_examples"] == 2
    assert obj["metrics"]["mae"] == pytest.approx((1 + 4) / 2)
    assert "| mae ↓ | rmse ↓ |" in capsys.readouterr().out


def test_cli_score_errors_are_one_line(tmp_path, capsys):
    write_outputs(tmp_path / "golds.json", "LaMP_3", {"a": "5"})
    write_outputs(tmp_path / "preds.json", "LaMP_4", {"a": "5"})
    rc = main(["score", "--preds", str(tmp_path / "preds.json"), "--golds", str(tmp_path / "golds.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "LaMP_4 but the golds are LaMP_3" in err and err.count("\n") == 1
    write_outputs(tmp_path / "preds.json", "LaMP_3", {"b": "5"})
    rc = main(["score", "--preds", str(tmp_path / "preds.json"), "--golds", str(tmp_path / "golds.json"),
                   "--out", str(tmp_path / "never.json")])  # fmt: skip
    assert rc == 2 and "ids do not match" in capsys.readouterr().err
    assert not (tmp_path / "never.json").exists()
