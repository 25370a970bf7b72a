"""Inference below Lightning: examples -> prompts -> decoded LaMP outputs, for every method.

    examples --build_batch (pplug.methods.batches)--> PPlugBatch --decode--> LaMP output strings
                (chunked by `predict`, retrieval per row)   (choice log-probs or generation)

One path serves `pplug.personalize`, `pplug generate`, `pplug evaluate`, `pplug user generate`, slow
adaptation's validation, train.py's `none` row and the LitModule's validation, so a model is always
scored by the code that serves it. Nothing here imports Lightning.

Decodings (`TaskSpec.decodings`): labels and ratings are decoded by scoring every label with
`choice_logprobs` (one forward pass), by the rules of `pplug.modeling.label_rules`: `argmax` takes the most
likely label; for ratings `expected` is the expected value of the distribution over "1".."5" (a float
string, which the official LaMP_3 scorer parses; it minimises the expected squared error, so RMSE) and
`median` its median (the smallest rating whose cumulative probability reaches 1/2; it minimises the expected
absolute error, so MAE). Generation tasks keep the first non-empty line of: `argmax` greedy (beam search
with `num_beams` > 1), or the per-row candidate decodings of `pplug.decode.choose` ("greedy", "beam", "mbr",
"preference", "reward-mbr"), whose settings may differ from row to row within one batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from pplug.core.runtime import default_batch_size
from pplug.core.runtime import progress as progress_bar
from pplug.core.tasks import DECODINGS_BY_KIND, OutputKind, TaskSpec, get_task
from pplug.methods.batches import build_batch, retrieve
from pplug.methods.registry import MethodPlugin, get_method, method_rows, require_plugin, resolve_k
from pplug.modeling.label_rules import decode_labels
from pplug.modeling.protocol import Personalizer

DECODINGS: tuple[str, ...] = tuple(dict.fromkeys(d for ds in DECODINGS_BY_KIND.values() for d in ds))
"""Every decoding name any task supports."""

SCORED_DECODINGS: tuple[str, ...] = DECODINGS_BY_KIND[OutputKind.RATING]
"""What the benchmarks score for every task: all rating decodings (argmax, expected, median); classification and
generation tasks keep argmax (greedy), since the candidate decodings cost several generations per row."""


def check_decodings(decodings: Sequence[str]) -> list[str]:
    """`decodings` as a list, or ValueError naming the valid ones (rating decodings on other tasks act as
    "argmax", so one command line can score a mix of tasks)."""
    out = list(decodings)
    for d in out:
        if d not in DECODINGS:
            raise ValueError(f"decoding must be one of {list(DECODINGS)}, got {d!r}")
    return out


def task_decodings(task: TaskSpec, main: str) -> list[str]:
    """The decodings worth scoring for `task`, `main` first: all of a rating task's, only `main` otherwise.

    Why only `main` for generation: its other decodings (beam, MBR and preference over sampled candidates)
    cost several greedy passes each, and validation during training runs this list at every check.
    """
    if task.output_kind is not OutputKind.RATING:
        return [main]
    return [main, *(d for d in task.decodings if d != main)]


class FrozenBaseline:
    """The `none` method: the frozen LLM on the raw prompt, with no trainable prefix.

    Exposes the same `generate` / `choice_logprobs` as PPlugModel (with an empty prefix), so the same
    decoding code serves every method.
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def generate(self, batch: Any, max_new_tokens: int | None = None, num_beams: int = 1) -> list[str]:
        return self.llm.generate(None, batch.prompts, max_new_tokens=max_new_tokens or 32, num_beams=num_beams)

    def choice_logprobs(self, batch: Any, choices: list[str]) -> torch.Tensor:
        return self.llm.choice_logprobs(None, batch.prompts, choices)


