"""Render the results tables of README.md and docs/*.md, and the figures of docs/figures/, from
benchmarks/results/*.json.

    python -m benchmarks.report            # rewrite every table between markers, redraw every stale figure
    python -m benchmarks.report --check    # exit 1 with a diff when a committed table or figure is stale

The figures (`benchmarks.figures`) are checked by their numbers, not their pixels: each one's plotted numbers
are committed beside its SVG and compared with the results JSON.

A document holds a table as

    <!-- report:NAME -->
    ...generated markdown...
    <!-- /report:NAME -->

and everything outside the markers is hand-written prose. `RENDERERS` maps each NAME to the function that
renders it from the results folder (one table is not a result: `modules`, the module list of
docs/architecture.md, is rendered from pplug/ and each module's docstring). Cells are mean ± sd over training
seeds (a value alone where one run decides it: `none`, the no-model floors); intervals are the paired
bootstrap 95% intervals that the benchmarks stored (`pplug.lamp.stats.summarize`), printed with
`pplug.lamp.stats.format_interval`; "leads" and "behind" mean the interval excludes 0
(`pplug.lamp.stats.interval_verdict`). Under each table, every results file it read is named with its command, code
version, host, device and dtype (the file's `"meta"`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pplug.core.tasks import TaskSpec

from benchmarks.results_data import (
    ACCURACY,
    ACL,
    ACL_BEAM,
    ACL_BUDGET,
    ACL_FLOORS,
    ALWAYS_5,
    BASELINES,
    COLD_MAE,
    COLD_RMSE,
    ENCODER_KNN,
    ENRON,
    ENRON_BUDGET,
    ENRON_FLOORS,
    FROZEN_LLM,
    GPU,
    HEADLINES_TIME_SHIFT,
    HEADLINES_TIME_SHIFT_FLOORS,
    MAE,
    MAE_ARGMAX,
    MAE_EXPECTED,
    METHODS,
    MIX,
    MUSIC,
    MUSIC_RECIPE,
    NEWS_CATEGORIES_RECIPE,
    PEARSON,
    PRIOR_BASELINES,
    R1,
    RATING_FLOORS,
    RESULTS,
    RL,
    RMSE,
    ROOT,
    SETS_SUMMARY,
    SYNTH,
    SYNTH_PUBLISHED,
    TIME_SHIFT_R1,
    USER_MAJORITY,
    USER_MEAN,
    Col,
    Row,
    SetResult,
    generation_floors,
    load,
    load_file,
    row_key,
    summaries,
)

DOCUMENTS = ("README.md", "docs/*.md")
MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


# --- formatting -----------------------------------------------------------------------------------


def fmt_value(values: Sequence[float], digits: int = 3) -> str:
    """"0.456 ± 0.013" over seeds, or the value alone for one run (`pplug.lamp.stats.mean_sd`)."""
    from pplug.lamp.stats import mean_sd

    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def fmt_interval(metric: str, c: dict, digits: int = 3) -> str:
    """"-0.063 [-0.098, -0.024] leads" from a stored comparison ({"diff", "lo", "hi"})."""
    from pplug.lamp.stats import format_interval, interval_verdict

    iv = (c["diff"], c["lo"], c["hi"])
    verdict = interval_verdict(metric, iv)
    return f"{format_interval(iv, digits)} {'tie' if verdict.startswith('tie') else verdict}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def sources(results: Path, names: Sequence[str]) -> str:
    """One line per results file read: its file name, then its meta (command, code, host, device, dtype)."""
    lines = []
    for name in dict.fromkeys(names):
        m = load(results, name).get("meta", {})
        nr = "not recorded"
        lines.append(f"- `{name}.json`: `{m.get('command', nr)}` (code {m.get('code_version', nr)}; "
                     f"host {m.get('host', nr)}; device {m.get('device', nr)}; dtype {m.get('dtype', nr)})")
    return "Source:\n\n" + "\n".join(lines)


# --- the two generic table shapes -------------------------------------------------------------------




def _summary(results: Path, row: Row, col: Col) -> tuple[str, dict]:
    name = row.file or col.file
    if name is None:
        raise ValueError(f"row {row.label!r} / column {col.header!r}: no results file")
    return name, summaries(load(results, name))[col.slice]


def _cell(results: Path, row: Row, col: Col) -> tuple[str, str]:
    name, s = _summary(results, row, col)
    if row.key == "ceiling":  # the synthetic data's history-blind ceiling (best any history-blind predictor)
        v = s.get("references", {}).get("history_blind_ceiling", {}).get(col.metric)
        return name, "" if v is None else f"{v:.3f}"
    key = row_key(row.key, col.dec)
    if col.metric == "pearson_r":
        c = s.get("pearson_r", {}).get(row_key(row.key, "expected"))
    else:
        c = s["cells"].get(key, {}).get(col.metric)
    if c is None:
        return name, ""
    seeds = col.seeds or row.seeds
    values = c["values"]
    vals = list(values.values())
    if seeds and len(vals) > 1:  # a row that does not depend on the seed keeps its one value
        vals = [values[k] for k in seeds if k in values]
    return name, fmt_value(vals) if vals else ""


def cells_table(results: Path, caption: str, rows: Sequence[Row], cols: Sequence[Col], ref: str | None = None,
                ref_label: str | None = None) -> str:
    """Mean ± sd of each row in each column; with `ref`, one more column per column: `ref` (called
    `ref_label` in the header) minus the row."""
    used: list[str] = []
    body = []
    for r in rows:
        line = [r.label]
        for c in cols:
            name, text = _cell(results, r, c)
            used.append(name)
            line.append(text)
        if ref:
            for c in cols:
                line.append(_interval(results, Row(r.key, r.label, r.file, r.seeds, r.ref or ref), c, used))
        body.append(line)
    header = [caption.format(n=_summary(results, rows[0], cols[0])[1].get("n"))]
    header += [c.header.format(n=_summary(results, rows[0], c)[1].get("n")) for c in cols]
    if ref:
        header += [f"{ref_label or ref} minus row: {c.header.rstrip(' ↑↓')}".replace(" (n={n})", "") for c in cols]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


def _interval(results: Path, row: Row, col: Col, used: list[str]) -> str:
    name, s = _summary(results, row, col)
    used.append(name)
    ref = row_key(row.ref or "pplug", col.dec)
    other = row_key(row.key, col.dec)
    c = s["comparisons"].get(ref, {}).get(other, {}).get(col.metric)
    return fmt_interval(col.metric, c) if c else ""


def interval_table(results: Path, caption: str, rows: Sequence[Row], cols: Sequence[Col], ref: str = "pplug"
                   ) -> str:
    """Paired bootstrap 95% intervals of `ref` (or a row's own ref) minus each row, per column."""
    used: list[str] = []
    body = [[r.label] + [_interval(results, Row(r.key, r.label, r.file, r.seeds, r.ref or ref), c, used)
                         for c in cols] for r in rows]
    header = [caption] + [c.header.replace(" (n={n})", "") for c in cols]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


# --- tables with their own layout -----------------------------------------------------------------


def make_train(results: Path, name: str = "make_train.json") -> str:
    """`make train` over seeds x dtypes: each run, then mean ± sd per dtype, and the history-blind ceiling.

    The history-blind ablation (`no_history`: the same recipe trained and scored with empty histories) fills
    the rows of the seeds and dtypes it ran for. `name`: the results file (an earlier recipe's is kept too)."""
    path = Path(results) / name
    if not path.is_file():
        return "_no results file yet: run `python benchmarks/bench_make_train.py`_"
    d = load_file(path)
    header = ["`make train` run", "train.py wall", "PPlug MAE ↓", "PPlug RMSE ↓", "no history MAE / RMSE",
              "frozen LLM MAE / RMSE"]

    def pair(have: list[dict]) -> str:
        return f"{fmt_value([h['mae'] for h in have])} / {fmt_value([h['rmse'] for h in have])}" if have else ""

    runs, blind = d["runs"], d.get("no_history", [])

    def without(rs: list[dict]) -> list[dict]:
        keys = {(r["seed"], r["dtype"]) for r in rs}
        return [b for b in blind if (b["seed"], b["dtype"]) in keys]

    body = [[f"seed {r['seed']}, {r['dtype']}", f"{r['wall_s'] / 60:.1f} min", f"{r['pplug']['mae']:.3f}",
             f"{r['pplug']['rmse']:.3f}", pair(without([r])), pair([r["none"]])] for r in runs]
    for dtype in dict.fromkeys(r["dtype"] for r in runs):
        rs = [r for r in runs if r["dtype"] == dtype]
        below_pct = 100 * (1 - sum(r["pplug"]["mae"] for r in rs) / len(rs) / d["ceiling"]["mae"])
        body.append([f"**mean ± sd, {dtype}** ({len(rs)} seeds; PPlug MAE {below_pct:+.1f}% below the ceiling)",
                     f"{fmt_value([r['wall_s'] / 60 for r in rs], 1)} min", fmt_value([r["pplug"]["mae"] for r in rs]),
                     fmt_value([r["pplug"]["rmse"] for r in rs]), pair(without(rs)), pair([r["none"] for r in rs])])
    c = d["ceiling"]
    body.append(["history-blind ceiling (best any predictor without the history)", "", f"{c['mae']:.3f}",
                 f"{c['rmse']:.3f}", "", ""])
    m = d.get("meta", {})
    nr = "not recorded"
    jobs = d.get("jobs", 1)
    shared = (f"\n\nWall times: {jobs} trainings ran at once, each on an equal share of the cores, so a lone "
              "run is faster (and its sums run in another order: `make train` alone uses every core)."
              if jobs > 1 else "")
    below = sum(r["pplug"]["mae"] < c["mae"] for r in runs)
    shared = (f"\n\nPPlug's MAE is below the history-blind ceiling in **{below} of {len(runs)}** runs"
              + ("." if below == len(runs) else ": at this budget the recipe does not learn the user signal in "
                 "every seed, and a run that misses it ends worse than the ceiling, as its verdict line says.") + shared)
    missing = [dt for dt in ("float32", "bfloat16") if dt not in {r["dtype"] for r in runs}]
    if missing:
        shared += (f"\n\nNot in this file: {', '.join(missing)} runs of this recipe (the host that ran it: "
                   f"{d.get('meta', {}).get('host', 'not recorded')}).")
    cc = d.get("clean_clone")
    if cc:
        caches = cc.get("caches", "pip cache warm")
        shared += (f"\n\nFrom a fresh `git clone` ({caches}), `make train` took **{cc['total_s'] / 60:.1f} min**: "
                   f"set-up {cc['setup_s'] / 60:.1f} min + train.py {cc['train_s'] / 60:.1f} min ({cc['dtype']}, "
                   f"host {cc['host']}); PPlug MAE {cc['pplug']['mae']:.3f}, "
                   f"{'below' if cc['pplug']['mae'] < c['mae'] else 'not below'} the history-blind ceiling.")
    return (markdown_table(header, body) + shared + f"\n\nSource: `{name}`: `{m.get('command', nr)}` (code "
            f"{m.get('code_version', nr)}; host {m.get('host', nr)}; device {m.get('device', nr)}; dtype "
            f"{m.get('dtype', nr)})")


def init_reading(results: Path) -> str:
    """bench_init_reading: what the frozen LLM reads from untrained prefixes (correlations of its expected rating
    with the user's mean score, the attended past scores and the gold; the median decoding's MAE), and the floors."""
    name = "init_reading"
    if not (Path(results) / f"{name}.json").is_file():
        return "_no results file yet: run `python benchmarks/bench_init_reading.py --out ...`_"
    d = load(results, name)
    header = ["untrained prefix", "r(user's mean score)", "r(attended past scores)", "r(gold)", "MAE (median)"]
    body = [[k, f"{r['r_user_mean']:+.3f}", f"{r['r_attended_labels']:+.3f}", f"{r['r_gold']:+.3f}",
             f"{r['mae']:.3f}"] for k, r in d["rows"].items()]
    body += [[f"floor: {k}", "", "", "", f"{v:.3f}"] for k, v in d["floors_mae"].items()]
    return (markdown_table(header, body) + f"\n\n{d['n']} dev questions of the synthetic default; r is Pearson's "
            "correlation of the expected rating (softmax over 1-5) with each quantity.\n\n" + sources(results, [name]))


def attention(results: Path) -> str:
    """bench_attention: how many history items the input-aware attention reads, and how much of its mass lands
    on the past reviews of the input's sentiment, per temperature: a fresh embedder, and the `make train`
    runs of seeds 0 and 1 in bfloat16 (`bench_make_train.py`'s checkpoints)."""
    files = [(name, label) for name, label in (("attention_synthetic_fresh", "fresh"),
                                                 ("attention_synthetic_trained_s0", "seed 0 (personalizes)"),
                                                 ("attention_synthetic_trained_s1", "seed 1 (missed the signal)"))
             if (Path(results) / f"{name}.json").is_file()]
    if not files:
        return "_no results file yet: run `python benchmarks/bench_attention.py --out ...`_"
    data = [load(results, name) for name, _ in files]
    header = ["temperature τ"] + [f"{label}: {what}" for _, label in files
                                  for what in ("items (1/Σw²)", "mass on the input's sentiment")]
    temps = sorted(dict.fromkeys(t for d in data for t in d["rows"]), key=lambda t: -float(t.split()[-1]))
    body = [[t.split()[-1]] + [cell for d in data for cell in
                               ((f"{d['rows'][t]['effective_items']:.1f} of {d['rows'][t]['history_items']:.1f}",
                                 f"{d['rows'][t]['mass_on_same_sentiment']:.3f}") if t in d["rows"] else ("", ""))]
            for t in temps]
    share = data[0]["rows"][temps[0]]["same_sentiment_share"]
    gates = "".join(f" The {label} model's gate gives the attention a share g = {d['mix_gate']:.2f} of its user "
                    "vector (the rest is the history mean)." for (_, label), d in zip(files, data) if d.get("mix_gate"))
    return (markdown_table(header, body) + f"\n\nUniform attention puts {share:.3f} of its mass there (the share of "
            f"such items in a history; {data[0]['n']} dev questions).{gates}\n\n"
            + sources(results, [n for n, _ in files]))


def explain_synthetic(results: Path, name: str = "explain_synthetic") -> str:
    """bench_explain: what `pplug.explain` shows of the `make train` checkpoint over the synthetic dev users: the
    attention mass on the past reviews that carry the answer against a uniform weighting, the effective number of
    items read, and the rating with the history, with none and with the persona alone."""
    if not (Path(results) / f"{name}.json").is_file():
        return "_no results file yet: run `python benchmarks/bench_explain.py --checkpoint RUN --out ...`_"
    d = load(results, name)

    def mass(label: str, m: dict) -> list[str]:
        return [label, f"{m['mean']:.3f}", f"{m['uniform']:.3f}",
                f"{m['diff']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]", f"{100 * m['above_uniform']:.0f}%"]

    body = [mass("the past reviews scored with the gold rating", d["mass_on_gold_label"])]
    if "input_aware_mass_on_gold_label" in d:
        body.append(mass("the same, the input-aware attention alone (before the gate)",
                         d["input_aware_mass_on_gold_label"]))
    body.append(mass("the past reviews of the input's sentiment", d["mass_on_same_sentiment"]))
    table = markdown_table(["attention mass on", "explain's weights", "uniform weighting", "difference [95% CI]",
                            "questions above uniform"], body)
    e, c = d["effective_items"], d["counterfactual"]
    mv, mae, h = c["moves_with_history"], c["mae"], c["history_minus_cold_mae"]
    gate = f"; the gate gives the input-aware attention a share g = {d['gate']:.2f}" if d.get("gate") is not None else ""
    r = f", r = {mv['pearson_r']:.2f}" if mv.get("pearson_r") is not None else ""
    lines = [
        (f"Effective number of items read: exp(entropy) {e['exp_entropy']:.1f}, 1/Σw² {e['inverse_simpson']:.1f}, "
         f"of {e['history_items']:.1f} items{gate} ({d['with_history']} of {d['questions']} questions have a history)."),
        (f"Counterfactual, MAE of the expected rating: with the history {mae['history']:.3f}, with none (cold start) "
         f"{mae['cold_start']:.3f} (history minus cold start {h['diff']:+.3f} [{h['lo']:+.3f}, {h['hi']:+.3f}]), with "
         f"the persona text alone {mae['persona_only']:.3f}. The history moves the rating the way it says (the sign "
         f"of its pull: the mean score of the user's past reviews of the input's sentiment minus the cold-start "
         f"rating) in {100 * mv['agree']:.0f}% of the {mv['questions']} questions whose pull is at least "
         f"{mv['min_pull']}{r} (pull against move, all questions with a history).")]
    return table + "\n\n" + "\n\n".join(lines) + "\n\n" + sources(results, [name])


def decoding(results: Path, set_name: str, stem: str = "decoding") -> str:
    """bench_decoding: every decoding of each method, its difference to greedy and its cost per row (`stem`:
    "decoding_reward" for the run with reward-mbr, whose facet models' held-out pair accuracy follows)."""
    from pplug.lamp.stats import format_interval

    name = f"{stem}_{set_name}"
    d = load(results, name)
    # a column pair per reference the benchmark compared with: greedy always, preference for reward-mbr
    refs = [ref for ref in ("greedy", "preference")
            if any(f"minus_{ref}" in r for decs in d["methods"].values() for r in decs.values())]

    def ci(r: dict, ref: str, m: str) -> str:
        diff = r.get(f"minus_{ref}")
        return format_interval((diff[m]["mean"], diff[m]["lo"], diff[m]["hi"])) if diff else ""

    body = []
    for method, decs in d["methods"].items():
        for dec, r in decs.items():
            body.append([method, dec, f"{r['rouge1']:.3f}", f"{r['rougeL']:.3f}",
                         *(ci(r, ref, m) for ref in refs for m in ("rouge1", "rougeL")),
                         f"{r['seconds_per_row']:.3f}" if "seconds_per_row" in r else "",
                         f"{r['latency_vs_greedy']:.1f}" if "latency_vs_greedy" in r else ""])
    header = [f"{set_name} (n={d['n']}, {len(d['settings']['seeds'])} sampling seeds)", "decoding", "ROUGE-1",
              "ROUGE-L", *(f"{m} minus {ref} [95% CI]" for ref in refs for m in ("ROUGE-1", "ROUGE-L")), "s/row",
              "x greedy"]
    facets = d.get("preference_models")
    note = ("\n\nFacet models (pairwise accuracy on held-out users' pairs, pairs trained on): " + "; ".join(
        f"{f} {r['val_pair_accuracy']:.3f} ({r['pairs']} pairs)" for f, r in facets.items()) + ".") if facets else ""
    return markdown_table(header, body) + note + "\n\n" + sources(results, [name])


SERVER_RUNS = ("server_tiny_lamp3", "server_tiny_lamp7", "server_srv30_lamp3", "server_default_lamp7")


def server_load(results: Path) -> str:
    """bench_server: requests/s and latency, batched against unbatched, per model and concurrency."""
    body = []
    for name in SERVER_RUNS:
        d = load(results, name)
        what = f"{d['model']}, {d['task']}" + (f", {d['max_tokens']} tokens" if d.get("max_tokens") else "")
        for b, u in zip(d["load"]["batched"], d["load"]["unbatched"]):
            body.append([what, str(b["concurrency"]), f"{b['rps']:.2f}", f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f}",
                         f"{b['mean_batch']:.1f}", f"{u['rps']:.2f}", f"{u['p50_ms']:.0f} / {u['p99_ms']:.0f}",
                         f"{b['rps'] / u['rps']:.2f}x"])
            what = ""
    header = ["model, task", "users", "batched req/s", "p50 / p99 ms", "mean batch", "unbatched req/s",
              "p50 / p99 ms", "batched / unbatched"]
    return markdown_table(header, body) + "\n\n" + sources(results, SERVER_RUNS)


