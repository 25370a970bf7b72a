"""LoRA hub quality on one real set: `lora-hub` and `pplug+lora-hub` beside `none` and `pplug`, the same frozen LLM,
budget and dev questions, with OPPU-style per-user LoRA on a few users as the expensive reference.

    python benchmarks/bench_lora_hub.py --set music_ratings --seeds 0 1 2
    python benchmarks/bench_lora_hub.py --set music_ratings --seeds 0 1 2 --slices cold-start \
        --pplug-checkpoints checkpoints/ablation/music_ratings/lr1e-3 --pplug-run base

Per seed (`--seeds`), on the set's train split (configs/real/<set>.yaml) and the same seeded train subsample
(`--max-train`, subsampled with the seed, as train.py's data.seed does):

- PPlug: trained by train.py (`bench_real_lamp.train_method`, `--max-steps` steps), or reused from
  `--pplug-checkpoints DIR` laid out as `DIR/seed<s>/<--pplug-run>/final` (bench_ablation's `base` runs are);
- the hub: `pplug.hub.train.train_hub` (what `pplug hub train` runs) on the frozen LLM, encoder, dtype and
  prompt budget of that PPlug checkpoint: `--k` groups of users by persona text, one LoRA each plus the general
  one, at most `--hub-steps` optimizer steps per adapter;
- OPPU (one PEFT LoRA per user, Tan et al. 2024): for `--oppu-users` dev users drawn with `--seed` (the same
  users for every training seed), one adapter per user trained by the hub's own loop (`fit_adapter`, the `none`
  method's prompts, as the hub's adapters) on that user's history items turned into (input -> output) examples
  (`pplug.adapt.fast.item_example`), at most `--oppu-steps` steps; an item whose input is one of that user's
  scored dev questions is left out.

Scored on the same seeded dev questions (`--max-dev`, `--seed`) with `pplug.decode.evaluate.evaluate(..., plugins={"hub": DIR})`:
`none`, `pplug`, `lora-hub`, `pplug+lora-hub` (all rating decodings for ratings), plus the no-model floors.
Each cell is mean ± sd over the seeds (`none` and the floors do not depend on the seed); paired bootstrap 95%
intervals (`pplug.lamp.stats.summarize`, seeds pooled per question) of `pplug+lora-hub` and `lora-hub` minus `pplug`,
`none` and the floors, and of `pplug` minus `none` and the floors. OPPU is scored on its users' dev questions only
(slice "oppu"), beside every other row restricted to those same questions, with the intervals of OPPU minus
each; with 8 users that is 8 questions on music_ratings and acl_titles (one dev question per user), so its
intervals are wide: it is a reference, not a verdict.

Shift slices (`--slices`, the semantics of `bench_real_lamp.build_slices`): cold-start (users with at most 4
history items, or every dev question cut to its 4 latest items where fewer than `--cold-start-min` users are that
cold); time-shift (each training user's latest training question held out: PPlug *and the hub* then train on
the rest, the `fit` split, into their own `seed<s>_fit` folders; dev is scored with those models too, and
`--pplug-checkpoints` is refused since those runs trained on the full split); time-shift-dev (dev questions
dated after their user's training questions, no retraining; skipped with a message where histories are not
dated). OPPU is scored on dev only.

A run whose weights and `<name>.train_seconds` mark exist is reused (an interrupted benchmark resumes); a
`<name>.settings.json` beside the mark records what trained it, and a rerun with other training settings stops
rather than mixing runs (use another `--checkpoints`). Predictions are decoded again unless an earlier scoring
of the same slice, newer than the weights, answers every question (`bench_real_lamp.earlier_predictions`).
Writes benchmarks/results/lora_hub_<set>.json (`--out`), rendered by `benchmarks/report.py`'s `lora_hub`.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_lamp import (  # noqa: E402
    ROOT,
    SETS,
    build_slices,
    check_against_evaluate,
    earlier_predictions,
    pearson_rows,
    run_evaluate,
    train_device_args,
    train_method,
    trained_split,
)
from meta import run_meta  # noqa: E402

SLICES = ("cold-start", "time-shift", "time-shift-dev")
HUB_METHODS = ("lora-hub", "pplug+lora-hub")
SCORED = ("none", "pplug", *HUB_METHODS)
OPPU = "oppu"
"""The row name of the per-user LoRA reference (and of its slice, the OPPU users' dev questions)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "real_lamp"), help="real_lamp folder")
    p.add_argument("--set", default="music_ratings", choices=SETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (hub, PPlug, OPPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev subsample and of the OPPU users")
    p.add_argument("--k", type=int, default=8, help="hub groups, one adapter each besides the general one")
    p.add_argument("--hub-steps", type=int, default=20, help="optimizer steps per hub adapter at most")
    p.add_argument("--hub-epochs", type=int, default=1, help="passes over each group's examples (capped by steps)")
    p.add_argument("--hub-lr", type=float, default=2e-4, help="peak lr of the hub's LoRA weights (`pplug hub train`)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank of the hub and OPPU adapters")
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2, help="hub adapters retrieved per user")
    p.add_argument("--max-steps", type=int, default=100, help="PPlug optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="training batch of PPlug, the hub and OPPU")
    p.add_argument("--max-train", type=int, default=1600, help="seeded train subsample (PPlug and the hub)")
    p.add_argument("--max-dev", type=int, default=150, help="seeded dev subsample (the same for every row)")
    p.add_argument("--max-input-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default: the task's)")
    p.add_argument("--oppu-users", type=int, default=8, help="dev users with a LoRA of their own (0: no OPPU)")
    p.add_argument("--oppu-steps", type=int, default=20, help="optimizer steps per user adapter at most")
    p.add_argument("--oppu-epochs", type=int, default=3, help="passes over a user's history (capped by steps)")
    p.add_argument("--oppu-lr", type=float, default=5e-4, help="peak lr of the per-user LoRA weights")
    p.add_argument("--oppu-min-items", type=int, default=2, help="history items a user needs to be drawn for OPPU")
    p.add_argument("--slices", nargs="+", default=[], choices=SLICES, help="shift slices scored besides dev")
    p.add_argument("--cold-start-min", type=int, default=50,
                   help="fewest naturally cold questions (<= 4 history items) before profiles are cut instead")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "lora_hub"),
                   help="runs and predictions (git-ignored): <set>/seed<s>/{pplug,hub,oppu}")
    p.add_argument("--pplug-checkpoints", default=None, metavar="DIR",
                   help="reuse trained PPlug runs DIR/seed<s>/<--pplug-run>/final instead of training")
    p.add_argument("--pplug-run", default="base", help="the run name under --pplug-checkpoints (default: base)")
    p.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/lora_hub_<set>.json)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the questions")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--embedding-cache", default=None, help="embedding cache file (default: the shared pplug cache)")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra train.py arguments (last)")
    args = p.parse_args(argv)
    if args.pplug_checkpoints and "time-shift" in args.slices:
        p.error("time-shift trains PPlug on the fit split; --pplug-checkpoints runs trained on the whole train split")
    if min(args.k, args.hub_steps, args.max_steps, args.oppu_steps, args.oppu_epochs, args.hub_epochs) < 1:
        p.error("--k, --hub-steps, --hub-epochs, --max-steps, --oppu-steps and --oppu-epochs must be >= 1")
    try:
        train_device_args(args.device)
    except ValueError as e:
        p.error(str(e))
    # what bench_real_lamp.build_slices and train_method read
    args.slices_only, args.val_holdout, args.config_suffix = False, 0, ""
    return args


