"""`pplug evaluate`: every method on the same examples with the same frozen LLM, side by side.

    pplug evaluate --checkpoint checkpoints/bench --data lamp_data/synthetic --split dev --out eval/preds.json

Checkpoints: each trainable method has its own trained weights (`python train.py --model.method X`
writes `checkpoints/<run>/final/`). `--checkpoint` takes any mix of
- `method=DIR` pairs (`pplug=checkpoints/a prompt-tuned=checkpoints/b/final`);
- a checkpoint folder, or a run folder (its serving version: LATEST, else final/; `pplug.core.checkpoints.resolve`);
  the method, retrieval_k and retriever are the folder's own (`pplug_config.json`);
- a folder of runs (`checkpoints/bench/<method>/final/`, as benchmarks/bench_real_lamp.py writes).
`none` needs no checkpoint (the frozen LLM as is); `pplug+retrieval` falls back to the `pplug` weights
with a top-1 retrieved item when it has no weights of its own (as the PPlug paper adds retrieval).
A method plug-in's folder (`plugins`; the command line's `--hub DIR`, a LoRA hub of the same base LLM) adds the
plug-in's methods (`lora-hub`: the input alone, each row through its user's retrieved adapters; with `pplug`
weights, `pplug+lora-hub`: those weights and the adapters together).
The frozen LLM and sentence encoder are loaded once and shared by all methods; decoding is
`pplug.decode.inference.predict`, the path that serves models. Outputs: LaMP-format predictions per method, a
metrics JSON, and one table (`pplug.lamp.metrics.format_table`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pplug.core.checkpoints import BASE_VERSION, LATEST_FILE, is_checkpoint, resolve
from pplug.core.tasks import TaskSpec
from pplug.lamp.data import subsample
from pplug.methods.registry import METHODS, get_method, get_plugin
from pplug.modeling.prefill import shared_prefill

from .floors import data_floors
from .inference import FrozenBaseline, check_decodings, predict


@dataclass
class MethodRun:
    """One method to evaluate: its weights (None for `none`) and prompt settings."""

    method: str
    checkpoint: Path | None = None
    retrieval_k: int | None = None
    retriever: str = "bm25"
    note: str = ""


def _is_run(path: Path) -> bool:
    """A checkpoint folder, or a run folder with a serving version."""
    return is_checkpoint(path) or is_checkpoint(path / BASE_VERSION) or (path / LATEST_FILE).is_file()


def _describe(path: Path, method: str | None = None) -> MethodRun:
    """The MethodRun of a checkpoint or run folder: its serving folder and its own saved settings."""
    from pplug.modeling.model import PPlugModel

    folder = resolve(path)
    config, _ = PPlugModel.load_checkpoint_config(folder)
    spec = get_method(method or config.method)
    if not spec.trainable:
        raise ValueError(f"{folder}: method 'none' takes no checkpoint")
    return MethodRun(spec.name, folder, retrieval_k=config.retrieval_k, retriever=config.retriever)


def resolve_checkpoints(specs: Sequence[str]) -> dict[str, MethodRun]:
    """`--checkpoint` values -> method -> MethodRun (see the module docstring for the accepted forms)."""
    runs: dict[str, MethodRun] = {}

    def add(run: MethodRun, origin: str) -> None:
        if run.method in runs and runs[run.method].checkpoint != run.checkpoint:
            raise ValueError(f"two checkpoints for method '{run.method}': {runs[run.method].checkpoint} and "
                             f"{run.checkpoint} (from {origin}); pass method=DIR pairs")
        runs[run.method] = run

    for s in specs:
        method, _, path_s = s.partition("=") if "=" in s and s.split("=", 1)[0] in METHODS else ("", "", s)
        path = Path(path_s)
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint folder not found")
        if _is_run(path) or method:
            add(_describe(path, method or None), s)
            continue
        subs = [sub for sub in sorted(p for p in path.iterdir() if p.is_dir()) if _is_run(sub)]
        if not subs:
            raise FileNotFoundError(f"{path}: no pplug_config.json, no final/ and no run folders with a final/ inside")
        for sub in subs:
            add(_describe(sub, sub.name if sub.name in METHODS else None), str(sub))
    return runs


# --------------------------------------------------------------------------------------------------
# evaluation


def load_models(runs: dict[str, MethodRun], base_model: str | None = None, encoder_name: str | None = None,
                embedding_cache: str | None = None, device: str = "auto", dtype: str | None = None):
    """Load the frozen LLM and sentence encoder once, then every method's weights around them.

    Args:
        runs: method -> MethodRun.
        base_model / encoder_name: frozen models when no checkpoint names them (`none` alone).
        embedding_cache: history-embedding cache file.
        device: "auto" (cuda, then mps, then cpu) or a device name.
        dtype: the frozen LLM's dtype (None: the checkpoints' `torch_dtype`, "auto" for new ones).

    Returns:
        (models: method -> model object, llm, history encoder, base config)
    """
    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.llm import FrozenLLM
    from pplug.modeling.model import PPlugModel

    configs = {m: PPlugModel.load_checkpoint_config(r.checkpoint)[0] for m, r in runs.items() if r.checkpoint}
    bases = {c.base_model_name_or_path for c in configs.values()}
    encs = {c.encoder_name_or_path for c in configs.values()}
    if len(bases) > 1 or len(encs) > 1:
        raise ValueError(f"checkpoints were trained on different frozen models (LLMs {sorted(bases)}, encoders "
                         f"{sorted(encs)}); methods must share one to be compared")
    base_cfg = next(iter(configs.values()), None)
    base = base_model or (base_cfg.base_model_name_or_path if base_cfg else "default")
    enc_name = encoder_name or (base_cfg.encoder_name_or_path if base_cfg else "default")
    if base_cfg is None:
        base_cfg = PPlugConfig(base_model_name_or_path=base, encoder_name_or_path=enc_name)
    llm = FrozenLLM(base, dtype=dtype or base_cfg.torch_dtype, device=device,
                    max_input_tokens=base_cfg.max_input_tokens, max_target_tokens=base_cfg.max_target_tokens)
    encoder = HistoryEncoder(enc_name, cache_path=embedding_cache, device=llm.device)
    models: dict[str, Any] = {}
    for m, r in runs.items():
        if r.checkpoint is None:
            models[m] = FrozenBaseline(llm)
        else:
            models[m] = PPlugModel.from_pretrained(r.checkpoint, llm=llm, history_encoder=encoder).eval()
    return models, llm, encoder, base_cfg


def evaluate(
    checkpoints: Sequence[str],
    data: str,
    split: str = "dev",
    methods: Sequence[str] | None = None,
    max_examples: int | None = None,
    decodings: Sequence[str] | None = None,
    out: str | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    base_model: str | None = None,
    embedding_cache: str | None = None,
    floors: bool = False,
    num_beams: int = 1,
    progress: bool = True,
    persona: bool = False,
    max_new_tokens: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    decoding_options: Any = None,
    plugins: dict[str, str] | None = None,
    share_prefill: bool = True,
) -> dict:
    """Evaluate methods on one split and write predictions + metrics.

    Args:
        checkpoints: `--checkpoint` values (see module docstring); may be empty for `none` alone.
        data: folder with the LaMP split files.
        split: split name ("dev").
        methods: methods to run (None: `none` + every method with weights, + pplug+retrieval when pplug has some).
        max_examples: seeded random subset of the split.
        decodings: "argmax", "expected" and/or "median" (the last two apply to ratings; other tasks ignore them),
            or a generation task's candidate decodings. None: each checkpoint's saved decoding (what the model
            serves), the first checkpoint's for methods without weights. Every row names its decoding.
        out: predictions path; one method -> exactly this file, several -> `<stem>.<method>.json`; the metrics
            go to `<stem>.metrics.json`. None: `<run>/eval/<split>_preds.json` of the first checkpoint, or
            `eval/<split>_preds.json`.
        batch_size: rows per forward pass (None: 16 on CPU, 64 on a GPU).
        seed: subsampling seed.
        base_model: frozen LLM for `none` when no checkpoint names one.
        embedding_cache: history-embedding cache file.
        floors: also score the no-model floors (`pplug.decode.floors`, fitted on the data's train split).
        num_beams: beams for generation tasks.
        progress: progress bars on stderr.
        persona: write the persona derived from each user's history into every method's prompt (the AI
            Persona ablation; pair it with checkpoints trained with `--data.persona true`).
        max_new_tokens: generation budget of generation tasks (None: the task's, `TaskSpec.max_new_tokens`).
        device: "auto" (cuda, then mps, then cpu) or a device name.
        dtype: the frozen LLM's dtype (None: the checkpoints' own; "auto" decides for the device).
        decoding_options: a `pplug.decode.choose.DecodingSpec` with the sampling / selection settings of the
            candidate decodings ("greedy", "beam", "mbr", "preference") of generation tasks.
        plugins: method plug-in name -> its folder (`{"hub": "hubs/lamp3"}`: a LoRA hub or hub run folder for
            `lora-hub`, `pplug+lora-hub`); each must be made for the checkpoints' base LLM.
        share_prefill: with a checkpoint whose soft prompt comes after the prompt, the methods read each
            question's prompt prefill once between them, to score labels and to generate
            (`pplug.modeling.prefill.shared_prefill`): the same scores and texts at a fraction of the passes; a
            plug-in method (its own LLM weights) prefills for itself.

    Returns:
        {"task", "split", "n", "metrics": {row: {metric: value}}, "files": {...}, "seconds": {...},
         "cost": {row: {"candidates_per_row", "seconds_per_row"}} (generation tasks)}
    """
    from pplug.core.io import atomic_write_json
    from pplug.lamp.data import load_split, write_outputs
    from pplug.lamp.metrics import format_table, score

    if decodings is not None:
        check_decodings(decodings)
    runs = resolve_checkpoints(checkpoints)
    if methods is None:
        methods = ["none"] + [m for m in METHODS if m in runs]
        if "pplug" in runs and "pplug+retrieval" not in runs:
            methods.append("pplug+retrieval")
        for name in plugins or {}:
            methods += [m.name for m in get_plugin(name).methods if m.weights_of is None or m.weights_of in runs]
    methods = [get_method(m).name for m in methods]
    plugins = dict(plugins or {})
    selected: dict[str, MethodRun] = {}
    for m in methods:
        spec = get_method(m)
        if spec.plugin is not None and spec.plugin not in plugins:
            raise ValueError(f"method '{m}' needs {get_plugin(spec.plugin).needs}")
        with_plugin = f"{spec.plugin} {plugins[spec.plugin]}" if spec.plugin else ""
        if not spec.trainable:
            selected[m] = MethodRun(m, note=with_plugin)
        elif m in runs:
            selected[m] = runs[m]
        elif spec.weights_of in runs:  # another method's weights, run with retrieval or a plug-in
            r = runs[spec.weights_of]
            added = with_plugin or f"top-{spec.retrieval_k} retrieved item"
            selected[m] = MethodRun(m, r.checkpoint, retrieval_k=spec.retrieval_k or None, retriever=r.retriever,
                                    note=f"{spec.weights_of} weights + {added}")
        else:
            raise ValueError(f"method '{m}' needs trained weights: train them with `python train.py --model.method "
                             f"{m}` and pass --checkpoint {m}=checkpoints/<run>")
    if plugins and base_model is None and not any(r.checkpoint for r in selected.values()):
        name, folder = next(iter(plugins.items()))  # a plug-in's method alone: the LLM it was made for
        base_model = get_plugin(name).base_model(folder)
    models, llm, encoder, base_cfg = load_models(selected, base_model=base_model, embedding_cache=embedding_cache,
                                                 device=device, dtype=dtype)
    loaded_plugins = {name: get_plugin(name).load(folder, llm, encoder, cache_path=embedding_cache)
                      for name, folder in plugins.items()}  # onto `llm`; another base LLM: a one-line error
    loaded = load_split(data, split, None if not any(r.checkpoint for r in selected.values()) else base_cfg.task)
    task = loaded.task
    for name, plugin in loaded_plugins.items():
        if plugin.task != task.name:
            raise ValueError(f"{plugins[name]}: a {name} for {plugin.task}, but {data} holds {task.name}")
    for m, r in selected.items():
        if r.checkpoint is not None and models[m].config.task != task.name:
            raise ValueError(f"{r.checkpoint}: trained for {models[m].config.task}, but {data} holds {task.name}")
    examples = subsample(loaded.examples, max_examples, seed)
    golds = {ex.id: ex.output for ex in examples if ex.output is not None}
    if decodings is not None:
        foreign = [d for d in decodings if d not in task.decodings and d not in ("expected", "median")]
        if foreign:
            raise ValueError(f"--decoding {foreign[0]} does not apply to {task.name}; it decodes with "
                             f"{', '.join(task.decodings)}")
    # unless asked otherwise, each method decodes as it serves: its checkpoint's saved decoding (a method without
    # weights: the first checkpoint's, else the task's first)
    saved = {m: models[m].config.decoding for m, r in selected.items() if r.checkpoint is not None}
    fallback = next(iter(saved.values()), task.decodings[0])
    method_decs = {m: applicable_decodings(task, decodings if decodings is not None else [saved.get(m, fallback)])
                   for m in selected}
    decs = list(dict.fromkeys(d for ds in method_decs.values() for d in ds))

    out_path = Path(out) if out else _default_out(selected, split)
    stem = out_path.with_suffix("") if out_path.suffix == ".json" else out_path
    many = sum(len(ds) for ds in method_decs.values()) > 1
    results: dict[str, dict[str, float]] = {}
    files: dict[str, str] = {}
    seconds: dict[str, float] = {}
    all_preds: dict[str, dict[str, str]] = {}
    cost: dict[str, dict[str, float]] = {}
    after = any(r.checkpoint is not None and models[m].soft_prompt_position == "after_prompt"
                for m, r in selected.items())
    sharing = share_prefill and after and not llm.is_seq2seq
    with (shared_prefill(llm) if sharing else contextlib.nullcontext()) as store:
        for m, r in selected.items():
            llm.prefill_store = store if get_method(m).plugin is None else None  # a LoRA changes the prompt's keys
            t0 = time.monotonic()
            cfg = models[m].config if r.checkpoint is not None else base_cfg
            max_hist = cfg.max_history
            # the LLM is shared: apply this method's prompt budget (from_pretrained set the last loaded one's)
            llm.max_input_tokens, llm.max_target_tokens = cfg.max_input_tokens, cfg.max_target_tokens
            personas = None
            if persona:
                from pplug.persona.from_history import history_personas

                personas = history_personas(task, examples, max_hist)
            # label decodings share one pass; generation decodings run one at a time, so each has its own cost
            for group in [[d] for d in method_decs[m]] if task.is_generation else [method_decs[m]]:
                stats: dict = {}
                preds = predict(models[m], task, examples, m, group, batch_size=batch_size, max_history=max_hist,
                                retrieval_k=r.retrieval_k, retriever=r.retriever, encoder=encoder,
                                num_beams=num_beams, max_new_tokens=max_new_tokens, progress=progress,
                                personas=personas, options=decoding_options, stats=stats)
                for dec, p in preds.items():
                    row = prediction_row(m, dec)
                    all_preds[row] = p
                    if stats.get("rows"):
                        cost[row] = {"candidates_per_row": round(stats["candidates"] / stats["rows"], 3),
                                     "seconds_per_row": round(stats["seconds"] / stats["rows"], 4)}
            seconds[m] = round(time.monotonic() - t0, 2)
    if floors:
        for name, p in data_floors(task, examples, data, seed).items():
            all_preds[f"floor: {name}"] = p
    for row, p in all_preds.items():
        if golds and len(golds) == len(examples):
            results[row] = score(task, p, golds)
        if not row.startswith("floor:"):
            path = prediction_path(stem, row) if many else Path(f"{stem}.json")  # `out` itself (a dotted name too)
            write_outputs(path, task.name, p)
            files[row] = str(path)
    report = {"task": task.name, "split": split, "data": str(data), "n": len(examples),
              "decodings": decs, "metrics": results, "files": files, "seconds": seconds, "cost": cost,
              "checkpoints": {m: str(r.checkpoint) if r.checkpoint else None for m, r in selected.items()},
              "notes": {m: r.note for m, r in selected.items() if r.note},
              **({"prefill": {"prompts_prefilled": store.misses, "prompts_reused": store.hits}} if store else {}),
              **{name: str(folder) for name, folder in plugins.items()}}
    metrics_path = Path(f"{stem}.metrics.json")
    atomic_write_json(metrics_path, report)
    report["metrics_file"] = str(metrics_path)
    if results:
        report["table"] = format_table(results, title=f"{task.name} {split} (n={len(examples)}, {data})")
    return report


def prediction_row(method: str, decoding: str) -> str:
    """The results row of `method` under `decoding`: "pplug [median]", "none [argmax]". Every row names its
    decoding, so a table never leaves a reader guessing which one a checkpoint was scored with."""
    return f"{method} [{decoding}]"


def applicable_decodings(task: TaskSpec, decodings: Sequence[str]) -> list[str]:
    """The asked decodings the task has, else its default (a generation task asked for rating decodings)."""
    return [d for d in decodings if d in task.decodings] or [task.decodings[0]]


def scored_rows(task: TaskSpec, method: str, decodings: Sequence[str]) -> list[str]:
    """The rows `evaluate` writes for `method` when asked for `decodings`."""
    return [prediction_row(method, d) for d in applicable_decodings(task, decodings)]


def prediction_path(stem: str | Path, row: str) -> Path:
    """Where `evaluate` writes a row's predictions when it writes several rows: `<stem>.<row slug>.json`."""
    slug = row.replace(" [", ".").replace("]", "").replace(" ", "_").replace(":", "")
    return Path(f"{stem}.{slug}.json")


def _default_out(selected: dict[str, MethodRun], split: str) -> Path:
    for r in selected.values():
        if r.checkpoint is not None:
            return r.checkpoint.parent / "eval" / f"{split}_preds.json"
    return Path("eval") / f"{split}_preds.json"


__all__ = ["MethodRun", "evaluate", "load_models", "prediction_path",
           "prediction_row", "resolve_checkpoints", "scored_rows"]