def server_soak(results: Path) -> str:
    """bench_server's soak: history written while others generate; every acknowledged item stored."""
    body, used = [], []
    for name in SERVER_RUNS:
        s = load(results, name).get("soak")
        if not s:
            continue
        used.append(name)
        d = load(results, name)
        body.append([f"{d['model']}, {d['task']}", f"{s['seconds']:.0f} s", str(s["history_added"]),
                     str(s["generations"]), str(s["add_errors"] + s["generation_errors"]),
                     str(len(s["mismatched_users"])), s["integrity_check"]])
    header = ["soak (batched server)", "length", "history items added", "generations", "errors",
              "users with a lost item", "`PRAGMA integrity_check`"]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


def store_replicas(results: Path) -> str:
    """bench_store_replicas: 1 against 2 serve replicas on one PostgreSQL store, throughput and consistency."""
    name = "store_replicas_tiny_lamp3"
    d = load(results, name)
    body = []
    for r in d["settings"]:
        body.append([str(r["replicas"]), str(r["users"]), f"{r['seconds']:.0f} s", f"{r['rps']:.2f}",
                     f"{r['add_p50_ms']:.0f} / {r['add_p99_ms']:.0f}",
                     f"{r['generate_p50_ms']:.0f} / {r['generate_p99_ms']:.0f}", str(r["history_added"]),
                     str(r["generations"]), str(r["errors"]), str(r["stale_reads"]), str(r["leaks"]),
                     str(len(r["users_with_lost_items"])), str(len(r["users_with_persona_gaps"]))])
    header = ["replicas", "users", "length", "req/s", "append p50 / p99 ms", "generate p50 / p99 ms",
              "items appended", "generations", "errors", "stale reads", "leaks", "users with a lost item",
              "users with a persona gap"]
    return markdown_table(header, body) + "\n\n" + sources(results, [name])


def reliability(results: Path) -> str:
    """bench_reliability: hostile requests refused as documented, and kill -9 faults during history uploads."""
    name = "reliability"
    d = load(results, name)
    hostile = [[backend, str(r["hostile"]["tried"]), str(r["hostile"]["refused_correctly"]),
                "; ".join(r["hostile"]["failures"]) or "-"] for backend, r in d["backends"].items()]
    keys = ("faults", "processes", "rows_acknowledged", "rows_stored", "lost", "duplicates", "half_written")
    faults = [[backend, path, "yes", *(str(r[path][k]) for k in keys)]
              for backend, r in d["backends"].items() for path in ("server", "cli")]
    if "control_without_keys" in d:
        faults.append(["sqlite", "server", "**no**", *(str(d["control_without_keys"][k]) for k in keys)])
    totals = d["totals"]
    line = (f"In all: {totals['hostile_refused_correctly']} of {totals['hostile_tried']} hostile requests refused as "
            f"documented; {totals['faults']} kill -9 faults with idempotency keys, {totals['rows_acknowledged']} "
            f"rows acknowledged, {totals['rows_stored']} stored, {totals['lost']} lost, {totals['duplicates']} "
            f"duplicated, {totals['half_written']} half-written.")
    return (markdown_table(["store", "hostile requests", "refused as documented", "failures"], hostile) + "\n\n"
            + markdown_table(["store", "uploads through", "idempotency keys", "kill -9 faults", "processes",
                              "rows acknowledged", "rows stored", "lost", "duplicates", "half-written"], faults)
            + "\n\n" + line + "\n\n" + sources(results, [name]))


def history_mix_heldout(results: Path) -> str:
    """bench_history_mix: the held-out training questions' NLL of the gold rating for each k, per method."""
    name = "real_lamp_music_history_mix_cpu"
    d = load(results, name)
    methods = list(d["heldout"])
    ks = sorted(d["heldout"][methods[0]]["nll"], key=lambda k: -1.0 if k == "None" else float(k))
    body = []
    for k in ks:
        line = ["model alone" if k == "None" else f"k = {float(k):g}"]
        for m in methods:
            h = d["heldout"][m]
            mark = " (chosen)" if k != "None" and float(k) == d["chosen_k"][m] else ""
            line.append(f"{h['nll'][k]:.3f}{mark}")
        p = d["heldout"]["pplug"]["metrics"][k] if "pplug" in d["heldout"] else None
        if p:
            line += [fmt_value(p["mae_median"]), fmt_value(p["rmse_expected"])]
        body.append(line)
    header = ["mix weight k", *[f"{m} NLL" for m in methods], "pplug MAE (median)", "pplug RMSE (expected)"]
    return markdown_table(header, body) + "\n\n" + sources(results, [name])


def chosen_params(key: str) -> str:
    """A bench_history_mix parameter key ("tau=0.05 T=2.0 k=4.0") in words: "kNN temperature 0.05, LLM temperature
    2.0, k 4.0"."""
    words = {"tau": "kNN temperature", "T": "LLM temperature", "k": "k"}
    return ", ".join(f"{words[name]} {value}" for name, value in (part.split("=") for part in key.split()))


def history_priors_heldout(results: Path, names: Sequence[str], captions: Sequence[str],
                           metric: tuple[str, str] = ("accuracy", "accuracy ↑")) -> str:
    """bench_history_mix --priors: each row's parameters chosen on held-out training questions (the gold label's
    mean NLL, pooled over seeds), with that NLL and the held-out `metric` (its key, its header), one column group
    per results file."""
    files = [load(results, n) for n in names]
    rows = list(dict.fromkeys(v for d in files for v in d["chosen"]))  # a row one run did not score: blank there
    body = []
    for v in rows:
        line = [v]
        for d in files:
            h = d["heldout_rows"].get(v)
            if h is None:
                line += ["not scored", "", ""]
                continue
            key = min(h["nll"], key=h["nll"].get)  # what the benchmark chose: the lowest held-out NLL
            line += [chosen_params(key), f"{h['nll'][key]:.3f}", fmt_value(h["metrics"][key][metric[0]])]
        body.append(line)
    header = ["row"] + [f"{c}: {what}" for c in captions for what in ("chosen", "NLL ↓", metric[1])]
    return markdown_table(header, body) + "\n\n" + sources(results, list(names))