# --- runs: trained once, reused when their mark exists ----------------------------------------------------------


def _reused(mark: Path, done: Path, settings: dict) -> float | None:
    """Seconds of a finished run trained with `settings` (None: not finished); RuntimeError: trained otherwise."""
    if not (done.exists() and mark.is_file()):
        return None
    recorded = mark.with_suffix(".settings.json")
    if recorded.is_file():
        was = json.loads(recorded.read_text(encoding="utf-8"))
        if was != settings:
            diff = {k: (was.get(k), v) for k, v in settings.items() if was.get(k) != v}
            raise RuntimeError(f"{done} was trained with other settings ({diff}: recorded, asked); use another "
                               f"--checkpoints folder or delete it")
    return float(mark.read_text())


def _mark(mark: Path, seconds: float, settings: dict) -> None:
    from pplug.core.io import atomic_write_json

    mark.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(mark.with_suffix(".settings.json"), settings)
    mark.write_text(f"{seconds:.1f}\n")


def pplug_run(args, seed: int, ck: Path, train_root: Path, extra: tuple[str, ...]) -> tuple[Path, float | None]:
    """The PPlug run folder of `seed` (trained here, resumed, or reused from --pplug-checkpoints) and its seconds."""
    if args.pplug_checkpoints:
        root = Path(args.pplug_checkpoints) / f"seed{seed}"
        run = root / args.pplug_run
        if not (run / "final").is_dir():
            raise FileNotFoundError(f"{run / 'final'}: no trained PPlug run to reuse (--pplug-checkpoints)")
        mark = root / f"{args.pplug_run}.train_seconds"
        return run, float(mark.read_text()) if mark.is_file() else None
    settings = {"max_steps": args.max_steps, "batch_size": args.batch_size, "max_train": args.max_train,
                "max_input_tokens": args.max_input_tokens, "extra": list(extra), "train_args": args.train_args}
    run, mark = ck / "pplug", ck / "pplug.train_seconds"
    seconds = _reused(mark, run / "final", settings)
    if seconds is None:
        print(f"[{args.set}] seed {seed}: training pplug ({args.max_steps} steps) ...", flush=True)
        seconds = round(train_method(args.set, "pplug", args, ck, train_root, "pplug", extra, seed=seed), 1)
        _mark(mark, seconds, settings)
    return run, seconds


