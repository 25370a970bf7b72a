"""The docs' figures (`benchmarks.figures`): their committed numbers are the results JSON's, each SVG was drawn from
its numbers, drawing is deterministic, and an edited result makes `python -m benchmarks.report --check` fail."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import figures, report


def test_committed_figures_match_the_results():
    assert figures.stale_figures(report.RESULTS, figures.FIGURES_DIR) == {}


def test_forest_rows_are_the_tables_intervals_turned_around():
    """Row minus PPlug is minus the tables' "pplug minus row": the same numbers, the interval mirrored."""
    data = figures.FIGURES["forest_acl"][0](report.RESULTS)
    dev = report.summaries(report.load(report.RESULTS, report.ACL))["dev"]
    c = dev["comparisons"]["pplug"]["retrieval"]["rouge1"]
    (row,) = [r for r in data["panels"][0]["rows"] if r["row"] == "retrieval"]
    assert (row["diff"], row["lo"], row["hi"]) == pytest.approx((-c["diff"], -c["hi"], -c["lo"]), abs=1e-6)
    assert row["lo"] <= row["diff"] <= row["hi"]


def test_the_readme_forest_draws_the_summary_tables_sets_and_intervals():
    """The README's forest is its summary table drawn: the same five sets, files and paired intervals."""
    summary = figures.FIGURES["forest_summary"][0](report.RESULTS)
    assert [s["set"] for s in summary["sets"]] == [f"{sr.name} ({sr.what})" for sr in report.SETS_SUMMARY]
    assert [s["file"] for s in summary["sets"]] == [f"{sr.file}.json" for sr in report.SETS_SUMMARY]
    enron = summary["sets"][2]
    c = report.summaries(report.load(report.RESULTS, report.ENRON_BUDGET))["dev"]["comparisons"]["pplug"]
    (row,) = [r for r in enron["panels"][0]["rows"] if r["row"] == "prompt-tuned"]
    assert (row["diff"], row["lo"], row["hi"]) == pytest.approx(
        (-c["prompt-tuned"]["rouge1"]["diff"], -c["prompt-tuned"]["rouge1"]["hi"], -c["prompt-tuned"]["rouge1"]["lo"]),
        abs=1e-6)
    music = summary["sets"][0]["panels"][0]
    assert music["lower_is_better"] and not enron["panels"][0]["lower_is_better"]
    assert "floor: the user's most common rating" in [r["row"] for r in music["rows"]]


def test_explained_user_figure_reads_the_explain_results():
    data = figures.FIGURES["explained_user"][0](report.RESULTS)
    assert sum(it["weight"] for it in data["items"]) == pytest.approx(1.0, abs=1e-4)
    assert data["uniform_weight"] == pytest.approx(1 / len(data["items"]), abs=1e-6)


def test_drawing_is_deterministic_and_carries_its_numbers():
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra")
    data = figures.FIGURES["make_train"][0](report.RESULTS)
    a, b = figures.draw("make_train", data), figures.draw("make_train", data)
    assert a == b and figures.digest(data).encode() in a


def test_an_edited_result_makes_the_check_fail(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    path = results / "make_train.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d["ceiling"]["mae"] += 0.5
    path.write_text(json.dumps(d), encoding="utf-8")
    stale = figures.stale_figures(results, figures.FIGURES_DIR)
    assert list(stale) == ["make_train"]
    assert report.main(["--check", "--results", str(results)]) == 1
    assert "docs/figures/make_train" in capsys.readouterr().out