def training_time(results: Path, name: str, labels: dict[str, str] | None = None) -> str:
    """One line: each method's training wall time a seed, the range over seeds, as bench_history_mix read it from
    the runs it scored (`train_seconds`)."""
    d = load(results, name)
    parts = []
    for m, by_seed in d["train_seconds"].items():
        s = sorted(v for v in by_seed.values() if v is not None)
        if s:
            span = f"{s[0]:,.0f} s" if len(s) == 1 or round(s[0]) == round(s[-1]) else f"{s[0]:,.0f} to {s[-1]:,.0f} s"
            parts.append(f"{(labels or {}).get(m, m)} {span}")
    return f"Training wall time a seed: {', '.join(parts)}.\n\n" + sources(results, [name])


def attention_weight_choice(results: Path, runs: Sequence[tuple[float, str]], row: str, scored: str) -> str:
    """The attention term's weight: per (weight, bench_history_mix file), `row`'s parameters chosen on held-out
    training questions, that held-out NLL and accuracy, and the scored split's accuracy over seeds."""
    body = []
    for weight, name in runs:
        d = load(results, name)
        h = d["heldout_rows"][row]
        key = min(h["nll"], key=h["nll"].get)
        (split,) = summaries(d).values()  # bench_history_mix scores one split
        cell = split["cells"][row]["accuracy"]
        body.append([f"{weight:g}", chosen_params(key), f"{h['nll'][key]:.3f}",
                     fmt_value(h["metrics"][key]["accuracy"]), fmt_value(list(cell["values"].values()))])
    header = ["attention_label_loss_weight", "chosen", "held-out NLL ↓", "held-out accuracy ↑",
              f"{scored} accuracy ↑"]
    return markdown_table(header, body) + "\n\n" + sources(results, [n for _, n in runs])


RATING_FLOOR_CHECKS = (("median", "mae", "floor: always-5"), ("expected", "rmse", "floor: user mean rating"))
"""(decoding, metric, floor) of each shift check: MAE of the median against always-5, RMSE of the expected rating
against the user's mean."""


def rating_shift(results: Path, name: str = "rating_shift") -> str:
    """bench_rating_shift: each variant's decodings on the shifted users and in-domain, against always-5 (MAE of
    the median) and the user's mean rating (RMSE of the expected rating), paired intervals over questions."""
    if not (Path(results) / f"{name}.json").is_file():
        return "_no results file yet: run `python benchmarks/bench_rating_shift.py`_"
    d = load(results, name)
    out = []
    labels = {"pplug": "model alone", "pplug+mix": "+ the user's label shares (k on held-out)",
              "pplug+mix+cal": "+ shares + label offsets (held-out fit)",
              "pplug+mix+prior": "+ shares + label shift (the scored users' history shares)"}
    for set_name, s in d["sets"].items():
        body = []
        for variant, v in s["variants"].items():
            for row, label in labels.items():
                line = [f"{variant} ({len(v['train_seconds'])} seeds)" if row == "pplug" else "", label]
                for split in ("dev", "indomain"):
                    if split not in v:
                        line += ["", ""]
                        continue
                    summ = v[split]["dev"]
                    for dec, metric, floor in RATING_FLOOR_CHECKS:
                        key = f"{row} [{dec}]"
                        if key not in summ["cells"]:
                            line.append("")
                            continue
                        cell = summ["cells"][key][metric]
                        c = summ["comparisons"].get(key, {}).get(floor, {}).get(metric)
                        verdict = "" if c is None else f" ({c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}])"
                        line.append(f"{fmt_value(list(cell['values'].values()))}{verdict}")
                body.append(line)
        floors = []
        for split in ("dev", "indomain"):
            summ = next(iter(s["variants"].values())).get(split, {}).get("dev")
            if summ:
                floors.append(f"{'shifted' if split == 'dev' else 'in-domain'} (n={summ['n']}): always-5 MAE "
                              f"{summ['cells']['floor: always-5']['mae']['mean']:.3f}, user's mean RMSE "
                              f"{summ['cells']['floor: user mean rating']['rmse']['mean']:.3f}")
        header = ["variant", "decoding", "shifted MAE (median) (- always-5)", "shifted RMSE (expected) (- user mean)",
                  "in-domain MAE (- always-5)", "in-domain RMSE (- user mean)"]
        out.append(f"**{set_name}**: {s['note']}. Floors: {'; '.join(floors)}.\n\n" + markdown_table(header, body))
    return "\n\n".join(out) + ("\n\nEach cell: mean ± sd over seeds, then the paired bootstrap 95% interval of the row "
                              "minus the floor (seeds pooled per question; below 0 is better).\n\n") + sources(results, [name])


RATINGS_ANY_DOMAIN = (  # (label, results file, rating_shift split or None, the row as that file names it)
    ("music_ratings dev, in-domain", "ablation_music_ratings_label_tokens", None, "pplug label-tokens"),
    ("music_topic_shift: shifted users", "rating_shift_music_label_tokens", "dev", "pplug+mix"),
    ("music_topic_shift: fitted users' dev", "rating_shift_music_label_tokens", "indomain", "pplug+mix"),
    ("synthetic shift: another product domain", "rating_shift_synth_label_tokens", "dev", "pplug+mix"),
    ("synthetic shift: the same users unshifted", "rating_shift_synth_label_tokens", "indomain", "pplug+mix"),
)
"""The rows of the `ratings_any_domain` table: where configs/real/ratings_any_domain.yaml was scored."""


def ratings_any_domain(results: Path) -> str:
    """configs/real/ratings_any_domain.yaml in-domain and under each shift check: MAE (median) against always-5 and
    RMSE (expected) against the user's mean, with the paired intervals (3 seeds, seeds pooled per question)."""
    body, used = [], []
    for label, name, split, row in RATINGS_ANY_DOMAIN:
        if not (Path(results) / f"{name}.json").is_file():
            body.append([label, "_no results file yet_", "", "", ""])
            continue
        d = load(results, name)
        if split is None:
            summ = summaries(d)["dev"]
        else:
            ((_, s),) = d["sets"].items()
            summ = s["variants"]["label-tokens"][split]["dev"]
        used.append(name)
        line = [f"{label} (n={summ['n']})"]
        for dec, metric, floor in RATING_FLOOR_CHECKS:
            key = row_key(row, dec)
            line.append(fmt_value(list(summ["cells"][key][metric]["values"].values())))
            c = summ["comparisons"].get(key, {}).get(floor, {}).get(metric)
            line.append(fmt_interval(metric, c) if c else "")
        body.append(line)
    header = ["configs/real/ratings_any_domain.yaml, 3 seeds", "MAE (median) ↓", "minus always 5",
              "RMSE (expected) ↓", "minus the user's mean"]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


def serve_demo(results: Path) -> str:
    """bench_serve_demo: the docs' users (opposite histories) on one review, per checkpoint: answer and P(label)."""
    name = "serve_demo"
    d = load(results, name)
    labels = list(next(iter(d["runs"][0]["users"].values()))["label_probs"])
    body = []
    for run in d["runs"]:
        for i, (user, r) in enumerate(run["users"].items()):
            note = "cold start, no history" if r["cold_start"] else f"{r['history_items']} history items"
            body.append([f"`{run['checkpoint']}`" if i == 0 else "", user, r["output"],
                         *(f"{r['label_probs'][lab]:.3f}" for lab in labels), note])
    header = ["checkpoint", "user", "answer", *(f"P({lab})" for lab in labels), ""]
    agree = sum(float(r["users"]["alice"]["output"]) > float(r["users"]["bob"]["output"]) for r in d["runs"])
    note = (f"Alice's answer is above bob's for {agree} of {len(d['runs'])} checkpoints. The review: "
            f"\"{d['review']}\"")
    return markdown_table(header, body) + "\n\n" + note + "\n\n" + sources(results, [name])


def lora_hub_cost(results: Path) -> str:
    """bench_lora_hub_cost: ms per row with no adapter, one shared adapter and per-row mixed adapters."""
    name = "lora_hub_cost"
    if not (Path(results) / f"{name}.json").is_file():
        return "_no results file yet: run `python benchmarks/bench_lora_hub_cost.py`_"
    d = load(results, name)
    body = []
    for kind in ("scoring", "generation"):
        per = d["seconds_per_row"][kind]
        for b in sorted(per["none"], key=int):
            none, shared, mixed = (per[s][b] * 1000 for s in ("none", "shared", "mixed"))
            what = "label scoring (1..5)" if kind == "scoring" else f"generation ({d['new_tokens']} tokens)"
            body.append([what if b == min(per["none"], key=int) else "", b, f"{none:.1f}", f"{shared:.1f}",
                         f"{mixed:.1f}", f"{shared / none:.2f}x", f"{mixed / shared:.2f}x"])
    header = ["call", "batch", "no adapter ms/row", "shared adapter ms/row",
              f"mixed ({d['adapters']} adapters) ms/row", "shared / none", "mixed / shared"]
    one = d["adapter_bytes"]["general"]
    rss = d["rss_bytes"]
    mib = 2 ** 20
    note = (f"One adapter (r = {d['r']}) holds {one / mib:.2f} MiB of LoRA tensors; the hub's "
            f"{len(d['adapter_bytes'])} adapters {sum(d['adapter_bytes'].values()) / mib:.1f} MiB. Process RSS: "
            f"{rss['after_llm'] / mib:.0f} MiB with the first LLM loaded, {rss['after_second_llm'] / mib:.0f} MiB "
            f"with the second (the one the hub attaches to), {rss['after_hub'] / mib:.0f} MiB with the hub, "
            f"{rss['peak'] / mib:.0f} MiB at peak while running. Median of {d['repeats']} interleaved calls, "
            f"{d['threads']} threads.")
    asked = re.search(r"--batches((?: \d+)+)", d["meta"].get("command", ""))
    done = d["seconds_per_row"]["scoring"]["none"]
    missing = [b for b in (asked.group(1).split() if asked else []) if b not in done]
    if missing:
        note += (f" Batch {', '.join(missing)} asked for but not measured: the run was stopped at its time limit "
                 f"(the sizes above took {d['seconds']:.0f} s).")
    return markdown_table(header, body) + "\n\n" + note + "\n\n" + sources(results, [name])


LORA_HUB_SLICES = ("cold-start", "time-shift", "time-shift-dev")
"""The shift slices bench_lora_hub.py may score besides dev, in column order (one column each where present)."""


def lora_hub_files(results: Path) -> list[str]:
    """The results files of bench_lora_hub.py in `results` (lora_hub_<set>.json; not lora_hub_cost.json)."""
    return sorted(p.stem for p in Path(results).glob("lora_hub_*.json")
                  if load_file(p).get("benchmark") == "bench_lora_hub")


def lora_hub_main_cols(task: "TaskSpec", name: str) -> list[Col]:
    """The two dev columns of a bench_lora_hub results file: MAE (median) and RMSE (expected) for ratings,
    ROUGE-1 and ROUGE-L for generation."""
    if task.is_rating:
        return [Col("MAE (median) ↓", "mae", "median", file=name), Col("RMSE (expected) ↓", "rmse", "expected",
                                                                      file=name)]
    return [Col("ROUGE-1 ↑", "rouge1", file=name), Col("ROUGE-L ↑", "rougeL", file=name)]


HUB_ROWS = ("lora-hub", "pplug+lora-hub")


def lora_hub_retrained(d: dict) -> bool:
    """Whether a bench_lora_hub results file trained PPlug and the hub on the fit split (`--slices time-shift`)."""
    return "time-shift" in d["settings"].get("slices", [])


def lora_hub_summary(results: Path) -> str:
    """bench_lora_hub across sets: per set, the main dev metric of `none`, `pplug`, `lora-hub`, `pplug+lora-hub` and
    the no-model floors, the paired intervals of each hub row minus `pplug` and of `lora-hub` minus `none`, and the
    verdicts of both hub rows minus `pplug` on each shift slice, a retrained time-shift file's included (the detail
    per set: `lora_hub`)."""
    from pplug.core.tasks import get_task

    names = lora_hub_files(results)
    if not names:
        return "_no results file yet: run `python benchmarks/bench_lora_hub.py --set SET`_"
    by_set: dict[str, list[str]] = {}
    for name in names:
        ((set_name, _),) = load(results, name)["sets"].items()
        by_set.setdefault(set_name, []).append(name)
    body, used = [], []
    for set_name, files in by_set.items():
        files.sort(key=lambda n: lora_hub_retrained(load(results, n)))  # whole-train-split file first: its dev
        e = load(results, files[0])["sets"][set_name]
        col = lora_hub_main_cols(get_task(e["task"]), files[0])[0]
        n_seeds = len(e["seeds"])
        label = f"{set_name} (n={e['slices']['dev']['n']}, {n_seeds} seed{'s' if n_seeds > 1 else ''}), {col.header}"
        floors = [r for r in e["slices"]["dev"]["cells"] if r.startswith("floor:")]
        shifts: dict[str, str] = {}  # slice -> its verdicts, from the first file that scored it
        for name in files:
            slices = load(results, name)["sets"][set_name]["slices"]
            for key in LORA_HUB_SLICES:
                if key in slices and key not in shifts:
                    c = Col(col.header, col.metric, col.dec, key, name)
                    words = [_interval(results, Row("pplug", "pplug", ref=ref), c, used).split(" ")[-1]
                             for ref in HUB_ROWS]
                    shifts[key] = f"{key} (n={slices[key]['n']}) {' / '.join(words)}"
        body.append([label, *(_cell(results, Row(m, m), col)[1] for m in ("none", "pplug", *HUB_ROWS)),
                     "; ".join(f"{f.removeprefix('floor: ')} {_cell(results, Row(f, f), col)[1]}" for f in floors),
                     *(_interval(results, Row(other, other, ref=ref), col, used)
                       for ref, other in (("lora-hub", "pplug"), ("pplug+lora-hub", "pplug"), ("lora-hub", "none"))),
                     "; ".join(shifts.values())])
    header = ["dev set, metric", "none", "pplug", "lora-hub", "pplug+lora-hub", "floors", "lora-hub minus pplug",
              "pplug+lora-hub minus pplug", "lora-hub minus none",
              "shift slices: lora-hub / pplug+lora-hub minus pplug"]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