def checkpoint_config(run: Path) -> Any:
    """The PPlugConfig of a run's serving checkpoint: its frozen LLM, encoder, dtype, prompt budget, task."""
    from pplug.core.checkpoints import resolve
    from pplug.modeling.model import PPlugModel

    return PPlugModel.load_checkpoint_config(resolve(run))[0]


def hub_config(args, cfg: Any) -> Any:
    from pplug.hub.config import LoRAHubConfig

    return LoRAHubConfig(task=cfg.task, base_model_name_or_path=cfg.base_model_name_or_path,
                         encoder_name_or_path=cfg.encoder_name_or_path, r=args.r, lora_alpha=args.lora_alpha,
                         top_k=args.top_k, max_history=cfg.max_history)


def hub_run(args, cfg: Any, seed: int, ck: Path, train_root: Path, train_split: str
            ) -> tuple[Path, float, dict]:
    """Train (or resume) the seed's hub on the train subsample PPlug trained on; (folder, seconds, record)."""
    from pplug.hub.files import read_hub_json
    from pplug.hub.train import HubTrainConfig, train_hub
    from pplug.lamp.data import load_split, subsample
    from pplug.modeling.model import load_frozen

    folder, mark = ck / "hub", ck / "hub.train_seconds"
    settings = {"k": args.k, "hub_steps": args.hub_steps, "hub_epochs": args.hub_epochs, "hub_lr": args.hub_lr,
                "r": args.r, "lora_alpha": args.lora_alpha, "top_k": args.top_k, "batch_size": args.batch_size,
                "max_train": args.max_train, "train": f"{Path(train_root).name}:{train_split}",
                "base_model": cfg.base_model_name_or_path, "max_input_tokens": cfg.max_input_tokens}
    seconds = _reused(mark, folder / "hub.json", settings)
    if seconds is not None:
        return folder, seconds, read_hub_json(folder).get("training", {})
    split = load_split(train_root, train_split, cfg.task)
    examples = subsample(split.examples, args.max_train, seed)  # train.py's subsample at data.seed = seed
    print(f"[{args.set}] seed {seed}: training the hub (K={args.k}, <= {args.hub_steps} steps per adapter, "
          f"{len(examples)} examples) ...", flush=True)
    t0 = time.monotonic()
    llm, encoder = load_frozen(cfg, cache_path=args.embedding_cache, device=args.device)
    train = HubTrainConfig(num_adapters=args.k, epochs=args.hub_epochs, max_steps=args.hub_steps,
                           batch_size=args.batch_size, lr=args.hub_lr, seed=seed)
    hub, record = train_hub(llm, encoder, examples, hub_config(args, cfg), train,
                            log=lambda m: print(f"[{args.set}] seed {seed} hub: {m}", flush=True))
    hub.save_pretrained(folder, training=record)
    seconds = round(time.monotonic() - t0, 1)
    _mark(mark, seconds, settings)
    del hub, llm, encoder
    gc.collect()
    return folder, seconds, record


