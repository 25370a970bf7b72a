"""Decoding that knows the user: greedy vs beam vs MBR vs preference (vs reward-MBR), per method, on real sets.

    python benchmarks/bench_decoding.py --set enron_subjects --checkpoint /tmp/dec-ckpts/dec-enron/final \\
        [--max-dev 60] [--num-samples 8] [--seeds 0 1 2] [--max-new-tokens 24] [--methods none pplug] \\
        [--preference-models DIR]

Every method decodes the same dev questions (a seeded subset) with the same frozen LLM. Greedy and beam run
once; the sampling decodings run once per sampling seed on one candidate pool per (method, seed): the greedy
output + `--num-samples` samples (`pplug.decode.choose.candidate_pools`), from which `mbr` (ROUGE-1 consensus),
`preference` (w = 0.5) and `preference w=1` (similarity to the user's past outputs alone) select; the pool is
shared, so the comparisons between them are paired. With `--preference-models` (a folder of `pplug prefs train`)
`reward-mbr` (w = 0.5: consensus and the user's retrieved facet reward) and `reward-mbr w=1` (the reward alone)
select from the same pools too, and the results go to `decoding_reward_<set>.json`. `oracle@pool` (the pool's best candidate by ROUGE-1 against
the gold) is the ceiling any selection rule could reach, not a decoding.

Reported per method and decoding: ROUGE-1 / ROUGE-L (sampling decodings: mean over seeds, with the per-seed
values), the paired bootstrap 95% interval of (decoding - greedy) over questions (per-question scores averaged
over seeds first; for reward-mbr also of (reward-mbr - preference), the same pools), and seconds per row
relative to greedy (greedy: its own pass; beam: its own pass; sampling decodings: pool time (greedy + samples)
+ selection time). Writes `benchmarks/results/decoding_<set>.json`
(metrics only). Data: /work/shared/data/real_lamp/<set> (skips with a message when absent).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
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

DATA = Path(os.environ.get("PPLUG_REAL_LAMP", "/work/shared/data/real_lamp"))
SELECTIONS = ("mbr", "preference", "preference w=1")
REWARD_SELECTIONS = ("reward-mbr", "reward-mbr w=1")


def row_rewards_for(pools, rows, past, args) -> list:
    """Each row's facet reward of its pool, as `--decoding reward-mbr` computes it (`row_rewards`: weights
    retrieved from the persona text of the user's history, the user's past outputs summarised)."""
    from pplug.decode.choose import DecodingSpec, RowContext
    from pplug.decode.preference import row_rewards

    spec = DecodingSpec("reward-mbr", preference_models=args.preference_models)
    ctx = RowContext(user_outputs=past, profiles=[ex.profile for ex in rows])
    return row_rewards([spec] * len(rows), pools, ctx, args.encoder)


def rouge_rows(preds: list[str], golds: list[str]) -> dict[str, list[float]]:
    """Per-question ROUGE-1 / ROUGE-L F (the scorer of pplug.lamp.metrics)."""
    from pplug.lamp.metrics import _rouge_scorer

    sc = _rouge_scorer()
    out: dict[str, list[float]] = {"rouge1": [], "rougeL": []}
    for p, g in zip(preds, golds):
        s = sc.score(g.strip(), p.strip())
        out["rouge1"].append(s["rouge1"].fmeasure)
        out["rougeL"].append(s["rougeL"].fmeasure)
    return out


def paired_bootstrap(diff: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of per-question differences and its percentile bootstrap 95% interval (questions resampled)."""
    rng = random.Random(seed)
    n = len(diff)
    means = sorted(sum(diff[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {"mean": sum(diff) / n, "lo": means[int(0.025 * n_boot)], "hi": means[int(0.975 * n_boot) - 1]}


def host() -> dict:
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "avx512_bf16": "avx512_bf16" in flags, "torch": torch.__version__}


def run_method(model, task, examples, method: str, args, budget) -> dict:
    """Predictions and seconds of every decoding for one method: {decoding: {"preds": [[...] per seed],
    "seconds": total, "candidates": total}}."""
    from pplug.decode.choose import (
        Candidates,
        DecodingSpec,
        candidate_pools,
        mbr_select,
        preference_select,
        reward_mbr_select,
        user_outputs,
    )
    from pplug.decode.inference import clean_generation, decode
    from pplug.methods.batches import build_batch

    max_hist = model.config.max_history if hasattr(model, "config") else None
    encoder = args.encoder
    res: dict[str, dict] = {}

    def add(name: str, seed_i: int, preds: list[str], seconds: float, cands: int) -> None:
        r = res.setdefault(name, {"preds": [[] for _ in range(len(args.seeds))], "seconds": 0.0, "candidates": 0})
        r["preds"][seed_i] += preds
        r["seconds"] += seconds
        r["candidates"] += cands

    golds_all = [ex.output for ex in examples]
    for start in range(0, len(examples), args.batch_size):
        rows = examples[start : start + args.batch_size]
        batch = build_batch(task, rows, method, causal=True, max_history=max_hist, with_targets=False, budget=budget)
        keys = [ex.id for ex in rows]
        past = [user_outputs(task, ex.profile, max_hist) for ex in rows]
        for name, spec in (("greedy", DecodingSpec("greedy")), ("beam", DecodingSpec("beam", num_beams=args.num_beams))):
            t0 = time.perf_counter()
            preds = decode(model, task, batch, decoding=name, options=spec, max_new_tokens=args.max_new_tokens)
            dt = time.perf_counter() - t0
            for si in range(len(args.seeds)):  # deterministic: the same predictions stand for every seed
                add(name, si, preds, dt if si == 0 else 0.0, len(rows) if si == 0 else 0)
        golds = golds_all[start : start + args.batch_size]
        for si, seed in enumerate(args.seeds):
            spec = DecodingSpec("mbr", num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                                seed=seed)
            t0 = time.perf_counter()
            pools = candidate_pools(model, batch, [spec] * len(rows), args.max_new_tokens, keys, clean_generation)
            t_pool = time.perf_counter() - t0
            k = len(pools[0].texts)
            t0 = time.perf_counter()
            rewards = row_rewards_for(pools, rows, past, args) if args.preference_models else None
            t_reward = time.perf_counter() - t0
            for name in SELECTIONS + (REWARD_SELECTIONS if rewards is not None else ()):
                t0 = time.perf_counter()
                picks = []
                for pool, user_past, reward in zip(pools, past, rewards or [None] * len(pools)):
                    c = Candidates(list(pool.texts))
                    if name == "mbr":
                        j = mbr_select(c, args.utility, encoder)
                    elif name in REWARD_SELECTIONS:
                        w = 1.0 if name == "reward-mbr w=1" else args.preference_weight
                        j = reward_mbr_select(c, reward, w, args.utility, encoder)
                    else:
                        w = 1.0 if name == "preference w=1" else args.preference_weight
                        j = preference_select(c, user_past, encoder, w, args.utility)
                    picks.append(c.texts[j])
                t_extra = t_reward if name in REWARD_SELECTIONS else 0.0
                add(name, si, picks, t_pool + t_extra + time.perf_counter() - t0, k * len(rows))
            best = []  # the ceiling: the pool's best candidate against the gold (not a decoding)
            for pool, g in zip(pools, golds):
                scores = rouge_rows(pool.texts, [g] * len(pool.texts))["rouge1"]
                best.append(pool.texts[max(range(len(scores)), key=scores.__getitem__)])
            add("oracle@pool", si, best, 0.0, 0)
        print(f"  {method}: {min(start + args.batch_size, len(examples))}/{len(examples)} rows", flush=True)
    return res


def summarise(res: dict, golds: list[str], n_seeds: int, n_boot: int) -> dict:
    """Metrics, per-seed values, paired intervals against greedy and the latency ratio."""
    n = len(golds)
    per_q: dict[str, dict[str, list[float]]] = {}
    out: dict[str, dict] = {}
    for name, r in res.items():
        seeds = [rouge_rows(p, golds) for p in r["preds"]]  # per seed: {metric: per-question}
        per_q[name] = {m: [statistics.fmean(s[m][q] for s in seeds) for q in range(n)] for m in ("rouge1", "rougeL")}
        out[name] = {m: statistics.fmean(per_q[name][m]) for m in ("rouge1", "rougeL")}
        out[name]["per_seed"] = {m: [round(statistics.fmean(s[m]), 4) for s in seeds] for m in ("rouge1", "rougeL")}
        if r["seconds"]:
            out[name]["seconds_per_row"] = r["seconds"] / (n * (1 if name in ("greedy", "beam") else n_seeds))
            out[name]["candidates_per_row"] = r["candidates"] / (n * (1 if name in ("greedy", "beam") else n_seeds))
    g_sec = out["greedy"]["seconds_per_row"]
    for name in out:
        if "seconds_per_row" in out[name]:
            out[name]["latency_vs_greedy"] = out[name]["seconds_per_row"] / g_sec
        # reward-mbr is set against greedy and against today's preference decoding, on the same pools
        for ref in ("greedy", "preference") if name in REWARD_SELECTIONS else ("greedy",):
            if name != ref and ref in per_q:
                out[name][f"minus_{ref}"] = {
                    m: paired_bootstrap([a - b for a, b in zip(per_q[name][m], per_q[ref][m])], n_boot)
                    for m in ("rouge1", "rougeL")}
    return out


def table(set_name: str, results: dict) -> str:
    lines = [f"**{set_name}** (n={results['n']}, {len(results['settings']['seeds'])} sampling seeds, "
             f"{results['settings']['num_samples']} samples + greedy)", "",
             "| method | decoding | ROUGE-1 | ROUGE-L | ROUGE-1 - greedy [95% CI] | ROUGE-L - greedy [95% CI] "
             "| s/row | x greedy |", "|---|---|---|---|---|---|---|---|"]
    for method, decs in results["methods"].items():
        for name, r in decs.items():
            d = r.get("minus_greedy")

            def ci(m: str, d: dict | None = d) -> str:
                return f"{d[m]['mean']:+.4f} [{d[m]['lo']:+.4f}, {d[m]['hi']:+.4f}]" if d else ""

            sec = f"{r['seconds_per_row']:.3f}" if "seconds_per_row" in r else ""
            ratio = f"{r['latency_vs_greedy']:.1f}" if "latency_vs_greedy" in r else ""
            lines.append(f"| {method} | {name} | {r['rouge1']:.4f} | {r['rougeL']:.4f} | {ci('rouge1')} | "
                         f"{ci('rougeL')} | {sec} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, choices=["acl_titles", "enron_subjects"])
    ap.add_argument("--checkpoint", required=True, help="the set's trained pplug final/ folder")
    ap.add_argument("--methods", nargs="+", default=["none", "pplug"], choices=["none", "pplug", "prompt-tuned"])
    ap.add_argument("--prompt-tuned", default=None, help="final/ folder of a prompt-tuned run (method prompt-tuned)")
    ap.add_argument("--max-dev", type=int, default=60, help="seeded random subset of the dev split")
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--preference-weight", type=float, default=0.5)
    ap.add_argument("--utility", default="rouge1", choices=["rouge1", "rougeL", "embedding"])
    ap.add_argument("--num-beams", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--preference-models", default=None,
                    help="facet models of `pplug prefs train`: adds reward-mbr (and reward-mbr w=1)")
    ap.add_argument("--out", default=None,
                    help="default: benchmarks/results/decoding_<set>.json (decoding_reward_<set>.json with "
                         "--preference-models)")
    args = ap.parse_args(argv)

    root = DATA / args.set
    if not (root / "dev_questions.json").is_file():
        print(f"skipped: {root}/dev_questions.json not found (set PPLUG_REAL_LAMP)")
        return 0
    from pplug.core.io import atomic_write_json
    from pplug.decode.evaluate import MethodRun, load_models
    from pplug.lamp.data import load_split, subsample

    t_start = time.perf_counter()
    runs = {"none": MethodRun("none"), "pplug": MethodRun("pplug", Path(args.checkpoint))}
    if "prompt-tuned" in args.methods:
        if not args.prompt_tuned:
            ap.error("--methods prompt-tuned needs --prompt-tuned DIR")
        runs["prompt-tuned"] = MethodRun("prompt-tuned", Path(args.prompt_tuned))
    runs = {m: r for m, r in runs.items() if m in args.methods or m == "pplug"}
    models, llm, encoder, cfg = load_models(runs)
    llm.model.to(getattr(torch, args.dtype))  # the benchmark's dtype, whatever the checkpoint trained in
    args.encoder = encoder
    loaded = load_split(root, "dev", cfg.task)
    task = loaded.task
    examples = subsample(loaded.examples, args.max_dev, 0)
    golds = [ex.output for ex in examples]
    llm.max_input_tokens, llm.max_target_tokens = cfg.max_input_tokens, cfg.max_target_tokens
    budget = llm.prompt_budget()
    results = {"set": args.set, "task": task.name, "n": len(examples), "host": host(),
               "meta": run_meta(device=str(llm.device), dtype=args.dtype),
               "settings": {k: v for k, v in vars(args).items() if k not in ("encoder",)}, "methods": {}}
    if args.preference_models:  # the facet models' own record: held-out pair accuracy, pairs, users
        from pplug.decode.preference import load_set

        prefs = load_set(args.preference_models, encoder)
        results["preference_models"] = {n: m.training_record for n, m in prefs.models.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        # warm-up outside the timings: the first-line token tables and one tiny pass of each kind
        llm.first_line_stop()
        llm.generate(None, ["warm up"], max_new_tokens=2)
        llm.sample(None, ["warm up"], num_samples=2, max_new_tokens=2)
        for m in args.methods:
            print(f"{args.set}: {m}", flush=True)
            res = run_method(models[m], task, examples, m, args, budget)
            results["methods"][m] = summarise(res, golds, len(args.seeds), args.bootstrap)
    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    stem = "decoding_reward" if args.preference_models else "decoding"
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"{stem}_{args.set}.json"
    atomic_write_json(out, results)
    print(table(args.set, results))
    print(f"wrote {out} ({results['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
