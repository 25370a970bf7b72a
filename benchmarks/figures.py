"""The docs' figures, drawn from benchmarks/results/*.json by `python -m benchmarks.report` beside its tables.

Each figure is two committed files in docs/figures/: `<name>.json`, the numbers it plots (read from the results
files by `figure_data`, the same rows and intervals as the tables), and `<name>.svg`, drawn from them with
matplotlib (Agg) under fixed settings: `svg.hashsalt`, text kept as text and no date, so the same numbers give
the same file. The SVG carries the sha256 of its numbers (its `Description`), so `--check` compares the numbers
with the results JSON, and each SVG with its numbers, without looking at a pixel.

- `forest_music`, `forest_acl`, `forest_enron`: each baseline and floor minus PPlug, per metric, with the paired
  bootstrap 95% intervals the benchmarks stored (the README's and docs/results.md's tables);
- `forest_summary`: the README summary's five sets (`results_data.SETS_SUMMARY`, the rows and files of its table),
  each baseline and floor minus PPlug's recipe on the set's metric, one panel per set;
- `make_train`: the `make train` runs against the history-blind ceiling (make_train.json);
- `explained_user`: one synthetic dev user explained, each history item's weight coloured by its label
  (explain_synthetic.json, `benchmarks/bench_explain.py`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

from benchmarks import results_data as report  # the results files and row names, shared with the tables

FIGURES_DIR = report.ROOT / "docs" / "figures"

# (set, its results file, the row PPlug is as that file names it, rows (key, label), metrics (metric, decoding,
# label, lower is better)): the rows and columns of the summary tables of README.md
FOREST_SETS = {
    "music": ("music_ratings", report.MIX, "pplug+mix",
              (("prompt-tuned+mix", "prompt-tuned"), ("retrieval+mix", "retrieval"),
               ("floor: always-5", "floor: always 5"), ("floor: user mean rating", "floor: user's mean rating")),
              (("mae", "median", "MAE (median)", True), ("rmse", "expected", "RMSE (expected)", True))),
    "acl": ("acl_titles", report.ACL, "pplug",
            (("none", "none (frozen LLM)"), ("prompt-tuned", "prompt-tuned"), ("retrieval", "retrieval"),
             ("floor: first 9 words", "floor: first 9 words")),
            (("rouge1", None, "ROUGE-1", False), ("rougeL", None, "ROUGE-L", False))),
    "enron": ("enron_subjects", report.ENRON, "pplug",
              (("none", "none (frozen LLM)"), ("prompt-tuned", "prompt-tuned"), ("retrieval", "retrieval"),
               ("floor: first 3 words", "floor: first 3 words")),
              (("rouge1", None, "ROUGE-1", False), ("rougeL", None, "ROUGE-L", False))),
}


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def forest_data(results: Path, key: str, metrics: slice = slice(None)) -> dict:
    """Each row minus PPlug with its interval, per metric: the stored comparison (PPlug minus the row), negated."""
    set_name, file, ref, rows, cols = FOREST_SETS[key]
    dev = report.summaries(report.load(results, file))["dev"]
    panels = []
    for metric, dec, label, lower in cols[metrics]:
        out = []
        for row, row_label in rows:
            c = dev["comparisons"][report.row_key(ref, dec)][report.row_key(row, dec)][metric]
            out.append({"row": row_label, "diff": _r(-c["diff"]), "lo": _r(-c["hi"]), "hi": _r(-c["lo"])})
        panels.append({"metric": label, "lower_is_better": lower, "rows": out})
    return {"set": set_name, "n": dev.get("n"), "file": f"{file}.json", "panels": panels}


def forest_summary_data(results: Path) -> dict:
    """The README summary's sets: every baseline and floor its table weighs, minus PPlug's recipe, as stored."""
    from pplug.lamp.stats import METRIC_DIRECTIONS

    sets = []
    for sr in report.SETS_SUMMARY:
        col = sr.col
        s = report.summaries(report.load(results, sr.file))[col.slice]
        compared = s["comparisons"][report.row_key(sr.ref, col.dec)]
        rows = []
        for row in (*sr.baselines, *sr.floors):
            c = compared.get(report.row_key(row.key, col.dec), {}).get(col.metric)
            if c is not None:  # a floor the run did not score beside PPlug is not drawn (the table says so)
                rows.append({"row": row.label, "diff": _r(-c["diff"]), "lo": _r(-c["hi"]), "hi": _r(-c["lo"])})
        split = "dev" if col.slice == "dev" else f"{col.slice} slice"
        sets.append({"set": f"{sr.name} ({sr.what})", "n": s.get("n"), "file": f"{sr.file}.json", "split": split,
                     "panels": [{"metric": col.header.rstrip(" ↑↓"),
                                 "lower_is_better": not METRIC_DIRECTIONS.get(col.metric, True), "rows": rows}]})
    return {"sets": sets}


def make_train_data(results: Path) -> dict:
    d = report.load(results, "make_train")
    blind = {(b["seed"], b["dtype"]): b["mae"] for b in d.get("no_history", [])}
    return {"file": "make_train.json", "ceiling_mae": _r(d["ceiling"]["mae"]),
            "runs": [{"run": f"seed {r['seed']}, {r['dtype']}", "pplug_mae": _r(r["pplug"]["mae"]),
                      "frozen_llm_mae": _r(r["none"]["mae"]), "no_history_mae": _r(blind.get((r["seed"], r["dtype"])))}
                     for r in d["runs"]]}


def explained_user_data(results: Path) -> dict:
    d = report.load(results, "explain_synthetic")
    u = d["explained_user"]
    return {"file": "explain_synthetic.json", "id": u["id"], "gold": u["gold"], "gate": _r(u["gate"]),
            "uniform_weight": _r(u["uniform_weight"]),
            "items": [{"index": it["index"], "weight": _r(it["weight"]), "label": it["label"],
                       "same_sentiment": it["same_sentiment"]} for it in u["items"]],
            "expected_rating": {k: _r(v["expected_rating"]) for k, v in u["counterfactual"].items()}}


# --- drawing ----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "pplug", "svg.fonttype": "none", "font.size": 9,
                         "font.family": "DejaVu Sans", "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _forest_panel(ax, panel: dict, title: str) -> None:
    rows = panel["rows"]
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        worse = r["lo"] > 0 if panel["lower_is_better"] else r["hi"] < 0
        better = r["hi"] < 0 if panel["lower_is_better"] else r["lo"] > 0
        color = "#b2182b" if worse else "#2166ac" if better else "#555555"
        ax.plot([r["lo"], r["hi"]], [y, y], color=color, lw=2)
        ax.plot([r["diff"]], [y], "o", color=color, ms=5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, [r["row"] for r in rows])
    pplug_better = "right" if panel["lower_is_better"] else "left"  # where a row that trails PPlug lands
    ax.set_xlabel(f"{panel['metric']}: row minus PPlug (PPlug better to the {pplug_better})")
    ax.set_title(title, loc="left", fontsize=9)


def draw_forest(data: dict, plt) -> object:
    fig, axes = plt.subplots(1, len(data["panels"]), figsize=(4.2 * len(data["panels"]), 2.4), squeeze=False)
    for ax, panel in zip(axes[0], data["panels"]):
        _forest_panel(ax, panel, f"{data['set']} dev (n={data['n']}), {panel['metric']}")
    fig.suptitle("Each baseline and floor minus PPlug, paired bootstrap 95% interval (red: behind PPlug, "
                 "grey: tie, blue: ahead)", fontsize=8, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def draw_forest_summary(data: dict, plt) -> object:
    sets = data["sets"]
    heights = [len(s["panels"][0]["rows"]) + 1.6 for s in sets]  # a panel's rows, its title and its axis label
    fig, axes = plt.subplots(len(sets), 1, figsize=(7.5, 0.3 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, s in zip(axes[:, 0], sets):
        _forest_panel(ax, s["panels"][0], f"{s['set']}, {s['split']} (n={s['n']})")
    fig.suptitle("Each baseline and floor minus PPlug's recipe on the five real sets, paired bootstrap 95% interval\n"
                 "(red: behind PPlug, grey: tie, blue: ahead)", fontsize=8, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def draw_make_train(data: dict, plt) -> object:
    fig, ax = plt.subplots(figsize=(7, 2.8))
    runs = data["runs"]
    xs = range(len(runs))
    ax.plot(xs, [r["frozen_llm_mae"] for r in runs], "s", color="#999999", label="frozen LLM alone")
    blind = [(x, r["no_history_mae"]) for x, r in zip(xs, runs) if r["no_history_mae"] is not None]
    if blind:
        ax.plot([x for x, _ in blind], [v for _, v in blind], "^", color="#e08214", label="same recipe, no history")
    ax.plot(xs, [r["pplug_mae"] for r in runs], "o", color="#2166ac", label="PPlug (make train)")
    ax.axhline(data["ceiling_mae"], color="#b2182b", ls="--", lw=1, label="history-blind ceiling")
    ax.set_xticks(list(xs), [r["run"] for r in runs], rotation=20, ha="right")
    ax.set_ylabel("dev MAE (lower is better)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def draw_explained_user(data: dict, plt) -> object:
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7, 2.8))
    palette = {"1": "#b2182b", "2": "#ef8a62", "3": "#bababa", "4": "#67a9cf", "5": "#2166ac", None: "#ffffff"}
    items = data["items"]
    ax.bar([it["index"] for it in items], [it["weight"] for it in items],
           color=[palette.get(it["label"], "#ffffff") for it in items], edgecolor="black", linewidth=0.4,
           hatch=None)
    for it in items:  # the past reviews of the input's sentiment
        if it["same_sentiment"]:
            ax.text(it["index"], it["weight"], "s", ha="center", va="bottom", fontsize=7)
    ax.axhline(data["uniform_weight"], color="black", ls="--", lw=0.8)
    e = data["expected_rating"]
    ax.set_title(f"dev question {data['id']}, gold rating {data['gold']}\nexpected rating with the history "
                 f"{e['history']:.2f}, cold start {e['cold_start']:.2f}, persona alone {e['persona_only']:.2f}",
                 fontsize=8, loc="left")
    ax.set_xlabel("history item (oldest first); s: same sentiment as the input; dashed: uniform weight")
    ax.set_ylabel("weight in the user vector")
    ax.legend(handles=[Patch(color=palette[k], label=f"rated {k}") for k in "12345"], fontsize=7, frameon=False,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


FIGURES: dict[str, tuple[Callable[[Path], dict], Callable]] = {
    "forest_summary": (forest_summary_data, draw_forest_summary),
    "forest_music": (lambda results: forest_data(results, "music"), draw_forest),
    "forest_acl": (lambda results: forest_data(results, "acl"), draw_forest),
    "forest_enron": (lambda results: forest_data(results, "enron"), draw_forest),
    "make_train": (make_train_data, draw_make_train),
    "explained_user": (explained_user_data, draw_explained_user),
}


def data_text(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def digest(data: dict) -> str:
    return "pplug-figure-data sha256:" + hashlib.sha256(data_text(data).encode("utf-8")).hexdigest()


def draw(name: str, data: dict) -> bytes:
    """The SVG of figure `name` from its numbers (deterministic: the same numbers give the same bytes)."""
    plt = _pyplot()
    fig = FIGURES[name][1](data, plt)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "pplug benchmarks/figures.py",
                                             "Description": digest(data)})
    plt.close(fig)
    return buf.getvalue().encode("utf-8")


def stale_figures(results: Path = report.RESULTS, out_dir: Path = FIGURES_DIR) -> dict[str, str]:
    """figure name -> why it is out of date (its numbers differ from the results JSON, or its SVG from them)."""
    out = {}
    for name, (data_of, _) in FIGURES.items():
        data = data_of(Path(results))
        json_path, svg_path = Path(out_dir) / f"{name}.json", Path(out_dir) / f"{name}.svg"
        if not json_path.is_file() or json_path.read_text(encoding="utf-8") != data_text(data):
            out[name] = f"{json_path.name} differs from the numbers in benchmarks/results/"
        elif not svg_path.is_file() or digest(data) not in svg_path.read_text(encoding="utf-8"):
            out[name] = f"{svg_path.name} was not drawn from {json_path.name}"
    return out


def render_figures(results: Path = report.RESULTS, out_dir: Path = FIGURES_DIR) -> list[str]:
    """Redraw every figure whose numbers or SVG are out of date; returns the names redrawn."""
    redrawn = []
    for name in stale_figures(results, out_dir):
        data = FIGURES[name][0](Path(results))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.json").write_text(data_text(data), encoding="utf-8")
        (Path(out_dir) / f"{name}.svg").write_bytes(draw(name, data))
        redrawn.append(name)
    return redrawn


__all__ = ["FIGURES", "FIGURES_DIR", "digest", "draw", "render_figures", "stale_figures"]
