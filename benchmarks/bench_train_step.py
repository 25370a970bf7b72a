"""Training-step and scoring cost of the frozen LLM: logits for the positions a loss reads vs every position.

    python benchmarks/bench_train_step.py [--batch 8] [--repeats 7] [--dtype float32]

Loads the real default LLM (SmolLM2-135M-Instruct, offline) and times, as the median of interleaved repeats
(so load from other processes hits both settings alike), one training step of the frozen LLM with a trainable
soft prompt (loss + backward to the prompt) and one rating-scoring pass (`choice_logprobs` over "1".."5"),
on a batch of `make train`-like LaMP_3 prompts (about 60 tokens; a 1-token target + EOS):
- `keep`: `FrozenLLM` asks the model for logits only from the earliest scored position on (`logits_to_keep`);
- `all`: logits for every position (what a model without `logits_to_keep` gets).
Prints both medians and their ratio; checks that loss and scores agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import paired_times  # noqa: E402

from pplug.modeling.llm import FrozenLLM  # noqa: E402

INSTRUCTION = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
               "without further explanation. review: ")
REVIEWS = ["The notebook is a total waste of money. I have used it for a few weeks.",
           "The kettle works well and feels solid.", "The umbrella is okay but nothing special. Shipping was quick.",
           "The tent exceeded all my expectations. A friend recommended it.", "The mouse broke on the very first day.",
           "The watch is a good buy for the money. I got it as a gift.", "The toaster feels cheap and flimsy.",
           "The album is perfect in every way. I use it at home."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--prefix-tokens", type=int, default=3, help="soft-prompt vectors per row")
    ap.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    llm = FrozenLLM("default", dtype=args.dtype, max_input_tokens=128, max_target_tokens=8, device=args.device)
    prompts = [INSTRUCTION + REVIEWS[i % len(REVIEWS)] + "\nScore:" for i in range(args.batch)]
    targets = [str(1 + i % 5) for i in range(args.batch)]
    prefix = torch.randn(args.batch, args.prefix_tokens, llm.token_dim, device=llm.device, dtype=llm.dtype)
    prefix = (prefix * llm.token_norm / llm.token_dim**0.5).requires_grad_(True)
    keep_arg = llm._keep_arg

    outputs: dict[str, object] = {}

    def timed(setting: str, what: str):
        """One pass with (`keep`) or without (`all`) logits_to_keep; remembers its output for the check."""
        def run() -> None:
            llm._keep_arg = keep_arg if setting == "keep" else None
            if what == "step":  # loss + backward to the soft prompt
                loss = llm(prefix, prompts, targets)
                loss.backward()
                prefix.grad = None
                outputs[setting + what] = loss.detach().item()
            else:
                outputs[setting + what] = llm.choice_logprobs(prefix.detach(), prompts, ["1", "2", "3", "4", "5"])
        return run

    times = paired_times({(s, w): timed(s, w) for w in ("step", "score") for s in ("keep", "all")}, args.repeats)
    llm._keep_arg = keep_arg
    if keep_arg is None:
        print("this model has no logits_to_keep: both settings compute every position")
    same_loss = abs(outputs["keepstep"] - outputs["allstep"]) <= 1e-4 * max(1.0, abs(outputs["allstep"]))
    same_scores = torch.allclose(outputs["keepscore"], outputs["allscore"], atol=1e-4)
    n_tokens = max(len(p) for p in llm.prompt_ids(prompts)) + args.prefix_tokens
    print(f"SmolLM2-135M {llm.dtype} on {llm.device}, batch {args.batch} x ~{n_tokens} tokens, "
          f"{args.repeats} interleaved repeats (median s)")
    print("| pass | every position | from the first scored one | ratio |")
    print("|---|---|---|---|")
    for what in ("step", "score"):
        a, k = statistics.median(times[("all", what)]), statistics.median(times[("keep", what)])
        print(f"| {'training step (loss + backward)' if what == 'step' else 'scoring (choice_logprobs)'} | "
              f"{a:.3f} | {k:.3f} | {a / k:.2f}x |")
    print(f"same loss: {same_loss}, same scores: {same_scores}")
    return 0 if same_loss and same_scores else 1


if __name__ == "__main__":
    raise SystemExit(main())