def lora_hub(results: Path) -> str:
    """bench_lora_hub: per results file, the rows (`none`, `pplug`, `lora-hub`, `pplug+lora-hub`, floors) on dev and
    each shift slice; the paired intervals of each hub row minus `pplug`, `none` and the floors; the OPPU users'
    questions with every row restricted to them and OPPU minus each; a verdict line that says where the hub does
    not help; and the training seconds per seed."""
    from pplug.core.tasks import get_task
    from pplug.lamp.stats import interval_verdict, mean_sd

    names = lora_hub_files(results)
    if not names:
        return "_no results file yet: run `python benchmarks/bench_lora_hub.py --set SET`_"
    parts: list[str] = []
    for name in names:
        d = load(results, name)
        ((set_name, e),) = d["sets"].items()
        task, slices = get_task(e["task"]), e["slices"]
        dev = slices["dev"]
        main = lora_hub_main_cols(task, name)
        cols = list(main)
        for key in LORA_HUB_SLICES:
            if key in slices:
                cols += [Col(f"{key} {c.header.split(' (')[0].rstrip(' ↑↓')} (n={slices[key]['n']})", c.metric,
                             c.dec, key, name) for c in main[:1]]
        floors = [Row(r, r) for r in dev["cells"] if r.startswith("floor:")]
        rows = [FROZEN_LLM, Row("pplug", "pplug"), Row("lora-hub", "**lora-hub**"),
                Row("pplug+lora-hub", "**pplug+lora-hub**"), *floors]
        used: list[str] = [name]
        seeds = e["seeds"]
        body = [[r.label, *(_cell(results, r, c)[1] for c in cols)] for r in rows]
        n_seeds = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        trained = ", PPlug and the hub trained on the fit split" if lora_hub_retrained(d) else ""
        out = [markdown_table([f"{set_name} (dev n={dev['n']}), {n_seeds}{trained}", *(c.header for c in cols)],
                              body)]
        pairs = [("pplug+lora-hub", "pplug"), ("pplug+lora-hub", "none"), ("lora-hub", "pplug"), ("lora-hub", "none"),
                 ("pplug", "none"), *((ref, f.key) for ref in ("pplug+lora-hub", "lora-hub", "pplug") for f in floors)]
        body = [[f"{ref} minus {other}", *(_interval(results, Row(other, other, ref=ref), c, used) for c in cols)]
                for ref, other in pairs]
        out.append(markdown_table(["paired 95% interval", *(c.header.replace(f" (n={slices[c.slice]['n']})", "")
                                                             for c in cols)], body))
        said, helps = [], False
        for ref, other in (("lora-hub", "none"), ("lora-hub", "pplug"), ("pplug+lora-hub", "pplug")):
            words = []
            for c in main:
                comp = dev["comparisons"].get(row_key(ref, c.dec), {}).get(row_key(other, c.dec), {}).get(c.metric)
                if comp:
                    v = interval_verdict(c.metric, (comp["diff"], comp["lo"], comp["hi"])).split(" ")[0]
                    words.append(f"{c.header.split(' (')[0].rstrip(' ↑↓')} {v}")
                    helps = helps or v == "leads"
            if words:
                said.append(f"`{ref}` minus `{other}`: {', '.join(words)}")
        verdict = (f"On dev, {'; '.join(said)}. "
                   + ("The hub does not help at this model size and budget: no dev interval excludes 0 in its favour."
                      if not helps else "Leads: the interval excludes 0 in the hub's favour; tie: no measurable "
                                        "effect at this size and budget; behind: worse."))
        out.append(verdict)
        if "oppu" in slices:
            o = slices["oppu"]
            o_cols = [Col(c.header, c.metric, c.dec, "oppu", name) for c in main]
            o_rows = [Row("oppu", "**OPPU** (a LoRA per user)"), *rows]
            body = [[r.label, *(_cell(results, r, c)[1] for c in o_cols),
                     *(_interval(results, Row(r.key, r.label, ref="oppu"), c, used) if r.key != "oppu" else ""
                       for c in o_cols)] for r in o_rows]
            header = [f"OPPU users' dev questions (n={o['n']}, {len(o.get('users', {}))} users)",
                      *(c.header for c in o_cols), *(f"OPPU minus row: {c.header.rstrip(' ↑↓')}" for c in o_cols)]
            out.append(markdown_table(header, body))
        secs = []
        for what, label in (("pplug", "PPlug"), ("hub", "the hub"), ("oppu", "OPPU")):
            vals = [v for v in e["train_seconds"].get(what, {}).values() if v is not None]
            if vals:
                m, sd = mean_sd(vals)
                secs.append(f"{label} {m:.0f}" + (f" ± {sd:.0f}" if sd is not None else "") + " s")
        s = d["settings"]
        retr = list(e.get("retrieval", {}).values())
        cold = (f"; {retr[0]['cold_start']} of the {dev['n']} dev questions' users are cold start (the general "
                f"adapter)" if retr else "")
        pplug = (f"PPlug reused from `{s['pplug_checkpoints']}`" if s.get("pplug_checkpoints")
                 else f"PPlug {s['max_steps']} steps")
        oppu = f", OPPU <= {s['oppu_steps']} steps per user" if s.get("oppu_users") else ""
        out.append(f"Training per seed: {', '.join(secs)} (K = {s['k']} groups, <= {s['hub_steps']} steps per hub "
                   f"adapter, {pplug}{oppu}, batch {s['batch_size']}, "
                   f"{s['max_train']} training questions){cold}.")
        out.append(sources(results, used))
        parts.append("\n\n".join(out))
    return "\n\n".join(parts)


# --- the folders of docs/architecture.md -------------------------------------------------------------

def folder_layers(package: Path = ROOT / "pplug") -> dict[str, tuple[str, ...]]:
    """Each folder of pplug/ -> the folders its `__init__` docstring says it may import ("May import: a, b.";
    "nothing of pplug" and "every folder" are the two ends), in the order of the data flow (fewest first)."""
    import ast

    declared = {}
    for init in sorted(Path(package).glob("*/__init__.py")):
        text = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        line = next((ln for ln in text.splitlines() if ln.startswith("May import:")), None)
        if line is None:
            raise ValueError(f"{init}: the docstring has no 'May import:' line")
        declared[init.parent.name] = line[len("May import:"):].strip().rstrip(".")
    every = tuple(declared)
    layers = {name: (() if spec == "nothing of pplug" else every if spec == "every folder"
                     else tuple(n.strip() for n in spec.split(","))) for name, spec in declared.items()}
    return {name: tuple(n for n in deps if n != name)
            for name, deps in sorted(layers.items(), key=lambda kv: (len(kv[1]), kv[0]))}


def modules(results: Path, package: Path = ROOT / "pplug") -> str:
    """The folders of pplug/, each with its own docstring and what it may import, then every file in it with
    the first paragraph of the file's docstring."""
    import ast

    def doc(path: Path, first_only: bool = True) -> str:
        text = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        text = text.split("\n\n")[0] if first_only else text.split("\nMay import:")[0]
        return " ".join(text.split()).replace("|", "\\|")

    layers = folder_layers(package)
    rows = [[f"`{name}/`", doc(Path(package) / name / "__init__.py", first_only=False),
             "nothing" if not deps else "every folder" if len(deps) == len(layers) - 1 else ", ".join(deps)]
            for name, deps in layers.items()]
    parts = ["**The folders**, from the ground up (a folder imports only those before it):\n\n"
             + markdown_table(["folder", "what it owns", "may import"], rows)]
    for name in layers:
        files = [f for f in sorted((Path(package) / name).glob("*.py")) if not f.stem.startswith("__")]
        parts.append(f"**`pplug/{name}/`**\n\n" + markdown_table(
            ["file", "what it owns"], [[f"`{f.name}`", doc(f)] for f in files]))
    top = [f for f in sorted(Path(package).glob("*.py"))]
    parts.append("**`pplug/` itself**\n\n" + markdown_table(["file", "what it owns"],
                                                              [[f"`{f.name}`", doc(f)] for f in top]))
    return "\n\n".join(parts)


CLIP_ROWS = (  # (row, label, results file without clipping, with clipping, the seeds both have)
    ("prompt-tuned", "enron_subjects, prompt-tuned", "real_lamp_enron_seeds_cpu", "real_lamp_enron_clip_cpu", None),
    ("retrieval", "enron_subjects, retrieval", "real_lamp_enron_seeds_cpu", "real_lamp_enron_clip_cpu", None),
    ("pplug", "enron_subjects, pplug", "real_lamp_enron_seeds_cpu", "real_lamp_enron_clip_cpu", None),
    ("pplug", "acl_titles, pplug (seeds 0 and 1)", "real_lamp_acl_seeds_cpu", "real_lamp_acl_clip_2seeds_cpu",
     ("seed0", "seed1")))


def ablation_clipping(results: Path) -> str:
    """Gradient clipping at 1.0: each method without and with it, on the same seeds and questions."""
    body, used = [], []
    for key, label, plain, clipped, seeds in CLIP_ROWS:
        line = [label]
        for name in (plain, clipped):
            _, text = _cell(results, Row(key, label, name, seeds), Col("", "rouge1"))
            used.append(name)
            line.append(text)
        body.append(line)
    n = summaries(load(results, CLIP_ROWS[0][2]))["dev"]["n"]
    return (markdown_table([f"dev ROUGE-1 (n={n})", "no clipping", "gradient norm clipped at 1.0"], body) + "\n\n"
            + sources(results, used))


# --- the tables ---------------------------------------------------------------------------------------


# more results files the tables read (benchmarks/results/<name>.json; the figures' ones are in results_data)
RATING_LOSS, STEPS_200 = "ablation_music_ratings_rating_loss_cpu", "ablation_music_ratings_200steps_cpu"
LABEL_TOKENS = "ablation_music_ratings_label_tokens"
INPUT_TOKEN, INPUT_TOKEN_FROZEN = "real_lamp_music_input_token_cpu", "real_lamp_music_input_token_frozen_cpu"
SYNTH_TOKEN, SYNTH_TOKEN_FROZEN = "synth_shift_input_token_cpu", "synth_shift_input_token_frozen_cpu"


def _with_file(cols: Sequence[Col], file: str, slice_: str | None = None) -> list[Col]:
    return [Col(c.header, c.metric, c.dec, slice_ or c.slice, file, c.seeds) for c in cols]


def _generation_rows(first_words: str) -> tuple[Row, ...]:
    return (*METHODS, Row(f"floor: first {first_words} words", f"floor: first {first_words} words of the input"))


def _without(rows: Sequence[Row], key: str) -> list[Row]:
    return [r for r in rows if r.key != key]


def _no_pearson(cols: Sequence[Col]) -> list[Col]:
    return [c for c in cols if c.metric != "pearson_r"]


MUSIC_COLS = [*_with_file([MAE, RMSE, PEARSON], MUSIC), *_with_file([COLD_MAE, COLD_RMSE], MUSIC)]
GPU_COLS = [*_with_file([MAE, RMSE, PEARSON], GPU),
            *_with_file([COLD_MAE, COLD_RMSE], "real_lamp_music_gpu_coldstart"),
            *_with_file([Col("time-shift MAE (n={n})", "mae", "median"), Col("time-shift RMSE", "rmse", "expected")],
                        "real_lamp_music_gpu_timeshift", "time-shift")]
ACL_COLS = [*_with_file([R1, RL], ACL), Col("cold-start ROUGE-1 (n={n})", "rouge1", slice="cold-start", file=ACL),
            Col("time-shift-dev ROUGE-1 (n={n})", "rouge1", slice="time-shift-dev",
                file="real_lamp_acl_timeshift_cpu")]
ENRON_COLS = [*_with_file([R1, RL], ENRON), Col("cold-start ROUGE-1 (n={n})", "rouge1", slice="cold-start",
                                                file="real_lamp_enron_clip_coldstart_cpu")]
SYNTH_RECIPE_COLS = [*_with_file([Col("PPlug as published: MAE", "mae", "median"), Col("RMSE", "rmse", "expected")],
                                 SYNTH_PUBLISHED),
                     *_with_file([Col("the rating recipe: MAE", "mae", "median"), Col("RMSE", "rmse", "expected")],
                                 SYNTH)]


def _seed_col(header: str, file: str, seed: int) -> Col:
    return Col(header, "rouge1", file=file, seeds=(f"seed{seed}",))