@torch.no_grad()
def decode(model: Personalizer, task: TaskSpec, batch: Any, decoding: str | Sequence[str] = "argmax", num_beams: int = 1,
           max_new_tokens: int | None = None, *, options: Any = None, specs: Sequence[Any] | None = None,
           rows: Any = None, stats: dict | None = None) -> Any:
    """Predictions for a text batch, as LaMP output strings (see the module docstring for the decodings).

    Args:
        model: a PPlugModel or a FrozenBaseline (anything with `choice_logprobs` and `generate`).
        task: the TaskSpec.
        batch: a PPlugBatch.
        decoding: one name, or a list of them (then a dict decoding -> predictions; label decodings share one
            forward pass).
        num_beams: beams of `argmax` for generation tasks.
        max_new_tokens: generation budget (None: `task.max_new_tokens`).
        options: a `pplug.decode.choose.DecodingSpec` with the sampling / selection settings of named decodings.
        specs: one DecodingSpec per row (generation tasks): rows decode with their own settings; returns a list.
        rows: a `pplug.decode.choose.RowContext` (row keys for the sampling seeds, users' past outputs, the encoder).
        stats: if given, gets the generation cost added ("rows", "candidates", "seconds").
    """
    budget = max_new_tokens or task.max_new_tokens
    if specs is not None:
        if task.labels:
            raise ValueError(f"per-row decoding specs apply to generation tasks, not {task.name}")
        from .choose import decode_rows

        return decode_rows(model, batch, list(specs), budget, rows, clean_generation, stats, first_line=True)
    many = not isinstance(decoding, str)
    decodings = check_decodings(decoding if many else [decoding])
    if task.labels:
        wrong = [d for d in decodings if d not in DECODINGS_BY_KIND[OutputKind.RATING]]
        if wrong:
            raise ValueError(f"decoding {wrong[0]!r} applies to generation tasks; {task.name} decodes with "
                             f"{', '.join(task.decodings)}")
    out: dict[str, list[str]] = {}
    if task.labels:
        probs = model.choice_logprobs(batch, list(task.labels)).float().cpu().softmax(dim=-1)  # (B, C)
        out = decode_labels(task, probs, decodings)
        return out if many else out[decodings[0]]
    for d in decodings:
        if d in task.decodings[1:]:  # the candidate decodings of pplug.decode.choose, settings per row
            from .choose import decode_rows, make_specs

            out[d] = decode_rows(model, batch, make_specs(d, len(batch.prompts), options), budget, rows,
                                 clean_generation, stats, first_line=True)
        elif "argmax" not in out:  # rating decodings mean argmax here: greedy (beams with num_beams > 1)
            t0 = time.monotonic()
            out["argmax"] = [clean_generation(t) for t in
                             model.generate(batch, max_new_tokens=budget, num_beams=num_beams)]
            if stats is not None:
                stats.update(rows=stats.get("rows", 0) + len(batch.prompts),
                             candidates=stats.get("candidates", 0) + len(batch.prompts),
                             seconds=stats.get("seconds", 0.0) + time.monotonic() - t0)
    out = {d: out[d if d in task.decodings[1:] else "argmax"] for d in decodings}
    return out if many else out[decodings[0]]