# --- OPPU: one LoRA per user ----------------------------------------------------------------------------------


def oppu_users(task: Any, examples: list, n: int, seed: int, min_items: int = 2) -> dict[str, dict]:
    """`n` users of the scored dev questions, drawn with `seed`: user -> {"history": their items, "train": those
    items as examples (each with the items before it as profile), "scored": their scored questions}.

    A user's history is the union of their questions' profiles (by item id), minus any item whose input is one of
    their scored questions (its gold would be trained on); users with fewer than `min_items` such items are not
    drawn. Empty where the task's items carry no (input, output) pair."""
    from pplug.adapt.fast import item_example

    if n <= 0 or not (task.input_field and task.output_field):
        return {}
    by_user: dict[str, list] = {}
    for ex in examples:
        if ex.user_id is not None:
            by_user.setdefault(ex.user_id, []).append(ex)
    out: dict[str, dict] = {}
    for user, scored in by_user.items():
        asked = {task.query_text(ex.input).strip() for ex in scored}
        items: dict[str, dict] = {}
        for ex in scored:
            for it in ex.profile:
                items.setdefault(str(it.get("id", len(items))), it)
        history = [it for it in items.values() if task.input_field in it and task.output_field in it
                   and str(it[task.output_field]).strip() and str(it[task.input_field]).strip() not in asked]
        if len(history) >= min_items:
            train = [item_example(task, it, history[:j], f"{user}:h{j}", user) for j, it in enumerate(history)]
            out[user] = {"history": history, "train": train, "scored": scored}
    drawn = sorted(random.Random(seed).sample(sorted(out), min(n, len(out))))
    return {u: out[u] for u in drawn}


def adapter_name(i: int) -> str:
    return f"user-{i:03d}"


def oppu_run(args, cfg: Any, seed: int, ck: Path, users: dict[str, dict]) -> tuple[Any, Any, float, dict]:
    """Train (or load) one adapter per OPPU user, all on one fresh frozen LLM; (hub, encoder, seconds, record).

    The adapters live in a `LoRAHub` (one per user instead of one per group: its peft plumbing, save and load);
    nothing is retrieved, each user's questions run through their own adapter (`score_oppu`)."""
    from pplug.hub.files import read_hub_json
    from pplug.hub.model import LoRAHub
    from pplug.hub.train import HubTrainConfig, fit_adapter
    from pplug.modeling.model import load_frozen

    folder, mark = ck / "oppu", ck / "oppu.train_seconds"
    settings = {"users": sorted(users), "oppu_steps": args.oppu_steps, "oppu_epochs": args.oppu_epochs,
                "oppu_lr": args.oppu_lr, "r": args.r, "lora_alpha": args.lora_alpha, "batch_size": args.batch_size,
                "base_model": cfg.base_model_name_or_path, "max_input_tokens": cfg.max_input_tokens}
    llm, encoder = load_frozen(cfg, cache_path=args.embedding_cache, device=args.device)
    seconds = _reused(mark, folder / "hub.json", settings)
    if seconds is not None:
        return LoRAHub.from_pretrained(folder, llm, encoder=encoder), encoder, seconds, \
            read_hub_json(folder).get("training", {})
    print(f"[{args.set}] seed {seed}: training {len(users)} per-user adapters (OPPU, <= {args.oppu_steps} steps "
          f"each) ...", flush=True)
    t0 = time.monotonic()
    config = hub_config(args, cfg)
    names = {u: adapter_name(i) for i, u in enumerate(users)}
    import torch

    torch.manual_seed(seed)  # peft draws each adapter's A at random
    hub = LoRAHub(llm, config, {names[u]: config.persona_text(d["history"]) for u, d in users.items()}, encoder,
                  general_description="unused (OPPU: each user's questions run through their own adapter)")
    train = HubTrainConfig(num_adapters=1, epochs=args.oppu_epochs, max_steps=args.oppu_steps,
                           batch_size=args.batch_size, lr=args.oppu_lr, seed=seed)
    record: dict = {"config": {"epochs": train.epochs, "max_steps": train.max_steps, "lr": train.lr,
                               "batch_size": train.batch_size, "seed": seed}, "adapters": {}}
    for u, d in users.items():
        record["adapters"][names[u]] = {"user": u, **fit_adapter(hub, names[u], d["train"], train,
                                                                log=lambda m: print(f"[{args.set}] seed {seed} "
                                                                                    f"oppu: {m}", flush=True))}
    hub.save_pretrained(folder, training=record)
    seconds = round(time.monotonic() - t0, 1)
    _mark(mark, seconds, settings)
    return hub, encoder, seconds, record


