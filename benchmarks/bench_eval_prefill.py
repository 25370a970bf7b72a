"""Evaluation of several methods on the same questions: one prompt prefill shared between the methods (the soft
prompt after the prompt, `pplug.modeling.prefill.shared_prefill`) against each method reading the prompt itself.

    python benchmarks/bench_eval_prefill.py --out benchmarks/results/eval_prefill.json

`pplug evaluate` with three methods (the frozen LLM alone, prompt-tuned, PPlug) and three rating decodings
(argmax, expected, median) on the same dev questions, three ways, interleaved, median of `--repeats`:
- `prefix`: the soft prompts in front of the prompt (PPlug as published); every method reads every prompt;
- `after_prompt, each method prefills`: the soft prompts after the prompt, `share_prefill=False`;
- `after_prompt, shared prefill`: the same checkpoints, the methods reading each question's prefill once.
The checkpoints are untrained (seeded) models of the default LLM and encoder: this measures cost, not quality;
the two `after_prompt` runs must give the same metrics (their largest difference is printed). The decoding
seconds are those `evaluate` reports per method (loading the models is left out); the history embeddings are
cached by a warm-up run first, as they are for a user evaluating twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("none", "prompt-tuned", "pplug")
DECODINGS = ("argmax", "expected", "median")
SETTINGS = {  # name -> (placement, share_prefill)
    "prefix": ("prefix", False),
    "after_prompt, each method prefills": ("after_prompt", False),
    "after_prompt, shared prefill": ("after_prompt", True),
}


def save_checkpoints(folder: Path, task: str, dtype: str, max_input_tokens: int, tiny: dict | None) -> None:
    """Untrained PPlug and prompt-tuned checkpoints in both placements, seeded: folder/<placement>/<method>."""
    import dataclasses

    import torch

    from pplug.methods.registry import method_config
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel

    for placement in ("prefix", "after_prompt"):
        for method in METHODS[1:]:
            base = PPlugConfig(task=task, torch_dtype=dtype, max_input_tokens=max_input_tokens, max_history=32,
                               **(tiny or {}))
            cfg = dataclasses.replace(method_config(base, method), soft_prompt_position=placement)
            torch.manual_seed(0)
            PPlugModel.from_config(cfg, cache_path=None, device="cpu").save_pretrained(folder / placement / method)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real_lamp" / "music_ratings"),
                    help="a LaMP folder of a rating or label task")
    ap.add_argument("--questions", type=int, default=200, help="dev questions every method answers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--max-input-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", default=None, help="JSON of PPlugConfig fields (tests: a tiny LLM and encoder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from meta import run_meta

    from pplug.core.io import atomic_write_json
    from pplug.decode.evaluate import evaluate
    from pplug.lamp.data import load_split

    task = load_split(args.data, "dev").task.name
    tiny = json.loads(args.tiny) if args.tiny else None
    with tempfile.TemporaryDirectory(prefix="bench_eval_prefill_") as tmp:
        folder = Path(tmp)
        save_checkpoints(folder, task, args.dtype, args.max_input_tokens, tiny)
        cache = str(folder / "history.sqlite")

        def run(setting: str) -> dict:
            placement, share = SETTINGS[setting]
            return evaluate([f"{m}={folder / placement / m}" for m in METHODS[1:]], args.data, "dev",
                            methods=list(METHODS), max_examples=args.questions, decodings=list(DECODINGS),
                            out=str(folder / "eval" / "preds.json"), embedding_cache=cache, progress=False,
                            device="cpu", share_prefill=share)

        run("prefix")  # warm-up: the history embeddings into the cache, the weights into the page cache
        seconds: dict[str, list[float]] = {s: [] for s in SETTINGS}
        reports: dict[str, dict] = {}
        for r in range(args.repeats):
            turn = r % len(SETTINGS)
            for setting in list(SETTINGS)[turn:] + list(SETTINGS)[:turn]:  # interleaved, each first in turn
                reports[setting] = run(setting)
                seconds[setting].append(sum(reports[setting]["seconds"].values()))
                print(f"repeat {r}: {setting}: {seconds[setting][-1]:.1f} s", flush=True)
    median = {s: statistics.median(v) for s, v in seconds.items()}
    a, b = reports["after_prompt, each method prefills"], reports["after_prompt, shared prefill"]
    diff = max(abs(a["metrics"][row][k] - b["metrics"][row][k]) for row in a["metrics"] for k in a["metrics"][row])
    result = {
        "benchmark": "bench_eval_prefill", "task": task, "questions": a["n"], "methods": list(METHODS),
        "decodings": list(DECODINGS), "repeats": args.repeats, "threads": args.threads,
        "seconds": {s: {"median": round(median[s], 2), "times": [round(t, 2) for t in v]} for s, v in seconds.items()},
        "per_method_seconds": {s: reports[s]["seconds"] for s in SETTINGS},
        "prefill": b.get("prefill"),
        "shared_cheaper_than_prefix": round(median["prefix"] / median["after_prompt, shared prefill"], 2),
        "shared_cheaper_than_unshared": round(median["after_prompt, each method prefills"]
                                              / median["after_prompt, shared prefill"], 2),
        "max_metric_diff_shared_vs_unshared": diff,
        "meta": run_meta(device="cpu", dtype=args.dtype),
    }
    print(json.dumps({k: result[k] for k in ("seconds", "shared_cheaper_than_prefix", "shared_cheaper_than_unshared",
                                             "max_metric_diff_shared_vs_unshared", "prefill")}, indent=1))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