def choice_prefill(results: Path) -> str:
    """`bench_choice_prefill.py`: a multi-token label set scored with one prefill per row against one full forward
    per row and label, on the same prompts."""
    d = load(results, "choice_prefill")
    body = [[what, f"{sec:.2f}"] for what, sec in d["seconds"].items()]
    body.append(["ratio", f"{d['ratio']:.1f}x"])
    caption = (f"{d['rows']} questions x {d['labels']} labels ({min(d['label_tokens'])}-{max(d['label_tokens'])} "
               f"tokens), median s of {d['repeats']}")
    return (markdown_table([caption, "seconds"], body) + f"\n\nLargest difference of the scores: "
            f"{d['max_abs_diff']:.1e}.\n\n" + sources(results, ["choice_prefill"]))


def eval_prefill(results: Path, name: str = "eval_prefill") -> str:
    """`bench_eval_prefill.py`: one evaluation of three methods x three decodings, with and without the shared prefill."""
    d = load(results, name)
    prefix = d["seconds"]["prefix"]["median"]
    order = ["prefix", "after_prompt, each method prefills", "after_prompt, shared prefill"]
    body = [[setting, f"{r['median']:.1f}", f"{prefix / r['median']:.1f}x"]
            for setting, r in sorted(d["seconds"].items(), key=lambda kv: order.index(kv[0]))]
    caption = (f"{d['questions']} {d['task']} dev questions x {len(d['methods'])} methods ({', '.join(d['methods'])}) "
               f"x {len(d['decodings'])} decodings, median s of {d['repeats']}")
    p = d["prefill"]
    return (markdown_table([caption, "seconds", "cheaper than prefix"], body)
            + f"\n\nWith the shared prefill {p['prompts_prefilled']} prompts were prefilled and read again "
            f"{p['prompts_reused']} times; the largest difference of any metric from the unshared run: "
            f"{d['max_metric_diff_shared_vs_unshared']:.1e}.\n\n" + sources(results, [name]))


def prefill_cost(results: Path, name: str = "prefill_cost") -> str:
    """`bench_prefill.py`: training examples per second with history-drop copies, and scoring one item for many
    users, the soft prompt in front (`prefix`) against after the prompt with a shared prefill, per dtype."""
    d = load(results, name)
    s = d["settings"]

    def setting_order(setting: str) -> tuple:  # "prefix k=1" first, then by placement and copies
        placement, _, k = setting.partition(" k=")
        return placement != "prefix", int(k)

    parts = []
    for dtype in sorted(d["train"], key=lambda t: t != "float32"):
        train = d["train"][dtype]
        body = [[setting, str(r["rows"]), f"{r['seconds']:.2f}", f"{r['examples_per_s']:.1f}",
                 f"{r['cheaper_per_example_than_prefix']:.1f}x", f"{r['peak_mb_over_model']:.0f}"]
                for setting, r in sorted(train.items(), key=lambda kv: setting_order(kv[0]))]
        parts.append(f"Training, {dtype} ({s['batch']} questions a step, prompts of at most {s['max_input_tokens']} "
                     f"tokens, {next(iter(train.values()))['prompt_tokens']:.0f} on average; median of "
                     f"{s['repeats']} steps):\n\n" + markdown_table(
                         ["setting (k = copies per question)", "rows", "s / step", "examples / s",
                          "cheaper per example than prefix k=1", "peak MB over the loaded model"], body))
        score = d["score"][dtype]
        body = [[users.split()[0], f"{r['prefix']['seconds']:.3f}", f"{r['after_prompt']['seconds']:.3f}",
                 f"{r['cheaper_than_prefix']:.1f}x"] for users, r in sorted(score.items(), key=lambda kv: int(
                     kv[0].split()[0]))]
        parts.append(f"Scoring one item for many users, {dtype} (the prefix's rows {s['score_batch']} a pass, "
                     f"the after-prompt rows in one call):\n\n" + markdown_table(
                         ["users", "prefix s", "after_prompt s", "after_prompt cheaper by"], body))
    parts.append(sources(results, [name]))
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Placement:
    """One real set's placement ablation (`bench_ablation.py --variants base after-prompt ...`, 3 seeds): the
    soft prompt in front (`base`) against after the prompt at equal steps and at equal wall time."""

    file: str
    caption: str
    cols: tuple[Col, ...]
    variants: tuple[Row, ...]
    """`pplug base` first: every other variant is compared with it."""
    versus: str | None
    """The variant compared with the frozen LLM and every floor in the file (None: no such comparison)."""
    load: str
    """How the trainings shared the cores (their wall times are only comparable under the same load)."""
    output: str = "output"
    """What the set's users write (the nearest-past-output floor's label)."""


def _after(steps: int, what: str = "equal wall time", copies: str = "") -> str:
    return f"after the prompt{copies}, {steps} steps ({what})"


IN_FRONT = "soft prompt in front (the recipe), 100 steps"


def _placement(set_name: str, cols: tuple[Col, ...], equal_wall: str, steps: int, load: str,
               output: str = "output") -> Placement:
    """A set's ablation of three variants: in front, after the prompt at equal steps, and after the prompt for
    the `steps` of variant `equal_wall` that take the wall time of the 100 in front."""
    return Placement(f"ablation_{set_name}_placement", f"{set_name} dev (n={{n}}), 3 seeds, float32", cols,
                     (Row("pplug base", IN_FRONT), Row("pplug after-prompt", _after(100, "equal steps")),
                      Row(f"pplug {equal_wall}", _after(steps))), f"pplug {equal_wall}", load, output)
SIDE_BY_SIDE = ("one thread each, 2 to 4 trainings sharing the 2 cores, so upper bounds; the equal-wall steps come "
                "from seed 0's 100 steps in each placement, measured under the same load")
PLACEMENTS = {
    "music": Placement(
        "ablation_music_ratings_placement", "music_ratings dev (n={n}), 3 seeds, float32", (MAE, RMSE),
        (Row("pplug base", "soft prompt in front (the rating recipe), 100 steps"),
         Row("pplug after-prompt", _after(100, "equal steps")),
         Row("pplug after-prompt-copies-10", _after(100, "equal steps", ", 10 history-drop copies")),
         Row("pplug after-prompt-copies-10-equal-wall", _after(145, copies=", 10 copies"))), None,
        "3 seeds side by side on 2 cores, one thread each, so these compare variants with each other, not with a "
        "lone run"),
    "enron": _placement(
        "enron_subjects", (R1, RL), "after-prompt-equal-wall", 230,
        "one thread each, 2 to 4 trainings sharing the 2 cores, so upper bounds; the 230 steps come from seeds 0 "
        "and 1 at 100 steps, which ran under the same load: 1137-1144 s in front, 494-497 s after the prompt",
        "subject"),
    "acl": Placement(
        "ablation_acl_titles_placement", "acl_titles dev (n={n}), 3 seeds, float32", (R1, RL),
        (Row("pplug base", IN_FRONT), Row("pplug after-prompt", _after(100, "equal steps")),
         Row("pplug after-prompt-equal-wall-titles", _after(179)),
         Row("pplug after-prompt-equal-wall-long-targets", _after(210, "about 1.2 times the wall time"))),
        "pplug after-prompt-equal-wall-titles",
        "one thread each, 2 to 4 processes sharing the 2 cores, so upper bounds (seed 0 in front shared them with 3 "
        "others); the 210 steps were estimated from the positions a step runs in each placement, then seed 1's 100 "
        "steps in each placement, under the same load, took 636.6 s in front and 355.5 s after the prompt: 179 steps "
        "take the wall of 100 in front", "title"),
    "news_headlines": _placement("news_headlines", (R1, RL), "after-prompt-equal-wall-headlines", 117, SIDE_BY_SIDE,
                                 "headline"),
    "news_categories": _placement("news_categories", (ACCURACY,), "after-prompt-equal-wall-categories", 147,
                                  SIDE_BY_SIDE),
}
"""docs/results.md's placement ablations, one per real set: `ablation_placement_<key>{,_intervals,_training}`."""


def _beside(results: Path, p: Placement) -> list[Row]:
    """The frozen LLM and every floor the ablation scored beside the variants."""
    rows = summaries(load(results, p.file))["dev"]["cells"]
    floors = [Row(k, k.replace("user's nearest past title", f"the {p.output} of the user's most similar past item"))
              for k in rows if k.startswith("floor: ")]
    return ([FROZEN_LLM] if any(k.startswith("none") for k in rows) else []) + floors


def placement_table(results: Path, p: Placement) -> str:
    return cells_table(results, p.caption, (*p.variants, *_beside(results, p)), _with_file(p.cols, p.file))


def placement_intervals(results: Path, p: Placement) -> str:
    """Each variant minus the soft prompt in front, then `p.versus` minus the frozen LLM and each floor."""
    label = next(r.label for r in p.variants if r.key == p.versus) if p.versus else ""
    rows = [Row("pplug base", f"{r.label} minus in front", ref=r.key) for r in p.variants[1:]]
    rows += [Row(o.key, f"{label} minus {o.label}", ref=p.versus) for o in _beside(results, p)] if p.versus else []
    return interval_table(results, "row minus what it is compared with", rows, _with_file(p.cols, p.file))


def _minutes(seconds: list[float]) -> str:
    """Wall times in seconds as "m ± sd min" over the seeds (no sd for one seed)."""
    from pplug.lamp.stats import mean_sd

    m, sd = mean_sd(seconds)
    return f"{m / 60:.1f}" + (f" ± {sd / 60:.1f}" if sd is not None else "") + " min"


def placement_training(results: Path, p: Placement) -> str:
    """One line: each variant's training wall time, mean ± sd over the seeds, as the run measured it."""
    d = load(results, p.file)
    order = [r.key.removeprefix("pplug ") for r in p.variants]
    parts = [f"{variant} {_minutes(list(d['train_seconds'][variant].values()))}"
             for variant in sorted(d["train_seconds"], key=lambda v: order.index(v) if v in order else len(order))]
    return f"Training wall time per seed ({p.load}): " + "; ".join(parts) + "."


def placement_renderers() -> dict[str, Callable[[Path], str]]:
    out: dict[str, Callable[[Path], str]] = {}
    for key, p in PLACEMENTS.items():
        out[f"ablation_placement_{key}"] = functools.partial(placement_table, p=p)
        out[f"ablation_placement_{key}_intervals"] = functools.partial(placement_intervals, p=p)
        out[f"ablation_placement_{key}_training"] = functools.partial(placement_training, p=p)
    return out


@dataclass(frozen=True)
class Budget:
    """One real set at the README summary's CPU budget (`bench_real_lamp.py --preset cpu`): every method
    trained the wall time of 100 steps with the soft prompt in front, in the recipe's placement."""

    file: str
    set_name: str
    cols: tuple[Col, ...]
    floors: tuple[Row, ...]
    slice: str = "dev"  # or "time-shift": the training users' latest questions, held out of every method's training
    trained: tuple[str, ...] = ("prompt-tuned", "retrieval")  # the baselines the run trained beside PPlug
    pplug_label: str = "**pplug** (the recipe)"  # news_headlines' recipe adds retrieval: its PPlug row is not it

    def baselines(self) -> tuple[Row, ...]:
        labels = {"prompt-tuned": "prompt-tuned", "retrieval": "retrieval (its own 256-token prompt)"}
        return (FROZEN_LLM, *(Row(m, labels[m]) for m in self.trained))

    def rows(self) -> tuple[Row, ...]:
        return (*self.baselines(), Row("pplug", self.pplug_label), *self.floors)


def _split_name(slice_: str) -> str:
    """How a table names the questions it scores: "dev", or "time-shift slice"."""
    return "dev" if slice_ == "dev" else f"{slice_} slice"


def budget_table(results: Path, b: Budget) -> str:
    """Every method and floor, mean ± sd over the seeds, and PPlug minus each (paired 95% intervals)."""
    dtype = load(results, b.file)["meta"]["dtype"]  # the LLM's dtype in training and scoring, as the run recorded
    cols = _with_file(b.cols, b.file, b.slice)
    cells = _summary(results, b.rows()[0], cols[0])[1]["cells"]
    missing = [r.key for r in b.rows() if row_key(r.key, cols[0].dec) not in cells]
    if missing:  # e.g. a re-scoring fitted the first-N-words floor to another N: say so, never render a blank row
        raise ValueError(f"{b.file}.json: no rows {missing} in its {b.slice} results; rows there: {sorted(cells)}")
    return cells_table(results, f"{b.set_name} {_split_name(b.slice)} (n={{n}}), 3 seeds, {dtype}", b.rows(), cols,
                       ref="pplug")


def budget_training(results: Path, b: Budget) -> str:
    """One line: the steps and each method's training wall time per seed, as the run measured it."""
    d = load(results, b.file)
    e = d["sets"][b.set_name]
    parts = []
    for method in ("prompt-tuned", "retrieval", "pplug", "pplug+retrieval"):
        vals = [per[method] for per in e["train_seconds"].values() if per.get(method) is not None]
        if vals:
            parts.append(f"{method} {_minutes(vals)}")
    steps = e.get("max_steps", d["settings"]["max_steps"])
    return (f"Training wall time per seed, {steps} steps x batch {d['settings']['batch_size']} "
            f"(one thread each, 2 to 5 processes sharing the 2 cores, so upper bounds): " + "; ".join(parts) + ".")