def score_oppu(args, cfg: Any, task: Any, hub: Any, encoder: Any, users: dict[str, dict]) -> dict[str, dict]:
    """Each OPPU user's scored questions through their own adapter (the `none` prompts the adapters trained on):
    row ("oppu", "oppu [expected]", ...) -> id -> prediction."""
    from pplug.decode.evaluate import applicable_decodings, prediction_row
    from pplug.decode.inference import SCORED_DECODINGS, FrozenBaseline, predict

    decs = applicable_decodings(task, SCORED_DECODINGS)
    names = {u: adapter_name(i) for i, u in enumerate(users)}
    out: dict[str, dict[str, str]] = {prediction_row(OPPU, d): {} for d in decs}
    model = FrozenBaseline(hub.llm)
    for u, d in users.items():
        with hub.use(names[u]):
            preds = predict(model, task, d["scored"], "none", decs, batch_size=args.eval_batch_size,
                            max_history=cfg.max_history, encoder=encoder, max_new_tokens=args.max_new_tokens)
        for dec, p in preds.items():
            out[prediction_row(OPPU, dec)].update(p)
    return out


# --- scoring -------------------------------------------------------------------------------------------------


def score_seed(args, task: Any, run: Path, hub: Path, ck: Path, name: str, folder: Path, split: str,
               max_examples: int | None, golds: dict[str, str], first: bool) -> tuple[dict, dict]:
    """One seed's rows on one slice: (row -> id -> prediction, row -> evaluate's metrics of the rows decoded now).

    `none` only with `first` (it does not depend on the seed). When every row was decoded before (newer than its
    weights, answering every question) they are read back; otherwise all are decoded again, together, so that every
    row runs at the PPlug checkpoint's prompt budget (`evaluate` takes `none`'s and the hub's from it)."""
    from pplug.decode.evaluate import scored_rows
    from pplug.decode.inference import SCORED_DECODINGS
    from pplug.lamp.data import load_outputs

    stem = ck / "eval" / f"{name}_preds"
    weights = {"none": [None], "pplug": [run / "final"], "lora-hub": [hub], "pplug+lora-hub": [run / "final", hub]}
    methods = [m for m in SCORED if first or m != "none"]
    preds: dict[str, dict[str, str]] = {}
    for m in methods:
        got = [earlier_predictions(stem, scored_rows(task, m, SCORED_DECODINGS), w, golds) for w in weights[m]]
        if not all(got):
            break
        preds.update(got[0])
    else:
        print(f"[{task.name}] {name}: reusing the predictions in {stem.parent}", flush=True)
        return preds, {}
    preds = {}
    report = run_evaluate(args, [f"pplug={run}"], folder, split, methods=methods, max_examples=max_examples,
                          decodings=SCORED_DECODINGS, out=str(stem.with_suffix(".json")), floors=False, seed=args.seed,
                          progress=False, plugins={"hub": str(hub)}, embedding_cache=args.embedding_cache,
                          max_new_tokens=args.max_new_tokens)
    for row, path in report["files"].items():
        preds[row] = load_outputs(path)[1]
    return preds, report["metrics"]


