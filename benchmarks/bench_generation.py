"""Personalized generation cost: PPlug (soft prompt per user) vs the same frozen LLM with no personalization.

    python benchmarks/bench_generation.py [--batch 4] [--new-tokens 16] [--repeats 5] [--history 20]

Loads the real default models (SmolLM2-135M-Instruct + all-MiniLM-L6-v2, offline) and a freshly initialised
PPlugModel, builds a batch of users with different histories, and times, as the median of several repeats:
greedy generation of exactly `--new-tokens` tokens per row without a prefix, the same with the PPlug prefix
(history embeddings warm in the cache, input encoder + attention + projector included), and the prefix alone.
Prints latency, generated tokens/s and the overhead ratio. Weights are untrained: this measures cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import paired_times  # noqa: E402

from pplug.core.batch import PPlugBatch
from pplug.modeling.config import PPlugConfig  # noqa: E402
from pplug.modeling.model import PPlugModel  # noqa: E402

REVIEWS = ["battery died after two days", "works perfectly, love it", "good value for the price",
           "broke immediately", "the colours are lovely", "arrived late and scratched", "exactly as described",
           "would not buy again", "my kids use it every day", "average at best"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="users per batch")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens generated per row (forced)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--history", type=int, default=20, help="history items per user")
    ap.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"],
                    help="frozen LLM dtype (default float32, the same on every host; auto decides for the device)")
    ap.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cpu")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cache = Path(tempfile.mkdtemp()) / "emb.sqlite"
    torch.manual_seed(0)
    model = PPlugModel.from_config(PPlugConfig(torch_dtype=args.dtype), cache_path=cache, device=args.device).eval()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)  # time finished work only
    load_s = time.perf_counter() - t0
    prompts, queries, histories = [], [], []
    for u in range(args.batch):
        review = REVIEWS[u % len(REVIEWS)]
        prompts.append("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                       f"or 5 without further explanation. review: {review} (user {u})\nScore:")
        queries.append(f"{review} (user {u})")
        histories.append([f'{1 + (u + i) % 5} is the score for "{REVIEWS[(u * 3 + i) % len(REVIEWS)]}, item {i}"'
                          for i in range(args.history)])
    batch = PPlugBatch(prompts, queries, histories)
    model.history_tensors(batch.histories)  # warm the embedding cache (bench_history.py measures cold encoding)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

    one = PPlugBatch(prompts[:1], queries[:1], histories[:1])
    with torch.no_grad():
        times = paired_times({
            "base": lambda: model.llm.generate(None, prompts, **gen),
            "pplug": lambda: model.generate(batch, **gen),
            "prefix": lambda: (model.prefix(batch), sync()),
            "base1": lambda: model.llm.generate(None, prompts[:1], **gen),
            "pplug1": lambda: model.generate(one, **gen),
        }, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(p / b for p, b in zip(times["pplug"], times["base"]))
    ratio1 = statistics.median(p / b for p, b in zip(times["pplug1"], times["base1"]))
    t_base, t_pplug, t_prefix, t_base1, t_pplug1 = (med[k] for k in ("base", "pplug", "prefix", "base1", "pplug1"))
    sample = model.generate(batch, max_new_tokens=4)
    n_tok = args.batch * args.new_tokens
    print(f"# bench_generation: SmolLM2-135M-Instruct ({model.llm.dtype}, {model.device}) + all-MiniLM-L6-v2, torch threads "
          f"{torch.get_num_threads()}, model load {load_s:.1f} s")
    print(f"# batch {args.batch} users x {args.history} history items, {args.new_tokens} new tokens/row, "
          f"median of {args.repeats}")
    print(f"{'setting':<34}{'latency s':>11}{'tokens/s':>10}")
    rows = [("no personalization, batch", t_base, n_tok), ("PPlug, batch", t_pplug, n_tok),
            ("no personalization, 1 user", t_base1, args.new_tokens), ("PPlug, 1 user", t_pplug1, args.new_tokens)]
    for name, t, n in rows:
        print(f"{name:<34}{t:>11.3f}{n / t:>10.1f}")
    print(f"{'PPlug prefix only (batch)':<34}{t_prefix:>11.3f}")
    print(f"overhead ratio PPlug / none (median of paired repeats): batch {ratio:.3f}, 1 user {ratio1:.3f}")
    print(f"sample outputs (untrained embedder): {sample}")


if __name__ == "__main__":
    main()
