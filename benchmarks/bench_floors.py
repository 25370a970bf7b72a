"""The no-model floors of every real set on the dev questions its results are scored on (seconds, no model).

    python benchmarks/bench_floors.py --out benchmarks/results/floors_real.json

For each set in ../shared/data/real_lamp, the seeded dev subsample the set's results use (`--max-dev SET=N`, the
same `subsample` and seed as bench_real_lamp) gets every floor of `pplug.decode.floors` (fitted on the set's train
split) and its score (`pplug.lamp.metrics.score`). A learned method is worth running only where it beats the best
of these; the README's summary reads them beside each set's results.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_DEV = {"music_ratings": 329, "acl_titles": 100, "enron_subjects": 100, "news_headlines": None,
           "news_categories": None}
"""The dev questions each set's committed results are scored on (None: the whole dev split)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp"), help="real_lamp folder")
    p.add_argument("--sets", nargs="+", default=list(MAX_DEV), choices=list(MAX_DEV))
    p.add_argument("--max-dev", nargs="*", default=[], metavar="SET=N", help="override a set's dev subsample")
    p.add_argument("--seed", type=int, default=0, help="the dev subsample's seed (bench_real_lamp's --seed)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "floors_real.json"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from meta import run_meta

    from pplug.core.io import atomic_write_json
    from pplug.decode.floors import data_floors
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.metrics import format_table, score

    max_dev = dict(MAX_DEV)
    for kv in args.max_dev:
        name, _, n = kv.partition("=")
        if name not in MAX_DEV or not n.isdigit():
            p.error(f"--max-dev takes SET=N with SET in {list(MAX_DEV)}; got {kv!r}")
        max_dev[name] = int(n)
    out: dict = {"benchmark": "bench_floors", "sets": {}, "meta": run_meta(device="cpu", dtype="none")}
    for name in args.sets:
        data = Path(args.root) / name
        if not (data / "dev_questions.json").is_file():
            print(f"skip {name}: {data} not found (the shared real data is not on this machine)")
            continue
        t0 = time.monotonic()
        dev = load_split(data, "dev")
        examples = subsample(dev.examples, max_dev[name], args.seed)
        golds = {ex.id: ex.output for ex in examples}
        metrics = {f"floor: {f}": score(dev.task, p, golds)
                   for f, p in data_floors(dev.task, examples, data, args.seed).items()}
        out["sets"][name] = {"task": dev.task.name, "n": len(examples), "max_dev": max_dev[name],
                             "metrics": metrics, "seconds": round(time.monotonic() - t0, 1)}
        print(format_table(metrics, title=f"{name} dev (n={len(examples)})"), flush=True)
    atomic_write_json(Path(args.out), out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