def retrieval_counts(args, hub: Path, examples: list) -> dict:
    """How the scored questions' users were served: cold start (the general adapter) and each top adapter."""
    from pplug.hub.retrieval import retrieve_from_folder

    _, got = retrieve_from_folder(hub, [ex.profile for ex in examples], cache_path=args.embedding_cache)
    first: dict[str, int] = {}
    for r in got:
        first[r.adapters[0]] = first.get(r.adapters[0], 0) + 1
    return {"cold_start": sum(r.cold_start for r in got), "top_adapter": dict(sorted(first.items())),
            "mean_top_weight": round(sum(r.weights[0] for r in got) / max(1, len(got)), 4)}


def hub_rows(rows, methods) -> list[str]:
    return [r for r in rows if r.split(" [")[0] in methods]


def run(args) -> dict:
    """Every seed's runs, every slice's scores; returns the results JSON (also written to --out)."""
    from pplug.core.io import atomic_write_json
    from pplug.decode.floors import data_floors
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.stats import comparison_lines, question_users, summarize, summary_table

    data = Path(args.root) / args.set
    if not (data / "dev_questions.json").is_file():
        raise FileNotFoundError(f"{data} not found (the shared real data is not on this machine)")
    ckpt_root = Path(args.checkpoints) / args.set
    slices, train_root, extra = build_slices(args, data, ckpt_root)
    train_split = trained_split(extra)
    suffix = "_fit" if train_split != "train" else ""
    train_s: dict[str, dict[str, float | None]] = {"pplug": {}, "hub": {}, "oppu": {}}
    runs: dict[int, tuple[Path, Path]] = {}
    hub_training: dict[str, dict] = {}
    cfg = None
    for seed in args.seeds:
        label, ck = f"seed{seed}", ckpt_root / f"seed{seed}{suffix}"
        run_dir, train_s["pplug"][label] = pplug_run(args, seed, ck, train_root, extra)
        cfg = checkpoint_config(run_dir)
        if args.pplug_checkpoints and cfg.max_input_tokens != args.max_input_tokens:
            print(f"[{args.set}] note: the reused PPlug run {run_dir} reads {cfg.max_input_tokens}-token prompts "
                  f"(--max-input-tokens {args.max_input_tokens}); the hub, OPPU and every row use its budget",
                  flush=True)
        hub_dir, train_s["hub"][label], record = hub_run(args, cfg, seed, ck, train_root, train_split)
        hub_training[label] = {n: {k: a.get(k) for k in ("users", "examples", "steps", "first_loss", "last_loss")}
                               for n, a in record.get("adapters", {}).items()}
        runs[seed] = (run_dir, hub_dir)
        print(f"[{args.set}] seed {seed}: pplug {train_s['pplug'][label]} s, hub {train_s['hub'][label]} s",
              flush=True)

    entry: dict = {"task": None, "seeds": args.seeds, "train_seconds": train_s, "hub_training": hub_training,
                   "slices": {}, "retrieval": {}}
    for name, (folder, split, max_examples, note) in slices.items():
        loaded = load_split(folder, split)
        task = loaded.task
        entry["task"] = task.name
        examples = subsample(loaded.examples, max_examples, args.seed)
        golds = {ex.id: ex.output for ex in examples}
        preds: dict[str, dict[str, dict[str, str]]] = {}
        reported: dict[str, dict[str, dict[str, float]]] = {}
        t0 = time.monotonic()
        for i, seed in enumerate(args.seeds):
            label, ck = f"seed{seed}", ckpt_root / f"seed{seed}{suffix}"
            run_dir, hub_dir = runs[seed]
            got, metrics = score_seed(args, task, run_dir, hub_dir, ck, name, folder, split, max_examples, golds,
                                      first=i == 0)
            for row, p in got.items():
                preds.setdefault(row, {})[label] = p
            for row, m in metrics.items():
                reported.setdefault(row, {})[label] = m
            if name == "dev":
                entry["retrieval"][label] = retrieval_counts(args, hub_dir, examples)
        floors = data_floors(task, examples, folder, args.seed)
        for floor, p in floors.items():
            preds[f"floor: {floor}"] = {f"seed{args.seeds[0]}": p}
        summary = summarize(task, golds, preds, hub_rows(preds, (*HUB_METHODS, "pplug")), n_resamples=args.resamples,
                            seed=args.seed, compare_refs=True, users=question_users(examples))
        check_against_evaluate(summary, reported, name)
        summary["pearson_r"] = pearson_rows(task, golds, preds)
        summary.update(note=note, split=split, eval_seconds=round(time.monotonic() - t0, 1))
        entry["slices"][name] = summary
        print(summary_table(summary, title=f"{args.set} {name} (n={len(examples)}; {note}); mean ± sd over seeds "
                                           f"{args.seeds}"))
        main_metrics = [m for m in task.metrics if m in ("mae", "rmse", "rouge1", "rougeL", "accuracy")]
        print("\n".join("  " + line for line in comparison_lines(summary, main_metrics)), flush=True)
        if name != "dev" or args.oppu_users <= 0:
            continue
        users = oppu_users(task, examples, args.oppu_users, args.seed, args.oppu_min_items)
        if not users:
            print(f"[{args.set}] OPPU skipped: no dev user with >= {args.oppu_min_items} usable history items",
                  flush=True)
            continue
        ids = [ex.id for d in users.values() for ex in d["scored"]]
        sub_golds = {i: golds[i] for i in ids}
        sub = {row: {label: {i: p[i] for i in ids} for label, p in by_label.items()} for row, by_label in preds.items()}
        t0 = time.monotonic()
        records = {}
        for seed in args.seeds:
            label, ck = f"seed{seed}", ckpt_root / f"seed{seed}{suffix}"
            hub, encoder, train_s["oppu"][label], records[label] = oppu_run(args, cfg, seed, ck, users)
            for row, p in score_oppu(args, cfg, task, hub, encoder, users).items():
                sub.setdefault(row, {})[label] = p
            del hub, encoder  # and the LLM they were on
            gc.collect()
        summary = summarize(task, sub_golds, sub, hub_rows(sub, (OPPU,)), n_resamples=args.resamples, seed=args.seed,
                            users=question_users(examples))  # summarize reads sub_golds' users only
        try:
            summary["pearson_r"] = pearson_rows(task, sub_golds, sub)
        except statistics.StatisticsError:  # a few questions whose golds are all the same rating
            summary["pearson_r"] = {}
        summary.update(note=f"the dev questions of {len(users)} users drawn with seed {args.seed}, each with a LoRA "
                            f"of their own trained on their history", split="dev",
                       eval_seconds=round(time.monotonic() - t0, 1),
                       # keyed by adapter name: the results file holds no user id of the data
                       users={adapter_name(i): {"history_items": len(d["history"]), "questions": len(d["scored"])}
                              for i, d in enumerate(users.values())},
                       training={label: {name: {k: a.get(k) for k in ("examples", "steps", "first_loss", "last_loss")}
                                         for name, a in r.get("adapters", {}).items()}
                                 for label, r in records.items()})
        entry["slices"][OPPU] = summary
        print(summary_table(summary, title=f"{args.set} OPPU users' dev questions (n={len(ids)}); mean ± sd over "
                                           f"seeds {args.seeds}"))
        print("\n".join("  " + line for line in comparison_lines(summary, main_metrics)), flush=True)

    settings = {k: v for k, v in vars(args).items() if k not in ("slices_only", "val_holdout", "config_suffix")}
    results = {"benchmark": "bench_lora_hub", "meta": run_meta(device=args.device, dtype=cfg.torch_dtype),
               "settings": settings, "sets": {args.set: entry}, "written": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"lora_hub_{args.set}.json")
    atomic_write_json(out, results)
    print(f"train seconds: {json.dumps(train_s)}")
    print(f"wrote {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except FileNotFoundError as e:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