HEADLINES_PPLUG_ALONE = "**pplug** (the soft prompt alone; the recipe adds retrieval)"
BUDGETS = {
    "acl": Budget(ACL_BUDGET, "acl_titles", (R1, RL), ACL_FLOORS),
    "enron": Budget(ENRON_BUDGET, "enron_subjects", (R1, RL), ENRON_FLOORS),
    # enron's lead in bfloat16: retrieval, 0.037 behind PPlug in float32 and the slowest to train, not rerun
    "enron_bf16": Budget("real_lamp_enron_subjects_bf16_cpu", "enron_subjects", (R1, RL), ENRON_FLOORS,
                          trained=("prompt-tuned",)),
    "news_headlines": Budget("real_lamp_news_headlines_cpu", "news_headlines", (R1, RL),
                              generation_floors(29, "headline"), pplug_label=HEADLINES_PPLUG_ALONE),
    "news_headlines_time_shift": Budget(HEADLINES_TIME_SHIFT, "news_headlines", (R1, RL),
                                         HEADLINES_TIME_SHIFT_FLOORS, "time-shift", pplug_label=HEADLINES_PPLUG_ALONE),
}
"""docs/results.md's sets at the summary's CPU budget, every method retrained there: `budget_<key>{,_training}`."""


def budget_renderers() -> dict[str, Callable[[Path], str]]:
    out: dict[str, Callable[[Path], str]] = {}
    for key, b in BUDGETS.items():
        out[f"budget_{key}"] = functools.partial(budget_table, b=b)
        out[f"budget_{key}_training"] = functools.partial(budget_training, b=b)
    return out




def _mean(s: dict, key: str, metric: str) -> float | None:
    c = s["cells"].get(key, {}).get(metric)
    return None if c is None else c["mean"]


def sets_summary(results: Path, sets: Sequence[SetResult]) -> str:
    """Five rows: each real set's PPlug (its recipe) against its best baseline and its best floor, with the
    paired 95% intervals the results file holds (`pplug.lamp.stats`). The best floor is also looked up among the
    floors fitted on train (`FLOORS`, same questions): where one of those is stronger than every floor scored
    beside PPlug, it is shown with the difference of means, marked as not paired."""
    from pplug.lamp.stats import METRIC_DIRECTIONS

    used: list[str] = []
    body = []
    for sr in sets:
        if sr.file is None:
            body.append([f"{sr.name} ({sr.what})", "no result at this budget yet", "", "", "", "", ""])
            continue
        col = sr.col
        s = summaries(load(results, sr.file))[col.slice]
        used.append(sr.file)
        higher = METRIC_DIRECTIONS.get(col.metric, True)
        ref = row_key(sr.ref, col.dec)

        def best(rows: Sequence[Row]) -> Row | None:
            scored = [(v, r) for r in rows if (v := _mean(s, row_key(r.key, col.dec), col.metric)) is not None]
            return (max if higher else min)(scored, key=lambda x: x[0])[1] if scored else None

        def versus(row: Row | None) -> tuple[str, str]:
            if row is None:
                return "", ""
            key = row_key(row.key, col.dec)
            c = s["comparisons"].get(ref, {}).get(key, {}).get(col.metric)
            label = row.label.removeprefix("floor: ")
            return f"{label} {_mean(s, key, col.metric):.3f}", fmt_interval(col.metric, c) if c else ""

        cell = s["cells"][ref][col.metric]
        n_seeds = len(cell["values"])
        seeds = f"{n_seeds} seed{'s' * (n_seeds != 1)}"
        line = [f"{sr.name} ({sr.what})", f"{col.header.rstrip(' ↑↓')}, {_split_name(col.slice)} n={s.get('n')}, {seeds}",
                fmt_value(list(cell["values"].values()))]
        line += versus(best(sr.baselines))
        paired = best(sr.floors)
        fitted = load(results, FLOORS)["sets"].get(sr.name, {})
        # the same dev questions, floors fitted on train
        if col.slice == "dev" and fitted.get("n") == s.get("n") and fitted.get("metrics"):
            used.append(FLOORS)
            name, v = (max if higher else min)(((f, m[col.metric]) for f, m in fitted["metrics"].items()),
                                               key=lambda x: x[1])
            p_v = _mean(s, row_key(paired.key, col.dec), col.metric) if paired else None
            if p_v is None or (v > p_v if higher else v < p_v):  # stronger than the floors scored beside PPlug
                line += [f"{name.removeprefix('floor: ')} {v:.3f}",
                         f"{cell['mean'] - v:+.3f} (means; not paired)"]
                body.append(line)
                continue
        line += versus(paired)
        body.append(line)
    header = ["set", "metric", "PPlug", "best baseline", "PPlug minus it", "best floor", "PPlug minus it"]
    return markdown_table(header, body) + "\n\n" + sources(results, used)


def floors_table(results: Path) -> str:
    """Every floor of every real set on its scored dev questions (benchmarks/bench_floors.py)."""
    d = load(results, FLOORS)
    body = []
    for name, e in d["sets"].items():
        for i, (floor, metrics) in enumerate(e["metrics"].items()):  # the set's name and size once per set
            body.append([name if i == 0 else "", f"{e['task']}, n={e['n']}" if i == 0 else "",
                         floor.removeprefix("floor: "), ", ".join(f"{m} {v:.3f}" for m, v in metrics.items())])
    return markdown_table(["set", "dev questions", "floor", "score"], body) + "\n\n" + sources(results, [FLOORS])


NEWS_CATEGORIES_MIX = "real_lamp_news_categories_history_mix_cpu"
NEWS_CATEGORIES_TIME_SHIFT = "real_lamp_news_categories_time_shift_history_mix_cpu"
NEWS_CATEGORIES_INPUT_TOKEN = ("real_lamp_news_categories_input_token_frozen_time_shift_cpu",
                               "real_lamp_news_categories_input_token_time_shift_cpu")
"""PPlug retrained with `input_token: true` (frozen, then trained input encoder) beside the summary's baselines."""
MUSIC_RECIPE_XEON = "real_lamp_music_llm_temperature_cpu"
"""The same command on an Intel Xeon (avx512, amx): every method trained and scored again on another host, before
the user's most common rating was scored beside them."""
MUSIC_ATTENTION = "real_lamp_music_attention_loss_3_cpu"
"""PPlug retrained with news_categories' attention settings (`attention_label_loss_weight: 3`, temperature 0.05)
beside the baseline checkpoints of `MUSIC_RECIPE_XEON`."""


def without_recipe_mark(rows: Sequence[Row]) -> tuple[Row, ...]:
    """`rows` as a run other than the recipe's shows them: " (the recipe)" dropped from the labels."""
    return tuple(dataclasses.replace(r, label=r.label.replace(" (the recipe)", "")) for r in rows)


MUSIC_ROWS = (
    Row("prompt-tuned", "prompt-tuned, model alone"), Row("retrieval", "retrieval, model alone"), *PRIOR_BASELINES,
    Row("pplug+mix", "**pplug + shares (the recipe)**"), Row("pplug", "pplug, model alone"),
    Row("pplug+encoder-mix", "pplug + encoder prior"), Row("pplug+attention-mix", "pplug + its attention prior"),
    Row("pplug attention kNN, no LLM", "pplug's attention prior alone, no LLM"), *RATING_FLOORS)
"""Every row bench_history_mix scores on music_ratings with --priors shares encoder attention; the runs that also
score the user's most common rating add `USER_MAJORITY`."""
NEWS_CATEGORIES_FLOORS = (Row("floor: always-politics", "floor: always politics"),
                          Row("floor: user majority label", "floor: the user's most common category"))
NEWS_CATEGORIES_ALONE = (
    Row("prompt-tuned", "prompt-tuned, model alone"), Row("retrieval", "retrieval, model alone"),
    *PRIOR_BASELINES, Row("pplug", "pplug, model alone"), Row("pplug+mix", "pplug + shares"))
"""news_categories' rows every bench_history_mix run shows first: each method alone, the baselines with each prior,
PPlug with the user's shares."""
NEWS_CATEGORIES_ROWS = (
    *NEWS_CATEGORIES_ALONE, Row("pplug+attention-mix", "pplug + its attention prior"),
    Row("pplug+encoder-mix", "**pplug + encoder prior**"), *NEWS_CATEGORIES_FLOORS)
"""news_categories' rows on dev and on the time-shift slice (bench_history_mix) before the recipe trained the
attention on the past items' labels: each method alone and with each history prior mixed in."""
NEWS_CATEGORIES_ATTENTION = "real_lamp_news_categories_attention_loss_time_shift_cpu"
"""PPlug trained with `attention_label_loss_weight: 1`, beside the same baselines (bench_history_mix), every LLM read
as it scores."""
NEWS_CATEGORIES_TEMPERATURE = "real_lamp_news_categories_llm_temperature_time_shift_cpu"
"""The same trainings retrained, every row's LLM read at the temperature held-out questions chose with k
(`history_mix_model_temperature`, bench_history_mix --model-temperatures)."""
NEWS_CATEGORIES_RECIPE_4_LATEST = "real_lamp_news_categories_attention_loss_3_time_shift_cpu"
"""The run that chose the recipe: PPlug retrained with `attention_label_loss_weight: 3` beside the temperature run's
baselines (the same checkpoints), every LLM row read at its chosen temperature, on each author's 4 latest questions."""
NEWS_CATEGORIES_EQUAL_WALL = "real_lamp_news_categories_time_shift_8_latest_equal_wall_seed0_cpu"
"""One seed, a probe: PPlug (150 steps) and prompt-tuned (180) trained for about retrieval's wall time at 100 steps,
beside that retrieval checkpoint, on the same slice."""
ATTENTION_ALONE = "attention_alone_news_categories_cpu"
"""bench_attention_alone: the input encoder trained on the attention term alone (no LLM), snapshots at 100 to 800
steps, on the summary's time-shift slice."""
ATTENTION_ALONE_ROWS = (
    Row("encoder kNN, no LLM", "the frozen encoder's prior, no LLM"),
    *(Row(f"attention alone, {n} steps", f"attention trained alone, {n} steps") for n in (100, 200, 400, 800)),
    Row("attention alone, chosen steps", "**attention trained alone, steps chosen on held-out training questions**"),
    Row("floor: always-politics", "floor: always politics"),
    Row("floor: user majority label", "floor: the user's most common category"))


def attention_alone_choice(results: Path, name: str = ATTENTION_ALONE) -> str:
    """One line: the snapshot each seed kept (the lowest held-out NLL) and the frozen encoder's chosen temperature."""
    d = load(results, name)
    parts = [f"{seed} {c['steps']} steps (NLL {c['heldout_nll'][str(c['steps'])]:.3f}; encoder temperature "
             f"{c['encoder_temperature']:g})" for seed, c in d["chosen"].items()]
    return f"Kept on held-out training questions: {', '.join(parts)}.\n\n" + sources(results, [name])


NEWS_CATEGORIES_ATTENTION_ROWS = (
    *NEWS_CATEGORIES_ALONE, Row("pplug+encoder-mix", "pplug + encoder prior"),
    Row("pplug+attention-mix", "**pplug + its attention prior (the recipe)**"),
    Row("pplug attention kNN, no LLM", "pplug's attention prior alone, no LLM (bench_history_mix.attention_knn)"),
    *NEWS_CATEGORIES_FLOORS)
NEWS_CATEGORIES_EARLIER_ROWS = without_recipe_mark(NEWS_CATEGORIES_ATTENTION_ROWS)
"""The same rows in every run but the summary's: those that chose the recipe's settings (the attention term's
weight, the LLM's temperature, the 4-latest slice) and the equal-wall-time probe."""


def news_categories_slice(name: str, rows: Sequence[Row] = NEWS_CATEGORIES_EARLIER_ROWS,
                          seeds: str = "3 seeds") -> Callable[[Path], str]:
    """A news_categories time-shift run's accuracy table: PPlug with its attention prior (the recipe's decoding)
    minus each row."""
    return functools.partial(cells_table, caption=f"news_categories time-shift slice (n={{n}}), {seeds}",
                             ref="pplug+attention-mix", ref_label="pplug + attention prior",
                             cols=_with_file([ACCURACY], name, "time-shift"), rows=rows)


HEADLINES_400 = "real_lamp_news_headlines_time_shift_400_steps_cpu"  # PPlug at 4x the summary's steps, seed 0
BEAM_COLS = (Col("ROUGE-1, greedy ↑", "rouge1"), Col("ROUGE-1, beam search (4 beams) ↑", "rouge1", "beam"))
FLOORS = "floors_real"  # every floor of pplug.decode.floors on each set's scored dev questions (bench_floors.py)


