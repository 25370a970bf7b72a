"""Scoring a multi-token label set: one prefill per row (what `FrozenLLM.choice_logprobs` runs) against one full
forward per row and label (the computation it replaces), measured in one run on the same prompts.

    python benchmarks/bench_choice_prefill.py --out benchmarks/results/choice_prefill.json

News categories have 15 labels of 1-4 tokens; without the shared prefill every label re-reads the whole prompt.
Prints the median seconds of each, their ratio and the largest difference of the scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def full_forwards(llm, soft: torch.Tensor, prompts: list[str], choices: list[str]) -> torch.Tensor:
    """(B, C) log p(choice | soft prompt, prompt): B * C right-padded rows, each [soft; prompt; choice]."""
    from pplug.modeling.llm import _first_label

    p_ids, c_ids = llm.prompt_ids(prompts), llm._tokenize(choices)
    b, c = len(p_ids), len(c_ids)
    rows = [p + t for p in p_ids for t in c_ids]
    embeds, mask, pos, labels = llm._right_padded(soft.repeat_interleave(c, dim=0), rows,
                                                  labels_from=[len(p) for p in p_ids for _ in c_ids])
    logits, start = llm._causal_logits({"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos},
                                       _first_label(labels) - 1)
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    labels = labels[:, start + 1:]
    return (lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (labels != -100)).sum(-1).view(b, c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real_lamp" / "news_categories"),
                    help="a LaMP folder of a label task with multi-token labels")
    ap.add_argument("--rows", type=int, default=8, help="questions scored at once")
    ap.add_argument("--soft-tokens", type=int, default=2, help="soft-prompt vectors in front of each prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--model", default="default", help="the frozen LLM (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from meta import run_meta

    from pplug.core.io import atomic_write_json
    from pplug.lamp.data import load_split
    from pplug.methods.prompts import compose_prompt
    from pplug.modeling.llm import FrozenLLM

    split = load_split(args.data, "dev")
    examples = split.examples[: args.rows]
    llm = FrozenLLM(args.model, dtype=args.dtype, device="cpu", max_input_tokens=128)
    prompts = [compose_prompt(split.task, ex.input) for ex in examples]
    choices = list(split.task.labels)
    soft = (torch.randn(len(prompts), args.soft_tokens, llm.token_dim, generator=torch.Generator().manual_seed(0))
            * 0.01).to(llm.dtype)

    def timed(fn):
        seconds, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            seconds.append(time.perf_counter() - t0)
        return statistics.median(seconds), out

    full_s, full = timed(lambda: full_forwards(llm, soft, prompts, choices))
    shared_s, shared = timed(lambda: llm.choice_logprobs(soft, prompts, choices))
    result = {"benchmark": "bench_choice_prefill", "rows": len(prompts), "labels": len(choices),
              "label_tokens": [len(t) for t in llm._tokenize(choices)],
              "prompt_tokens": [len(p) for p in llm.prompt_ids(prompts)],
              "seconds": {"one forward per row and label": round(full_s, 3), "one prefill per row": round(shared_s, 3)},
              "ratio": round(full_s / shared_s, 2), "max_abs_diff": float((full - shared).abs().max()),
              "repeats": args.repeats, "threads": torch.get_num_threads(),
              "meta": run_meta(device="cpu", dtype=args.dtype)}
    print(json.dumps({k: result[k] for k in ("rows", "labels", "seconds", "ratio", "max_abs_diff")}))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