def clean_generation(text: str) -> str:
    """First non-empty line of a generated text, stripped (LLMs often continue past the answer)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def predict(model: Personalizer, task: TaskSpec | str, examples: Sequence[Any], method: str, decodings: Sequence[str],
            batch_size: int | None = None, max_history: int | None = None, retrieval_k: int | None = None,
            retriever: str = "bm25", encoder: Any = None, num_beams: int = 1, max_new_tokens: int | None = None,
            personas: Sequence[str | None] | None = None, progress: bool = False, options: Any = None,
            specs: Sequence[Any] | None = None, stats: dict | None = None) -> dict[str, dict[str, str]]:
    """Decode `examples` with one method, in chunks: decoding -> (example id -> prediction).

    Prompts come from `pplug.methods.batches.build_batch`, the code the training data module uses. Causal vs
    seq2seq prompts and the prompt budget are read off the model's LLM. Generation tasks also take the
    candidate decodings of `pplug.decode.choose`, set by `options` (a DecodingSpec) or `specs` (one DecodingSpec
    per example; returned under "per-row"); sampling seeds follow the example ids, so outputs do not depend
    on batching. `stats` gets the generation cost.

    Args:
        model: PPlugModel or FrozenBaseline.
        task: the TaskSpec (or its name).
        examples: pplug.lamp.data.Example records; rows may belong to different users.
        method: the prompt method ("none", "prompt-tuned", "retrieval", "pplug", "pplug+retrieval", or a
            plug-in's such as "lora-hub", "pplug+lora-hub": its plug-in must be loaded onto the model's LLM).
        decodings: decoding names (`decode`).
        batch_size: rows per forward pass (None: 16 on CPU, 64 on a GPU).
        max_history, retrieval_k, retriever, encoder: history and retrieval settings (`build_batch`).
        num_beams, max_new_tokens: generation settings (`decode`).
        personas: optional persona text per example, written after the soft prompt.
        progress: a bar on a terminal, a line every few seconds in a log.
        options, specs, stats: candidate decodings and their cost (see above).

    Every batch runs inside `method_rows` (`pplug.methods.registry`): a plug-in's method through its plug-in,
    row by row; every other method as if no plug-in were loaded.
    """
    task = get_task(task)
    if specs is not None:
        specs = list(specs)
        if len(specs) != len(examples):
            raise ValueError(f"predict: {len(specs)} decoding specs for {len(examples)} examples")
        decodings = ["per-row"]
    else:
        decodings = check_decodings(decodings)
    sampled = {"mbr", "preference", "reward-mbr"} & set(decodings)
    if get_method(method).plugin and (specs is not None or sampled):
        # a plug-in's per-row state follows the batch's rows; per-row specs and sampled candidates regroup them
        raise ValueError(f"method '{method}' decodes with argmax, greedy or beam (the same for every row)")
    llm = model.llm
    causal = not llm.is_seq2seq
    budget = llm.prompt_budget()
    k = resolve_k(method, retrieval_k)
    batch_size = batch_size or default_batch_size(llm.device, cpu=16, accelerator=64)
    out: dict[str, dict[str, str]] = {d: {} for d in decodings}
    with progress_bar(len(examples), f"predict {method}", unit="ex", enabled=progress) as bar:
        for i in range(0, len(examples), batch_size):
            rows = list(examples[i : i + batch_size])
            retrieved = None
            if k:
                retrieved = [retrieve(task, ex, k, retriever=retriever, encoder=encoder, max_history=max_history)
                             for ex in rows]
            batch = build_batch(task, rows, method, causal=causal, max_history=max_history, retrieved=retrieved,
                                retrieval_k=k or None, with_targets=False, budget=budget,
                                personas=personas[i : i + batch_size] if personas is not None else None)
            rows_ctx = None
            if not task.labels:
                from .choose import RowContext, user_outputs

                rows_ctx = RowContext(keys=[ex.id for ex in rows], encoder=encoder,
                                      profiles=[ex.profile for ex in rows], user_outputs=[user_outputs(task, ex.profile, max_history) for ex in rows])
            with method_rows(llm, method, [ex.profile for ex in rows]):
                if specs is not None:
                    preds = {"per-row": decode(model, task, batch, specs=specs[i : i + batch_size], rows=rows_ctx,
                                               max_new_tokens=max_new_tokens, stats=stats)}
                else:
                    preds = decode(model, task, batch, decoding=decodings, num_beams=num_beams,
                                   max_new_tokens=max_new_tokens, options=options, rows=rows_ctx, stats=stats)
            for dec, p in preds.items():
                out[dec].update(zip((ex.id for ex in rows), p))
            bar.update(len(rows))
    return out


def personalize(model: Personalizer | MethodPlugin, examples: Sequence[Any], decoding: Any = None, batch_size: int | None = None,
                personas: Sequence[str | None] | None = None, device: str | torch.device | None = None,
                progress: bool = False, num_beams: int = 1, max_new_tokens: int | None = None,
                options: Any = None, method: str | None = None, **decoding_options: Any) -> list[str]:
    """Personalized outputs for LaMP-style examples, one per example, in order; rows may be different users.

    The prompt method, retrieval settings and default decoding are the checkpoint's own (`model.config`),
    so a saved folder alone reproduces what it was trained and tuned to do. `method` runs the model's weights
    another way, e.g. "pplug+lora-hub" with a LoRA hub loaded onto `model.llm`; a method plug-in as `model` (a
    `LoRAHub`) runs its own method alone (`lora-hub`: the frozen LLM on the input, the task's default decoding).

    Args:
        model: a `PPlugModel` (e.g. `PPlugModel.from_pretrained("checkpoints/<run>")`), or a loaded method
            plug-in (`pplug.methods.registry.MethodPlugin`, e.g. `pplug.hub.methods.load_hub("hubs/lamp3",
            FrozenLLM("default"))`).
        examples: `pplug.lamp.data.Example` records (input + that user's profile, i.e. history items).
        decoding: None (the checkpoint's), "argmax", or for ratings "expected" / "median"; for generation tasks
            also "greedy", "beam", "mbr", "preference", "reward-mbr", a `pplug.decode.choose.DecodingSpec`, or a list
            with one DecodingSpec per example (rows of one batch may decode differently).
        batch_size: rows per forward pass (None: suits the device).
        personas: optional persona text per example, written into the prompt after the soft prompt.
        device: move the model there first ("auto", "cuda", "cpu"; None: leave it where it is).
        progress: progress on stderr (a bar on a terminal, lines in a log).
        num_beams, max_new_tokens: generation settings (None: the task's budget).
        options: a DecodingSpec with the settings of a named candidate decoding, or
        method: None (the checkpoint's), or a method that runs these weights: "pplug+retrieval", or a plug-in's
            ("pplug+lora-hub" after `pplug.hub.methods.load_hub(dir, model.llm)`).
        **decoding_options: its fields one by one (num_samples, temperature, top_p, preference_weight, utility,
            seed, preference_models).
    """
    from .choose import DecodingSpec

    if isinstance(model, MethodPlugin):
        return _personalize_plugin(model, list(examples), decoding, batch_size, progress, num_beams, max_new_tokens)
    method = _runs_weights_of(model, method)
    examples = list(examples)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("personalize: example ids must be unique")
    if device is not None:
        model.to_device(device)
    cfg = model.config
    decoding = decoding or cfg.decoding
    specs = None
    if isinstance(decoding, DecodingSpec):
        specs = [decoding] * len(examples)
    elif not isinstance(decoding, str):
        specs = list(decoding)
    elif options is None:
        options = DecodingSpec(**decoding_options)  # settings only: each named decoding sets its own name
    preds = predict(model, cfg.task, examples, method, [decoding] if specs is None else [],
                    batch_size=batch_size, max_history=cfg.max_history, retrieval_k=cfg.retrieval_k,
                    retriever=cfg.retriever, encoder=model.history_encoder, personas=personas, progress=progress,
                    num_beams=num_beams, max_new_tokens=max_new_tokens, options=options, specs=specs)
    preds = next(iter(preds.values()))
    return [preds[i] for i in ids]


def _runs_weights_of(model: Personalizer, method: str | None) -> str:
    """The method `personalize` runs `model` as: its own, or one that runs its weights (ValueError otherwise)."""
    own = model.config.method
    if method is None or method == own:
        return own
    spec = get_method(method)
    if spec.weights_of != own:
        raise ValueError(f"personalize: method '{spec.name}' does not run a '{own}' model's weights")
    require_plugin(model.llm, spec)
    return spec.name


def _personalize_plugin(plugin: MethodPlugin, examples: list, decoding: Any, batch_size: int | None,
                        progress: bool, num_beams: int, max_new_tokens: int | None) -> list[str]:
    """`personalize` of a plug-in's method alone (`lora-hub`): its frozen LLM on the input, rows through it."""
    task = get_task(plugin.task)
    if decoding is not None and not isinstance(decoding, str):
        raise ValueError(f"personalize: the {plugin.alone} method takes a decoding name (argmax, expected, ...)")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("personalize: example ids must be unique")
    preds = predict(FrozenBaseline(plugin.llm), task, examples, plugin.alone, [decoding or task.decodings[0]],
                    batch_size=batch_size, encoder=plugin.encoder, progress=progress, num_beams=num_beams,
                    max_new_tokens=max_new_tokens)
    preds = next(iter(preds.values()))
    return [preds[i] for i in ids]


__all__ = ["DECODINGS", "FrozenBaseline", "check_decodings", "clean_generation", "decode", "decode_labels",
           "personalize", "predict", "task_decodings"]