T = functools.partial
RENDERERS: dict[str, Callable[[Path], str]] = {
    # README.md
    "sets_summary": lambda results: sets_summary(results, SETS_SUMMARY),
    "choice_prefill": choice_prefill,
    "news_headlines": T(cells_table, caption="news_headlines dev (n={n}), seed 0", ref="pplug",
                        cols=_with_file([R1, RL], "real_lamp_news_headlines_seed0_cpu"),
                        rows=(*METHODS, Row("floor: first 29 words", "floor: first 29 words of the input"),
                              Row("floor: user's nearest past title", "floor: the user's nearest past headline"))),
    "news_categories": T(
        cells_table, caption="news_categories dev (n={n}), 3 seeds", ref="pplug+encoder-mix",
        ref_label="pplug + encoder prior",
        cols=_with_file([ACCURACY], NEWS_CATEGORIES_MIX),
        rows=(Row("none", "none (frozen LLM)", file="real_lamp_news_categories_seeds_cpu", ref="pplug"),
              *NEWS_CATEGORIES_ROWS)),
    "news_categories_priors_heldout": T(
        history_priors_heldout, names=(NEWS_CATEGORIES_RECIPE_4_LATEST, NEWS_CATEGORIES_TEMPERATURE,
                                       NEWS_CATEGORIES_ATTENTION, NEWS_CATEGORIES_TIME_SHIFT),
        captions=("the recipe (attention term weight 3)", "weight 1", "weight 1, LLM at T = 1", "no attention term")),
    "music_recipe": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", ref="pplug+mix", ref_label="pplug + shares",
        cols=_with_file([MAE, RMSE], MUSIC_RECIPE),
        rows=(*MUSIC_ROWS, USER_MAJORITY)),
    "music_two_hosts": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds, the same command", ref="pplug+mix",
        ref_label="pplug + shares", cols=[MAE],
        rows=tuple(Row(key, f"{label}, {host}", file=name)
                   for name, host in ((MUSIC_RECIPE, "AMD EPYC"), (MUSIC_RECIPE_XEON, "Intel Xeon"))
                   for key, label in (("pplug+mix", "**pplug + shares**"), ("retrieval+mix", "retrieval + shares"),
                                      ("prompt-tuned+mix", "prompt-tuned + shares"), (ENCODER_KNN, "encoder kNN"))
                   )),
    "music_attention_loss": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", ref="pplug+mix", ref_label="pplug + shares",
        cols=_with_file([MAE, RMSE], MUSIC_ATTENTION),
        rows=without_recipe_mark(MUSIC_ROWS)),
    "music_training_time": T(training_time, name=MUSIC_RECIPE, labels={"pplug": "PPlug"}),
    "music_attention_training_time": T(training_time, name=MUSIC_ATTENTION,
                                       labels={"pplug": "PPlug with the attention term"}),
    "music_priors_heldout": T(
        history_priors_heldout, names=(MUSIC_RECIPE_XEON, MUSIC_ATTENTION),  # the run that chose the recipe
        captions=("the recipe", "attention term (weight 3, temperature 0.05)"),
        metric=("mae_median", "MAE (median) ↓")),
    "news_categories_recipe_time_shift": news_categories_slice(NEWS_CATEGORIES_RECIPE, NEWS_CATEGORIES_ATTENTION_ROWS),
    "news_categories_recipe_heldout": T(
        history_priors_heldout, names=(NEWS_CATEGORIES_RECIPE,), captions=("8 latest per author",)),
    "news_categories_training_time": T(training_time, name=NEWS_CATEGORIES_RECIPE, labels={"pplug": "PPlug"}),
    "news_categories_equal_wall": news_categories_slice(NEWS_CATEGORIES_EQUAL_WALL,
                                                        seeds="seed 0, ~1,000 s of training each"),
    "news_categories_equal_wall_training_time": T(training_time, name=NEWS_CATEGORIES_EQUAL_WALL,
                                                  labels={"pplug": "PPlug (150 steps)",
                                                          "prompt-tuned": "prompt-tuned (180 steps)",
                                                          "retrieval": "retrieval (100 steps)"}),
    "news_categories_recipe_4_latest": news_categories_slice(NEWS_CATEGORIES_RECIPE_4_LATEST),
    "news_categories_attention_alone": T(
        cells_table, caption="news_categories time-shift slice (n={n}), 3 seeds, no LLM",
        ref="attention alone, chosen steps", ref_label="attention alone (chosen)",
        cols=_with_file([ACCURACY], ATTENTION_ALONE, "time-shift"), rows=ATTENTION_ALONE_ROWS),
    "news_categories_attention_alone_choice": attention_alone_choice,
    "news_categories_attention_weight": T(
        attention_weight_choice, runs=((1.0, NEWS_CATEGORIES_TEMPERATURE), (3.0, NEWS_CATEGORIES_RECIPE_4_LATEST),
                                       (10.0, "real_lamp_news_categories_attention_loss_10_time_shift_cpu")),
        row="pplug+attention-mix", scored="time-shift slice (n=228), 3 seeds,"),
    "news_categories_temperature_time_shift": news_categories_slice(NEWS_CATEGORIES_TEMPERATURE),
    "news_categories_attention_loss_time_shift": news_categories_slice(NEWS_CATEGORIES_ATTENTION),
    "news_categories_input_token": T(
        cells_table, caption="news_categories time-shift slice (n={n}), 3 seeds",
        cols=(Col("accuracy ↑", "accuracy", slice="time-shift"),),
        rows=(Row("pplug", "PPlug, model alone", file=NEWS_CATEGORIES_TIME_SHIFT),
              Row("pplug+encoder-mix", "PPlug + encoder prior", file=NEWS_CATEGORIES_TIME_SHIFT),
              Row("pplug", "+ input token, frozen encoder, model alone", file=NEWS_CATEGORIES_INPUT_TOKEN[0]),
              Row("pplug+encoder-mix", "+ input token, frozen encoder, + encoder prior",
                  file=NEWS_CATEGORIES_INPUT_TOKEN[0]),
              Row("pplug", "+ input token, trained encoder, model alone", file=NEWS_CATEGORIES_INPUT_TOKEN[1]),
              Row("pplug+encoder-mix", "+ input token, trained encoder, + encoder prior",
                  file=NEWS_CATEGORIES_INPUT_TOKEN[1]),
              Row(ENCODER_KNN, "encoder kNN, no LLM", file=NEWS_CATEGORIES_TIME_SHIFT))),
    "news_categories_time_shift": T(
        cells_table, caption="news_categories time-shift slice (n={n}), 3 seeds", ref="pplug+encoder-mix",
        ref_label="pplug + encoder prior", cols=_with_file([ACCURACY], NEWS_CATEGORIES_TIME_SHIFT, "time-shift"),
        rows=NEWS_CATEGORIES_ROWS),
    "news_headlines_time_shift_steps": T(
        cells_table, caption="news_headlines time-shift slice (n={n}), seed 0, float32",
        cols=(TIME_SHIFT_R1, Col("ROUGE-L ↑", "rougeL", slice="time-shift")),
        rows=(Row("none", "none (frozen LLM)", file=HEADLINES_400),
              Row("retrieval", "retrieval, 100 steps", file=BUDGETS["news_headlines_time_shift"].file, seeds=("seed0",)),
              Row("pplug", "pplug, 100 steps (the summary's budget)", file=BUDGETS["news_headlines_time_shift"].file,
                  seeds=("seed0",)),
              Row("pplug", "**pplug, 400 steps**", file=HEADLINES_400),
              Row("floor: first 25 words", "floor: first 25 words", file=HEADLINES_400))),
    "news_headlines_time_shift_pplug_retrieval": T(
        cells_table, caption="news_headlines time-shift slice (n={n}), 3 seeds, float32", ref="pplug+retrieval",
        ref_label="pplug + retrieval",
        cols=_with_file([R1, RL], BUDGETS["news_headlines_time_shift"].file, "time-shift"),
        rows=(*BUDGETS["news_headlines_time_shift"].baselines(),
              Row("pplug+retrieval", "**pplug + retrieval** (the recipe; 256-token prompt)"),
              *BUDGETS["news_headlines_time_shift"].floors)),
    # the official recipe's beam search (4 beams) beside greedy, on the summary's checkpoints: every method decoded
    # both ways on the same questions, PPlug compared with each row in the same decoding (acl's recipe decodes so)
    "acl_titles_beam": T(
        cells_table, caption="acl_titles dev (n={n}), 3 seeds, float32", ref="pplug",
        cols=_with_file(BEAM_COLS, ACL_BEAM), rows=BUDGETS["acl"].rows()),
    "news_headlines_time_shift_beam": T(
        cells_table, caption="news_headlines time-shift slice (n={n}), 3 seeds, float32", ref="pplug",
        cols=_with_file(BEAM_COLS, "real_lamp_news_headlines_time_shift_beam_cpu", "time-shift"),
        rows=BUDGETS["news_headlines_time_shift"].rows()),
    "acl_titles_user_tokens_4": T(
        cells_table, caption="acl_titles dev (n={n}), 3 seeds, float32", ref="pplug",
        cols=_with_file([R1, RL], "real_lamp_acl_titles_user_tokens4_cpu"),
        rows=(*BUDGETS["acl"].baselines(), Row("pplug", "**pplug, 4 user tokens** (the recipe has 1)"),
              *BUDGETS["acl"].floors)),
    "floors_real": floors_table,
    "make_train": make_train,
    "make_train_without_stats": lambda results: make_train(results, "make_train_without_stats.json"),
    "make_train_100_steps": lambda results: make_train(results, "make_train_100_steps.json"),
    "make_train_label_loss": lambda results: make_train(results, "make_train_label_loss.json"),
    "make_train_lr2e-3_clip": lambda results: make_train(results, "make_train_lr2e-3_clip.json"),
    "make_train_without_label_tokens": lambda results: make_train(results, "make_train_without_label_tokens.json"),
    "init_reading": init_reading,
    "make_train_encoder_lr3e-4": lambda results: make_train(results, "make_train_encoder_lr3e-4.json"),
    "rating_shift": rating_shift,
    "rating_shift_synth_label_tokens": lambda results: rating_shift(results, "rating_shift_synth_label_tokens"),
    "rating_shift_music_label_tokens": lambda results: rating_shift(results, "rating_shift_music_label_tokens"),
    "rating_shift_synth_label_tokens_input": lambda results: rating_shift(results,
                                                                          "rating_shift_synth_label_tokens_input"),
    "ratings_any_domain": ratings_any_domain,
    "attention": attention,
    # docs/results.md: every method at each set's recipe
    "music_mix": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", cols=_with_file([MAE, RMSE], MIX),
        rows=(Row("prompt-tuned", "prompt-tuned, model alone"), Row("prompt-tuned+mix", "prompt-tuned + mix"),
              Row("retrieval", "retrieval, model alone"), Row("retrieval+mix", "retrieval + mix"),
              Row("pplug", "pplug, model alone"), Row("pplug+mix", "**pplug + mix**"), *RATING_FLOORS)),
    "music_mix_intervals": T(
        interval_table, caption="pplug + mix minus", ref="pplug+mix", cols=_with_file([MAE, RMSE], MIX),
        rows=(Row("pplug", "pplug, model alone"), Row("prompt-tuned", "prompt-tuned"),
              Row("prompt-tuned+mix", "prompt-tuned + mix"), Row("retrieval", "retrieval"),
              Row("retrieval+mix", "retrieval + mix"), *RATING_FLOORS)),
    "history_mix_heldout": history_mix_heldout,
    "music_cpu": T(cells_table, caption="music_ratings (dev n={n}), 3 seeds, model alone", cols=MUSIC_COLS,
                   rows=(*METHODS, *RATING_FLOORS)),
    "music_cpu_intervals": T(interval_table, caption="pplug minus", cols=_no_pearson(MUSIC_COLS),
                             rows=(*BASELINES[1:], *RATING_FLOORS)),
    "music_gpu": T(cells_table, caption="music_ratings (dev n={n}), 3 seeds, GPU budget", cols=GPU_COLS,
                   rows=(*METHODS, *RATING_FLOORS)),
    "music_gpu_intervals": T(interval_table, caption="pplug minus", cols=_no_pearson(GPU_COLS),
                             rows=(*BASELINES[1:], *RATING_FLOORS)),
    "acl": T(cells_table, caption="acl_titles (dev n={n}), 3 seeds", cols=ACL_COLS, rows=_generation_rows("9")),
    "acl_intervals": T(interval_table, caption="pplug minus", cols=ACL_COLS,
                       rows=_without(_generation_rows("9"), "pplug")),
    "enron": T(cells_table, caption="enron_subjects (dev n={n}), 3 seeds", cols=ENRON_COLS,
               rows=_generation_rows("3")),
    "enron_intervals": T(interval_table, caption="pplug minus", cols=ENRON_COLS,
                         rows=_without(_generation_rows("3"), "pplug")),
    "synth_shift": T(
        cells_table, caption="synthetic domain shift (n={n}), 3 seeds", ref="pplug",
        cols=_with_file([MAE, RMSE], SYNTH),
        rows=(*METHODS, Row("pplug+retrieval", "pplug+retrieval"), *RATING_FLOORS,
              Row("ceiling", "history-blind ceiling (knows each review's true sentiment)"))),
    # docs/results.md: one table per question
    "ablation_recipe_music": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", ref="pplug stats-mixed",
        cols=_with_file([MAE_ARGMAX, MAE, MAE_EXPECTED, RMSE], "ablation_music_ratings_seeds_cpu"),
        rows=(Row("pplug base", "PPlug as published"),
              Row("pplug stats-mixed", "+ user statistics + mixed aggregation"))),
    "ablation_recipe_enron": T(
        cells_table, caption="enron_subjects dev (n={n}), seed 0", ref="pplug paper",
        cols=_with_file([R1, RL], "ablation_enron_subjects_seed0_cpu"),
        rows=(FROZEN_LLM, Row("pplug paper", "PPlug as published"),
              Row("pplug base", "+ user statistics + mixed aggregation"))),
    "ablation_rating_loss": T(
        cells_table, caption="music_ratings, 3 seeds (dev n={n})", ref="pplug rating-loss",
        cols=[*_with_file([MAE, MAE_EXPECTED, RMSE], RATING_LOSS),
              *_with_file([Col("cold-start MAE (n={n})", "mae", "median"), Col("cold-start RMSE", "rmse", "expected")],
                          "ablation_music_ratings_rating_loss_coldstart_cpu")],
        rows=(Row("pplug base", "without the squared-error term"),
              Row("pplug rating-loss", "+ squared error of the expected rating"), *RATING_FLOORS)),
    "ablation_steps": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", cols=[MAE, RMSE],
        rows=(Row("pplug rating-loss", "100 steps", file=RATING_LOSS), Row("pplug base", "200 steps", file=STEPS_200),
              *[Row(r.key, r.label, file=STEPS_200) for r in RATING_FLOORS])),
    "ablation_steps_intervals": T(
        interval_table, caption="minus", cols=[MAE, RMSE],
        rows=(Row(ALWAYS_5.key, "100 steps minus always 5", ref="pplug rating-loss", file=RATING_LOSS),
              Row(USER_MEAN.key, "100 steps minus the user's mean", ref="pplug rating-loss", file=RATING_LOSS),
              Row(ALWAYS_5.key, "200 steps minus always 5", ref="pplug base", file=STEPS_200),
              Row(USER_MEAN.key, "200 steps minus the user's mean", ref="pplug base", file=STEPS_200))),
    "ablation_label_tokens_music": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", ref="pplug label-tokens",
        cols=_with_file([MAE, MAE_EXPECTED, RMSE], LABEL_TOKENS),
        rows=(Row("pplug base", "the rating recipe (configs/real/music_ratings.yaml)"),
              Row("pplug label-tokens", "+ label tokens (configs/real/ratings_any_domain.yaml)"), *RATING_FLOORS)),
    "ablation_label_tokens_music_intervals": T(
        interval_table, caption="minus", cols=_with_file([MAE, RMSE], LABEL_TOKENS),
        rows=(Row("pplug base", "label tokens minus the rating recipe", ref="pplug label-tokens"),
              Row(ALWAYS_5.key, "label tokens minus always 5", ref="pplug label-tokens"),
              Row(USER_MEAN.key, "label tokens minus the user's mean", ref="pplug label-tokens"),
              Row(ALWAYS_5.key, "the rating recipe minus always 5", ref="pplug base"),
              Row(USER_MEAN.key, "the rating recipe minus the user's mean", ref="pplug base"))),
    "ablation_tokens": T(
        cells_table, caption="music_ratings dev (n={n}), 3 seeds", ref="pplug user-tokens-4",
        cols=_with_file([MAE, MAE_EXPECTED, RMSE], "ablation_music_ratings_tokens4_seeds_cpu"),
        rows=(Row("pplug base", "1 user token (the rating recipe)"), Row("pplug user-tokens-4", "4 user tokens"))),
    "ablation_enron_mean": T(
        cells_table, caption="enron_subjects dev (n={n}), 3 seeds", ref="pplug mean-attention",
        cols=_with_file([R1], "ablation_enron_subjects_mean_seeds_cpu"),
        rows=(FROZEN_LLM, Row("pplug base", "PPlug, input-aware attention (the recipe)"),
              Row("pplug mean-attention", "PPlug, mean over the history"),
              Row("floor: first 3 words", "floor: first 3 words of the input"))),
    "ablation_clipping": ablation_clipping,
    "ablation_val_select": T(
        cells_table, caption="enron_subjects dev ROUGE-1 (n={n})",
        cols=[_seed_col("seed 1: last step", "real_lamp_enron_seeds_cpu", 1),
              _seed_col("seed 1: validation-chosen", "real_lamp_enron_valselect_cpu", 1),
              _seed_col("seed 2: last step", "real_lamp_enron_seeds_cpu", 2),
              _seed_col("seed 2: validation-chosen", "real_lamp_enron_valselect_cpu", 2)],
        rows=(FROZEN_LLM, Row("prompt-tuned", "prompt-tuned"), Row("pplug", "pplug"))),
    "ablation_pplug_retrieval": T(
        cells_table, caption="music_ratings (dev n={n}), 3 seeds", ref="pplug+retrieval",
        cols=_with_file([MAE, RMSE, COLD_MAE, COLD_RMSE], "real_lamp_music_pplug_retrieval_cpu"),
        rows=(Row("retrieval", "retrieval"), Row("pplug", "pplug"), Row("pplug+retrieval", "pplug+retrieval"),
              *RATING_FLOORS)),
    "ablation_pplug_retrieval_synth": T(
        cells_table, caption="synthetic domain shift (n={n}), 3 seeds", ref="pplug+retrieval",
        cols=_with_file([MAE, RMSE], SYNTH),
        rows=(Row("retrieval", "retrieval"), Row("pplug", "pplug"), Row("pplug+retrieval", "pplug+retrieval"),
              *RATING_FLOORS)),
    "ablation_pplug_retrieval_generation": T(
        cells_table, caption="dev ROUGE-1 (n={n}), seed 0",
        cols=[Col("acl_titles", "rouge1", file="real_lamp_acl"),
              Col("enron_subjects", "rouge1", file="real_lamp_enron")],
        rows=(FROZEN_LLM, Row("retrieval", "retrieval"), Row("pplug", "pplug"),
              Row("pplug+retrieval", "pplug+retrieval"))),
    "ablation_input_token_music": T(
        cells_table, caption="music_ratings (dev n={n}), 3 seeds", cols=[MAE, RMSE, PEARSON, COLD_MAE, COLD_RMSE],
        rows=(Row("pplug", "PPlug, the rating recipe", file=MUSIC),
              Row("pplug", "+ input token", file=INPUT_TOKEN),
              Row("pplug", "+ input token, frozen encoder", file=INPUT_TOKEN_FROZEN),
              Row("retrieval", "retrieval", file=INPUT_TOKEN),
              *[Row(r.key, r.label, file=MUSIC) for r in RATING_FLOORS])),
    "ablation_input_token_music_intervals": T(
        interval_table, caption="minus", cols=[MAE, RMSE],
        rows=(Row("retrieval", "+ input token minus retrieval", file=INPUT_TOKEN),
              Row(USER_MEAN.key, "+ input token minus the user's mean", file=INPUT_TOKEN),
              Row("retrieval", "frozen encoder minus retrieval", file=INPUT_TOKEN_FROZEN),
              Row(USER_MEAN.key, "frozen encoder minus the user's mean", file=INPUT_TOKEN_FROZEN))),
    "ablation_input_token_synth": T(
        cells_table, caption="synthetic domain shift (n={n}), 3 seeds", cols=[MAE, RMSE],
        rows=(Row("pplug", "PPlug, the rating recipe", file=SYNTH), Row("pplug", "+ input token", file=SYNTH_TOKEN),
              Row("pplug", "+ input token, frozen encoder", file=SYNTH_TOKEN_FROZEN),
              Row("retrieval", "retrieval", file=SYNTH_TOKEN), Row(USER_MEAN.key, USER_MEAN.label, file=SYNTH),
              Row("ceiling", "history-blind ceiling", file=SYNTH))),
    "ablation_input_token_synth_intervals": T(
        interval_table, caption="minus", cols=[MAE, RMSE],
        rows=(Row("retrieval", "+ input token minus retrieval", file=SYNTH_TOKEN),
              Row(USER_MEAN.key, "+ input token minus the user's mean", file=SYNTH_TOKEN),
              Row(USER_MEAN.key, "frozen encoder minus the user's mean", file=SYNTH_TOKEN_FROZEN))),
    "ablation_mix_synth": T(
        cells_table, caption="synthetic domain shift (n={n}), 3 seeds", ref="pplug+mix",
        cols=_with_file([MAE, RMSE], "synth_shift_input_token_frozen_history_mix_cpu"),
        rows=(Row("pplug", "PPlug + input token (frozen encoder), model alone"),
              Row("pplug+mix", "the same models + mix (k chosen on held-out training questions)"), *RATING_FLOORS)),
    "ablation_synth_recipe": T(
        cells_table, caption="synthetic domain shift (n={n}), 3 seeds, every method trained from",
        cols=SYNTH_RECIPE_COLS,
        rows=(Row("prompt-tuned", "prompt-tuned"), Row("retrieval", "retrieval"), Row("pplug", "pplug"), USER_MEAN)),
    "ablation_synth_recipe_intervals": T(interval_table, caption="pplug minus the user's mean",
                                         cols=SYNTH_RECIPE_COLS, rows=(Row(USER_MEAN.key, "interval"),)),
    "ablation_design_single_seed": T(
        cells_table, caption="music_ratings dev (n={n}), seed 0",
        cols=_with_file([MAE_ARGMAX, MAE, RMSE], "ablation_music_ratings"),
        rows=(Row("pplug base", "PPlug as published (trainable input encoder, 1 user token, τ = 1, 32 items)"),
              Row("pplug frozen-encoder", "frozen input encoder + trainable query projection"),
              Row("pplug user-tokens-4", "4 user tokens"), Row("pplug temperature-0.1", "attention temperature 0.1"),
              Row("pplug mean-attention", "mean over the history"),
              Row("pplug history-8", "only the 8 most recent history items"),
              Row("pplug persona", "+ persona text derived from the history"), *RATING_FLOORS)),
    # docs/decoding.md, docs/serving.md
    "decoding_enron": T(decoding, set_name="enron_subjects"),
    "decoding_acl": T(decoding, set_name="acl_titles"),
    "decoding_reward_enron": T(decoding, set_name="enron_subjects", stem="decoding_reward"),
    "decoding_reward_acl": T(decoding, set_name="acl_titles", stem="decoding_reward"),
    "server_load": server_load,
    "explain_synthetic": explain_synthetic,
    "server_soak": server_soak,
    "store_replicas": store_replicas,
    "reliability": reliability,
    # docs/adaptation.md
    "lora_hub_cost": lora_hub_cost,
    "lora_hub": lora_hub,
    "lora_hub_summary": lora_hub_summary,
    "serve_demo": serve_demo,
    # docs/results.md: the shared prefill
    "prefill_cost": prefill_cost,
    "eval_prefill": eval_prefill,
    **placement_renderers(),
    **budget_renderers(),
    # docs/architecture.md: rendered from pplug/ itself, not from the results
    "modules": modules,
}


