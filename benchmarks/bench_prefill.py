"""What the soft prompt after the prompt saves: training examples per second with history-drop copies, and
scoring one item for many users, `prefix` (PPlug as published) against `after_prompt` (one shared prefill).

    python benchmarks/bench_prefill.py --data ../shared/data/real_lamp/music_ratings --dtypes float32 bfloat16 \
        --out benchmarks/results/prefill_cost.json

The model is PPlug as published (instruction + one user token, trainable MiniLM input encoder) around the
default frozen LLM (SmolLM2-135M-Instruct), 128-token prompts, on the first questions of the data's train split.
Each setting runs in a process of its own (so its peak memory is its own), with a warm-up and then the median
of `--repeats` steps:
- training: `batch` questions x k history-drop copies (`pplug.train.augment.history_copies`), one step =
  loss + backward (the optimizer's update is the same for every setting and left out); examples per second
  count every copy as an example, as training does;
- scoring: one input (a dev review) for N users with their own histories (`choice_logprobs` over "1".."5", the
  rows in one call), against the same N rows with the soft prompt in front (each row its own prompt pass).
Prints a table of medians and the ratios against `prefix`, and writes them with the host, dtype and command.

`--device` places the model (default cpu; `--device cuda` on a GPU, where each timed step waits for the GPU to
finish and the peak memory is the GPU allocator's, not the process's resident memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model(data: str, position: str, dtype: str, max_input_tokens: int, tiny: dict | None, device: str):
    from pplug.lamp.data import load_split
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel

    split = load_split(data, "train")
    cfg = PPlugConfig(task=split.task.name, soft_prompt_position=position, torch_dtype=dtype,
                      max_input_tokens=max_input_tokens, max_history=32, **(tiny or {}))
    import torch

    torch.manual_seed(0)
    return PPlugModel.from_config(cfg, cache_path=None, device=device), split


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KB


def _memory_base_mb(device) -> float:
    """What the loaded model holds, the peak's zero: on CUDA the allocator's memory now (its peak reset, so that
    loading does not count), else this process's peak resident memory so far."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _rss_mb()


def _peak_mb(device) -> float:
    """The peak memory so far: the GPU allocator's on CUDA (the model's own memory is there), else this process's."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mb()


def _finished(device) -> None:
    """Wait for the GPU's queued work: CUDA calls return before their kernels ran, so a clock read needs it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child(args: argparse.Namespace) -> dict:
    """One setting in this process: its median seconds and the peak memory it added to the loaded model."""
    import torch

    from pplug.lamp.data import load_split
    from pplug.methods.batches import build_batch
    from pplug.train.augment import history_copies

    torch.set_num_threads(args.threads)
    tiny = json.loads(args.tiny) if args.tiny else None
    model, split = _model(args.data, args.position, args.dtype, args.max_input_tokens, tiny, args.device)
    task, llm = split.task, model.llm
    base = _memory_base_mb(llm.device)
    times = []
    if args.what == "train":
        examples = [ex for ex in split.examples if len(ex.profile) > 2][: args.batch]
        rows = history_copies(examples, args.copies, seed=0)
        golds = split.golds()
        for ex in rows:
            ex.output = golds[ex.id]
        batch = build_batch(task, rows, "pplug", causal=not llm.is_seq2seq, max_history=32, with_targets=True,
                            budget=llm.prompt_budget())
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            loss = model(batch)
            loss.backward()
            model.zero_grad(set_to_none=True)
            _finished(llm.device)
            if r:
                times.append(time.perf_counter() - t0)
        n = len(rows)
    else:
        dev = load_split(args.data, "dev").examples[0]
        users = {}
        for ex in split.examples:  # one history per user, the latest question's
            users[ex.user_id or ex.id] = ex.profile
        profiles = list(users.values())
        examples = [type(dev)(f"u{i}", dev.input, profiles[i % len(profiles)]) for i in range(args.users)]
        batch = build_batch(task, examples, "pplug", causal=not llm.is_seq2seq, max_history=32, with_targets=False,
                            budget=llm.prompt_budget())
        labels = list(task.labels)
        chunk = args.users if args.position == "after_prompt" else args.score_batch  # one prefill / each row its own
        with torch.no_grad():
            for r in range(args.repeats + 1):
                t0 = time.perf_counter()
                for s in range(0, args.users, chunk):
                    sub = type(batch)(batch.prompts[s:s + chunk], batch.queries[s:s + chunk],
                                      batch.histories[s:s + chunk],
                                      history_stats=batch.history_stats[s:s + chunk] if batch.history_stats else None)
                    model.choice_logprobs(sub, labels)
                _finished(llm.device)
                if r:
                    times.append(time.perf_counter() - t0)
        n = args.users
    prompt_tokens = statistics.mean(len(ids) for ids in llm.prompt_ids(batch.prompts))
    return {"seconds": statistics.median(times), "times": [round(t, 4) for t in times], "rows": n,
            "prompt_tokens": round(prompt_tokens, 1), "peak_mb_over_model": round(_peak_mb(llm.device) - base, 1),
            "llm_dtype": str(llm.dtype).replace("torch.", "")}


