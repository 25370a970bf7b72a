"""What a LoRA hub costs: label scoring and short generation with no adapter, one shared adapter, or a
different adapter per row, on the shipped default LLM.

    OMP_NUM_THREADS=2 python benchmarks/bench_lora_hub_cost.py [--batches 1 8 32] [--repeats 5] [--new-tokens 8]

Loads the default frozen LLM (SmolLM2-135M-Instruct, offline) twice: once as it is ("none": no hub loaded), once
with a hub of K=8 fresh adapters plus the general one (`pplug.hub.model.LoRAHub`, r=8 on peft's default target
modules), their B matrices set at random so each adapter's update is not zero (the cost is the same either way).
For each batch size it times, interleaved `--repeats` times after one warm-up call per setting:

- scoring: `choice_logprobs` over LaMP_3's labels "1".."5" (one forward pass over the prompts);
- generation: greedy generation of exactly `--new-tokens` tokens per row;

each with no adapter, one adapter shared by the whole batch (`hub.use`, peft's active adapter), and the rows
spread over the 8 adapters (`hub.rows`: peft's mixed-adapter batch; at batch 1 one row through one adapter).
Reports the median seconds per row, the bytes of each adapter's LoRA tensors and the process's resident memory.
Retrieval (one sentence-encoder call per user's persona text, cached) is not timed here; the descriptions are
placeholder embeddings. Weights are untrained: this measures cost, not quality.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from meta import run_meta  # noqa: E402

from pplug.core.tasks import get_task  # noqa: E402
from pplug.hub.config import LoRAHubConfig  # noqa: E402
from pplug.hub.model import LoRAHub
from pplug.methods.prompts import compose_prompt  # noqa: E402
from pplug.modeling.llm import FrozenLLM  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "lora_hub_cost.json"
REVIEWS = ["battery died after two days", "works perfectly, love it", "good value for the price",
           "broke immediately", "the colours are lovely", "arrived late and scratched", "exactly as described",
           "would not buy again", "my kids use it every day", "average at best", "the strap snapped in a week",
           "sound is crisp and clear"]
LABELS = ["1", "2", "3", "4", "5"]
SETTINGS = ("none", "shared", "mixed")


class PlaceholderEncoder:
    """Stands in for the sentence encoder: the hub embeds its descriptions once at build time, which the
    timed calls never touch."""

    identity, dim = "placeholder", 16

    def encode(self, texts):
        g = torch.Generator().manual_seed(len(texts))
        return torch.nn.functional.normalize(torch.randn(len(texts), self.dim, generator=g), dim=-1)


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def adapter_bytes(hub: LoRAHub) -> dict[str, int]:
    """Bytes of each adapter's LoRA tensors (its A and B matrices on every target module)."""
    from peft.utils import get_peft_model_state_dict

    return {n: sum(t.numel() * t.element_size() for t in get_peft_model_state_dict(hub.peft, adapter_name=n).values())
            for n in hub.adapter_names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="the frozen LLM (default: the shipped SmolLM2-135M)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="rows per call")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per setting and batch size (median)")
    ap.add_argument("--new-tokens", type=int, default=8, help="tokens generated per row")
    ap.add_argument("--adapters", type=int, default=8, help="K adapters in the hub (besides the general one)")
    ap.add_argument("--r", type=int, default=8, help="LoRA rank")
    ap.add_argument("--dtype", default="float32", help="the LLM's dtype (default float32)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t_start = time.monotonic()
    rss = {"start": rss_bytes()}
    plain = FrozenLLM(args.model, dtype=args.dtype, device="cpu")
    rss["after_llm"] = rss_bytes()
    llm = FrozenLLM(args.model, dtype=args.dtype, device="cpu")
    rss["after_second_llm"] = rss_bytes()
    task = get_task("LaMP_3")
    names = [f"group-{i:02d}" for i in range(args.adapters)]
    config = LoRAHubConfig(task="LaMP_3", base_model_name_or_path=args.model, r=args.r, lora_alpha=2 * args.r)
    hub = LoRAHub(llm, config, {n: f"placeholder description {n}" for n in names}, PlaceholderEncoder())
    with torch.no_grad():
        for pname, p in llm.model.named_parameters():
            if "lora_B" in pname:
                p.normal_(0.0, 0.02)
    rss["after_hub"] = rss_bytes()
    sizes = adapter_bytes(hub)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)  # exactly that many per row

    def calls(b: int) -> dict[tuple[str, str], object]:
        prompts = [compose_prompt(task, task.make_input(REVIEWS[i % len(REVIEWS)])) for i in range(b)]
        mixed = [names[i % len(names)] for i in range(b)]

        def shared(fn):
            def run():
                with hub.use(names[0]):
                    return fn(llm)
            return run

        def per_row(fn):
            def run():
                with hub.rows(mixed):
                    return fn(llm)
            return run

        def score(m):
            return m.choice_logprobs(None, prompts, LABELS)

        def generate(m):
            return m.generate(None, prompts, **gen)

        out = {}
        for kind, fn in (("scoring", score), ("generation", generate)):
            out[(kind, "none")] = lambda fn=fn: fn(plain)
            out[(kind, "shared")] = shared(fn)
            out[(kind, "mixed")] = per_row(fn)
        return out

    results: dict = {"model": args.model, "adapters": args.adapters, "r": args.r, "new_tokens": args.new_tokens,
                     "labels": LABELS, "repeats": args.repeats, "threads": torch.get_num_threads(),
                     "adapter_bytes": sizes, "rss_bytes": rss, "seconds_per_row": {}, "seconds_per_call": {},
                     "meta": run_meta(device="cpu", dtype=args.dtype)}
    with torch.no_grad():
        for b in args.batches:
            fns = calls(b)
            for fn in fns.values():  # warm-up
                fn()
            times: dict = {k: [] for k in fns}
            for _ in range(args.repeats):
                for k, fn in fns.items():  # interleaved: other load on the CPU hits every setting alike
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            for (kind, setting), ts in times.items():
                med = statistics.median(ts)
                results["seconds_per_call"].setdefault(kind, {}).setdefault(setting, {})[str(b)] = round(med, 5)
                results["seconds_per_row"].setdefault(kind, {}).setdefault(setting, {})[str(b)] = round(med / b, 5)
            rss["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            rss["end"] = rss_bytes()
            results["seconds"] = round(time.monotonic() - t_start, 1)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")  # after every size
            line = ", ".join(f"{kind} {s} {results['seconds_per_row'][kind][s][str(b)] * 1000:.1f}"
                             for kind in ("scoring", "generation") for s in SETTINGS)
            print(f"batch {b}: ms per row: {line} ({results['seconds']:.0f} s so far)", flush=True)
    per = sizes[names[0]]
    print(f"one adapter: {per / 2**20:.2f} MiB of LoRA tensors; RSS {rss['end'] / 2**20:.0f} MiB "
          f"(peak {rss['peak'] / 2**20:.0f} MiB); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