# --- documents --------------------------------------------------------------------------------------


def render_text(text: str, results: Path = RESULTS, where: str = "") -> str:
    """`text` with every marked table rendered again from `results`.

    Raises:
        KeyError: a marker names no renderer (names the document and the marker).
    """

    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"{where}: <!-- report:{name} --> names no renderer (known: {sorted(RENDERERS)})")
        return f"{m.group(1)}{RENDERERS[name](Path(results)).rstrip()}\n{m.group(4)}"

    return MARKER.sub(one, text)


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md under `root`."""
    out: list[Path] = []
    for pattern in DOCUMENTS:
        out += sorted(Path(root).glob(pattern))
    return out


def stale(root: Path = ROOT, results: Path = RESULTS) -> dict[Path, tuple[str, str]]:
    """document -> (committed text, rendered text) for every document whose tables differ from the JSON."""
    load_file.cache_clear()
    out = {}
    for doc in documents(root):
        text = doc.read_text(encoding="utf-8")
        new = render_text(text, results, str(doc.relative_to(root)))
        if new != text:
            out[doc] = (text, new)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 with a diff when a document's tables are stale")
    ap.add_argument("--root", default=str(ROOT), help="the folder holding README.md and docs/")
    ap.add_argument("--results", default=str(RESULTS), help="the folder of results JSON files")
    args = ap.parse_args(argv)
    root = Path(args.root)
    changed = stale(root, Path(args.results))
    for doc, (old, new) in changed.items():
        rel = str(doc.relative_to(root))
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{rel} (committed)", f"{rel} (rendered)"))
        else:
            doc.write_text(new, encoding="utf-8")
            print(f"rewrote the tables of {rel}")
    from benchmarks import figures

    figures_dir = root / "docs" / "figures"
    if args.check:
        stale_figures = figures.stale_figures(Path(args.results), figures_dir)
        for name, why in stale_figures.items():
            print(f"docs/figures/{name}: {why}")
    else:
        stale_figures = {}
        redrawn = figures.render_figures(Path(args.results), figures_dir)
        for name in redrawn:
            print(f"redrew docs/figures/{name}.svg")
    if args.check and (changed or stale_figures):
        print(f"\n{len(changed)} document(s) and {len(stale_figures)} figure(s) out of date: run "
              "`python -m benchmarks.report`", file=sys.stderr)
        return 1
    if not changed and not (stale_figures if args.check else redrawn):
        print("every table and figure matches benchmarks/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
