"""The results files behind every table and figure: where they are, how they are read, and how a row is named.

`benchmarks.report` (tables) and `benchmarks.figures` (figures) both read results through here, so neither
imports the other's internals.
"""

from __future__ import annotations

import functools
import json
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