def run(args: argparse.Namespace, what: str, position: str, dtype: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", "--what", what, "--position", position, "--dtype", dtype,
           "--data", args.data, "--device", args.device, "--repeats", str(args.repeats), "--batch", str(args.batch),
           "--threads", str(args.threads), "--max-input-tokens", str(args.max_input_tokens),
           "--score-batch", str(args.score_batch), *(["--tiny", args.tiny] if args.tiny else []),
           *[x for k, v in extra.items() for x in (f"--{k}", str(v))]]
    if args.in_process:  # the same child's arguments, read back in this process
        res = one_setting(parse_args(cmd[2:]))
    else:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(f"bench_prefill: {' '.join(cmd[2:])} failed:\n{out.stderr[-2000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {what} {position} {dtype} {extra}: {res['seconds']:.3f} s for {res['rows']} rows", file=sys.stderr)
    return res


def one_setting(args: argparse.Namespace) -> dict:
    """A child's arguments name one setting: the first --copies k and the first --users n."""
    args.copies, args.users = args.copies[0], args.users[0]
    return child(args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="lamp_data/synthetic/ratings", help="a LaMP_3-shaped folder with train/dev")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--copies", nargs="+", type=int, default=[1, 4, 10], help="history-drop copies per question")
    ap.add_argument("--prefix-copies", nargs="+", type=int, default=[1, 4],
                    help="copies timed with the soft prompt in front (its cost per example does not fall with k)")
    ap.add_argument("--users", nargs="+", type=int, default=[1, 32, 256], help="users scored on one item")
    ap.add_argument("--batch", type=int, default=8, help="questions per training step")
    ap.add_argument("--score-batch", type=int, default=16, help="rows per pass when scoring with the prefix")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-input-tokens", type=int, default=128)
    ap.add_argument("--tiny", default=None, help="JSON of PPlugConfig fields (tests: a tiny LLM and encoder)")
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, auto")
    ap.add_argument("--out", default=None)
    ap.add_argument("--in-process", action="store_true",
                    help="every setting in this process, imports paid once (a check of the code, as gpu_suite --tiny "
                         "runs it: the peak memory is then the process's, not each setting's)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--what", choices=["train", "score"], help=argparse.SUPPRESS)
    ap.add_argument("--position", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(one_setting(args)))
        return 0
    from meta import run_meta

    results: dict = {"settings": {k: getattr(args, k) for k in ("data", "batch", "score_batch", "repeats",
                                                                "threads", "max_input_tokens", "in_process")},
                     "train": {}, "score": {}}
    for dtype in args.dtypes:
        train = results["train"][dtype] = {}
        for k in args.prefix_copies:
            train[f"prefix k={k}"] = run(args, "train", "prefix", dtype, copies=k)
        for k in args.copies:
            train[f"after_prompt k={k}"] = run(args, "train", "after_prompt", dtype, copies=k)
        base = train[f"prefix k={args.prefix_copies[0]}"]
        per = base["seconds"] / base["rows"]
        for row in train.values():
            row["examples_per_s"] = round(row["rows"] / row["seconds"], 2)
            row["cheaper_per_example_than_prefix"] = round(per / (row["seconds"] / row["rows"]), 2)
        score = results["score"][dtype] = {}
        for n in args.users:
            pre = run(args, "score", "prefix", dtype, users=n)
            aft = run(args, "score", "after_prompt", dtype, users=n)
            score[f"{n} users"] = {"prefix": pre, "after_prompt": aft,
                                   "cheaper_than_prefix": round(pre["seconds"] / aft["seconds"], 2)}
    results["meta"] = run_meta(device=args.device, dtype="/".join(args.dtypes))
    for dtype in args.dtypes:
        print(f"\ntraining, {dtype} ({args.batch} questions a step):")
        print("| setting | rows | s / step | examples / s | per example vs prefix k=1 | peak MB over the model |")
        print("|---|---|---|---|---|---|")
        for name, r in results["train"][dtype].items():
            print(f"| {name} | {r['rows']} | {r['seconds']:.2f} | {r['examples_per_s']} | "
                  f"{r['cheaper_per_example_than_prefix']}x | {r['peak_mb_over_model']} |")
        print(f"\nscoring one item, {dtype}:")
        print("| users | prefix s | after_prompt s | ratio |")
        print("|---|---|---|---|")
        for name, r in results["score"][dtype].items():
            print(f"| {name} | {r['prefix']['seconds']:.3f} | {r['after_prompt']['seconds']:.3f} | "
                  f"{r['cheaper_than_prefix']}x |")
    if args.out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
