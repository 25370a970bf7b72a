"""Lightning training of PPlug (and of the trainable baselines) on LaMP-format data.

    LaMP files --LaMPDataModule--> (ids, PPlugBatch) --PPlugLitModule.model_step--> loss / predictions
                                                      (one PPlugModel: frozen LLM + trainable embedder)

- `PPlugLitModule` builds one `PPlugModel` from `PPlugConfig` fields exposed as its own init args (so
  LightningCLI shows them as `--model.<field>`), plus the method, optimiser and decoding settings. One
  `model_step` serves train, val and test. Validation decodes (choice log-probs for labels and ratings,
  greedy generation otherwise) and scores with `pplug.metrics.score`, the code behind `pplug score`; the
  predictions are written next to the run, so the logged `val/<metric>` can be re-checked by hand.
- `.ckpt` files keep only trainable weights + optimiser state (`on_save_checkpoint` drops the frozen LLM
  and encoder; `strict_loading=False` lets them load back). At fit end rank 0 writes `<run>/final/` with
  `PPlugModel.save_pretrained` (weights of the best validation checkpoint when one exists).
- `LaMPDataModule` loads, subsamples (seeded) and collates LaMP splits into text batches for a method
  (prompts from `pplug.prompts`, retrieval from `pplug.baselines`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .baselines import RETRIEVERS, build_batch, get_method, resolve_k, retrieve

DECODINGS = ("argmax", "expected", "median")


def task_decodings(task: Any, main: str) -> list[str]:
    """The decodings scored for `task`, `main` first: every one for ratings, only `main` otherwise."""
    if getattr(task.output_kind, "value", task.output_kind) == "rating":
        return [main, *(d for d in DECODINGS if d != main)]
    return [main]


@dataclass
class LaMPBatch:
    """A collated batch: record ids, gold outputs (None where unknown) and the model's text batch."""

    ids: list[str]
    golds: list[str | None]
    batch: Any
    """The `PPlugBatch` (prompts, queries, histories, targets)."""

    def __len__(self) -> int:
        return len(self.ids)


# --------------------------------------------------------------------------------------------------
# decoding (shared with pplug.evaluate)


def decode(model: Any, task: Any, batch: Any, decoding: str | Sequence[str] = "argmax", num_beams: int = 1,
           max_new_tokens: int | None = None, *, options: Any = None, specs: Sequence[Any] | None = None,
           rows: Any = None, stats: dict | None = None) -> Any:
    """Predictions for a text batch, as LaMP output strings.

    Labels (classification) and ratings are decoded by scoring every label with `model.choice_logprobs`:
    `argmax` takes the most likely label; for ratings, `expected` returns the expected value of the
    distribution over "1".."5" (a float string; the official LaMP_3 scorer parses floats; it minimises the
    expected squared error, so RMSE) and `median` its median, the smallest rating whose cumulative
    probability reaches 1/2 (it minimises the expected absolute error, so MAE). Generation
    tasks keep the first non-empty line of: `argmax` greedy (beam search when `num_beams` > 1, as before), or
    the per-row decodings of `pplug.decoding` ("greedy", "beam", "mbr", "preference"). Several label
    decodings share one forward pass.

    Args:
        model: a PPlugModel (or anything with `choice_logprobs` and `generate`, e.g. the `none` baseline).
        task: the TaskSpec.
        batch: a PPlugBatch.
        decoding: "argmax", "expected" or "median" (labels / ratings), "greedy", "beam", "mbr" or "preference"
            (generation), or a list of them (then a dict decoding -> predictions).
        num_beams: beams of `argmax` for generation tasks.
        max_new_tokens: generation budget (None: `task.max_new_tokens`).
        options: a `pplug.decoding.DecodingSpec` with the sampling / selection settings of named decodings.
        specs: one DecodingSpec per row (generation tasks): rows decode with their own settings; returns a list.
        rows: a `pplug.decoding.RowContext` (row keys for the seeds, users' past outputs, the encoder).
        stats: if given, gets the generation cost added ("rows", "candidates", "seconds").
    """
    from .decoding import GENERATION_DECODINGS, decode_rows, make_specs

    kind = getattr(task.output_kind, "value", task.output_kind)
    if specs is not None:
        if task.labels:
            raise ValueError(f"per-row decoding specs apply to generation tasks, not {task.name}")
        return decode_rows(model, batch, list(specs), max_new_tokens or task.max_new_tokens, rows,
                           clean_generation, stats, first_line=True)
    many = not isinstance(decoding, str)
    decodings = list(decoding) if many else [decoding]
    for d in decodings:
        if d not in DECODINGS + GENERATION_DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS + GENERATION_DECODINGS}, got {d!r}")
        if task.labels and d in GENERATION_DECODINGS:
            raise ValueError(f"decoding {d!r} applies to generation tasks; {task.name} decodes with "
                             f"{', '.join(DECODINGS)}")
    out: dict[str, list[str]] = {}
    if task.labels:
        logp = model.choice_logprobs(batch, list(task.labels)).float().cpu()  # (B, C)
        for d in decodings:
            if d == "expected" and kind == "rating":
                values = torch.tensor([float(x) for x in task.labels], dtype=torch.float32)  # (C,)
                probs = logp.softmax(dim=-1)  # (B, C)
                out[d] = [f"{v:.4f}" for v in (probs * values).sum(dim=-1).tolist()]
            elif d == "median" and kind == "rating":
                cdf = logp.softmax(dim=-1).cumsum(dim=-1)  # (B, C), labels in ascending order "1".."5"
                # first label with cdf >= 1/2 (the tolerance keeps an exact 50/50 split from rounding past it)
                idx = (cdf < 0.5 - 1e-6).sum(dim=-1).clamp_max(len(task.labels) - 1)
                out[d] = [task.labels[i] for i in idx.tolist()]
            else:
                out[d] = [task.labels[i] for i in logp.argmax(dim=-1).tolist()]
    else:
        budget = max_new_tokens or task.max_new_tokens
        for d in decodings:
            if d in GENERATION_DECODINGS:  # per-row machinery of pplug.decoding
                out[d] = decode_rows(model, batch, make_specs(d, len(batch.prompts), options), budget, rows,
                                     clean_generation, stats, first_line=True)
            elif "argmax" not in out:  # label decodings mean greedy (beams with num_beams > 1) here, as before
                t0 = time.monotonic()
                out["argmax"] = [clean_generation(t) for t in
                                 model.generate(batch, max_new_tokens=budget, num_beams=num_beams)]
                if stats is not None:
                    stats.update(rows=stats.get("rows", 0) + len(batch.prompts),
                                 candidates=stats.get("candidates", 0) + len(batch.prompts),
                                 seconds=stats.get("seconds", 0.0) + time.monotonic() - t0)
        out = {d: out[d if d in GENERATION_DECODINGS else "argmax"] for d in decodings}
    return out if many else out[decodings[0]]


def clean_generation(text: str) -> str:
    """First non-empty line of a generated text, stripped (LLMs often continue past the answer)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


# --------------------------------------------------------------------------------------------------
# LightningModule


class PPlugLitModule(L.LightningModule):
    """Trains one method's trainable parts around a frozen LLM.

    Args:
        method: "pplug" (default), "pplug+retrieval", "prompt-tuned" or "retrieval" ("none" has nothing to train).
        base_model_name_or_path: frozen LLM ("default" = SmolLM2-135M-Instruct).
        encoder_name_or_path: sentence encoder ("default" = all-MiniLM-L6-v2).
        task: LaMP task name (also passed to the data module).
        num_user_tokens: soft-prompt vectors the user embedding becomes.
        use_instruction: prepend the trained instruction embedding.
        input_encoder: "trainable" (PPlug) or "frozen" (+ trainable projection; cheaper).
        aggregation: "input_aware" (PPlug) or "mean".
        temperature: softmax temperature of the input-aware attention.
        max_history: most recent history items used (embedding and retrieval).
        max_input_tokens: LLM prompt tokens kept per row.
        max_target_tokens: target tokens kept per row.
        max_encoder_tokens: input-encoder tokens kept.
        torch_dtype: dtype of the frozen LLM ("float32", "bfloat16", "float16").
        retrieval_k: retrieved items per prompt for retrieval methods (None = method default: 2 / 1).
        retriever: "bm25" or "embedding".
        lr: peak AdamW learning rate of the embedder's MLPs and instruction embedding.
        encoder_lr: learning rate of the trainable input encoder (a pretrained transformer needs a smaller one;
            None = `lr`).
        weight_decay: AdamW weight decay (PPlug: 1e-4).
        warmup_ratio: fraction of the optimizer steps with linear warmup; then linear decay to 0 (PPlug: 0.05).
        history_dropout: probability that a training row loses a random 1-50% of its history items (PPlug's
            augmentation made 10 such copies of every example; drawing per step is the same in expectation).
        decoding: "argmax", "expected" or "median" (ratings: expected value / median over 1..5), logged as
            `val/<metric>`; for rating tasks the other decodings are logged too, as `val/<metric>_<decoding>`.
        num_beams: beams for generation tasks at validation/test.
        max_new_tokens: generation budget (None: the task's).
        embedding_cache: SQLite file of the history-embedding cache (None: the shared pplug cache).
        init_from: a `final/` folder to start the trainable weights from (continued training).
        predictions_dir: where validation/test predictions are written (None: `<run>/predictions`).
    """

    def __init__(
        self,
        method: str = "pplug",
        base_model_name_or_path: str = "default",
        encoder_name_or_path: str = "default",
        task: str = "LaMP_3",
        num_user_tokens: int = 1,
        use_instruction: bool = True,
        input_encoder: str = "trainable",
        aggregation: str = "input_aware",
        temperature: float = 1.0,
        max_history: int = 512,
        max_input_tokens: int = 256,
        max_target_tokens: int = 64,
        max_encoder_tokens: int = 256,
        torch_dtype: str = "float32",
        retrieval_k: int | None = None,
        retriever: str = "bm25",
        lr: float = 1e-3,
        encoder_lr: float | None = 1e-4,
        weight_decay: float = 1e-4,
        warmup_ratio: float = 0.05,
        history_dropout: float = 0.0,
        decoding: str = "argmax",
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        embedding_cache: str | None = None,
        init_from: str | None = None,
        predictions_dir: str | None = None,
    ) -> None:
        super().__init__()
        from .config import PPlugConfig
        from .model import PPlugModel
        from .tasks import get_task

        spec = get_method(method)
        if not spec.trainable:
            raise ValueError(f"method '{spec.name}' has nothing to train; evaluate it with `pplug evaluate`")
        if retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {retriever!r}")
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        if not 0.0 <= history_dropout <= 1.0:
            raise ValueError(f"history_dropout must be in [0, 1], got {history_dropout}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        resolve_k(spec, retrieval_k)  # validates k
        # logger=False: hyper-parameters go to the run's config.yaml (LightningCLI) rather than every event file
        self.save_hyperparameters(logger=False)
        self.method = spec
        self.task_spec = get_task(task)
        config = PPlugConfig(
            base_model_name_or_path=base_model_name_or_path,
            encoder_name_or_path=encoder_name_or_path,
            task=self.task_spec.name,
            num_user_tokens=num_user_tokens,
            use_user_embedding=spec.use_user_embedding,
            use_instruction=use_instruction,
            input_encoder=input_encoder,
            aggregation=aggregation,
            temperature=temperature,
            max_history=max_history,
            max_input_tokens=max_input_tokens,
            max_target_tokens=max_target_tokens,
            max_encoder_tokens=max_encoder_tokens,
            torch_dtype=torch_dtype,
        )
        encoder = _history_encoder(encoder_name_or_path, embedding_cache)
        if init_from:  # the saved config defines the weights; run-time limits come from these args
            self.model = PPlugModel.from_pretrained(
                init_from, history_encoder=encoder, temperature=temperature, max_history=max_history,
                max_input_tokens=max_input_tokens, max_target_tokens=max_target_tokens,
                max_encoder_tokens=max_encoder_tokens, torch_dtype=torch_dtype)
        else:
            self.model = PPlugModel.from_config(config, history_encoder=encoder)
        # .ckpt files hold only the trainable weights (see on_save_checkpoint), so loading must not be strict.
        self.strict_loading = False
        self._preds: dict[str, dict[str, str]] = {}
        self._golds: dict[str, str] = {}
        self._rng = random.Random(0)
        self.last_metrics: dict = {}

    # --- helpers ---

    @property
    def is_causal(self) -> bool:
        return not bool(getattr(self.model.llm, "is_seq2seq", False))

    def trainable_keys(self) -> set[str]:
        """Keys of this module's state_dict that .ckpt files keep: the embedder's (what save_pretrained keeps)."""
        return {f"model.embedder.{k}" for k in self.model.embedder.state_dict()}

    def setup(self, stage: str) -> None:
        """Tell the data module what only the model knows (causal vs seq2seq prompts, the encoder)."""
        self._rng = random.Random(1000 + self.global_rank)  # distinct history-dropout draws per rank
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "connect"):
            dm.connect(causal=self.is_causal, encoder=self.model.history_encoder,
                       budget=self.model.llm.prompt_budget())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are text; the model tokenises and moves tensors itself."""
        return batch

    def _drop_history(self, histories: list[list[str]]) -> list[list[str]]:
        """PPlug's augmentation: with prob `history_dropout`, drop a random 1-50% of a row's items."""
        p = self.hparams.history_dropout
        if p <= 0:
            return histories
        out = []
        for hist in histories:
            if len(hist) > 1 and self._rng.random() < p:
                n_drop = max(1, round(len(hist) * self._rng.uniform(0.01, 0.5)))
                drop = set(self._rng.sample(range(len(hist)), min(n_drop, len(hist) - 1)))
                hist = [h for i, h in enumerate(hist) if i not in drop]
            out.append(hist)
        return out

    # --- steps ---

    def model_step(self, batch: LaMPBatch, stage: str) -> torch.Tensor | None:
        """Loss on the targets (all stages) and, for val/test, predictions collected for scoring."""
        b = batch.batch
        if stage == "train" and self.hparams.history_dropout > 0:
            from dataclasses import replace

            b = replace(b, histories=self._drop_history(b.histories))
        loss = None
        if b.targets is not None:
            loss = self.model(b)
            self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                     batch_size=len(batch), sync_dist=stage != "train")
        if stage != "train":
            self._collect(batch, stage)
        return loss

    def training_step(self, batch: LaMPBatch, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch: LaMPBatch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: LaMPBatch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    @torch.no_grad()
    def _collect(self, batch: LaMPBatch, stage: str) -> None:
        task = self.task_spec
        decodings = task_decodings(task, self.hparams.decoding)
        preds = decode(self.model, task, batch.batch, decoding=decodings, num_beams=self.hparams.num_beams,
                       max_new_tokens=self.hparams.max_new_tokens)
        for dec, p in preds.items():
            self._preds.setdefault(dec, {}).update(zip(batch.ids, p))
        self._golds.update((i, g) for i, g in zip(batch.ids, batch.golds) if g is not None)

    def on_validation_epoch_start(self) -> None:
        self._preds, self._golds = {}, {}

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._score_and_log("val")

    def on_test_epoch_end(self) -> None:
        self._score_and_log("test")

    def _score_and_log(self, stage: str) -> None:
        """Gather predictions from all ranks, score with pplug.metrics.score, log and write them (rank 0)."""
        from .metrics import score

        if self.trainer.sanity_checking or not self._preds:
            return
        preds, golds = self._preds, self._golds
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (preds, golds))
            preds, golds = {}, {}
            for p, g in gathered:  # DistributedSampler may repeat rows to even out ranks: dict merge dedups
                for dec, d in p.items():
                    preds.setdefault(dec, {}).update(d)
                golds.update(g)
        main = self.hparams.decoding
        results: dict[str, dict[str, float]] = {}
        for dec, p in preds.items():
            if golds and set(golds) == set(p):
                results[dec] = score(self.task_spec, p, golds)
                suffix = "" if dec == main else f"_{dec}"
                for name, value in results[dec].items():
                    # every rank holds the same gathered value: no sync needed
                    self.log(f"{stage}/{name}{suffix}", float(value), prog_bar=(dec == main and
                             name == self.task_spec.main_metric), rank_zero_only=False)
        self.last_metrics = {stage: results}
        # trainer.log_dir is a collective under DDP: resolve it on every rank, write on rank 0 only
        out_dir = Path(self.hparams.predictions_dir) if self.hparams.predictions_dir else run_dir(self.trainer) / "predictions"
        if self.trainer.is_global_zero:
            self._write_predictions(out_dir, stage, preds)

    def _write_predictions(self, out_dir: Path, stage: str, preds: dict[str, dict[str, str]]) -> None:
        from .data import write_outputs

        for dec, p in preds.items():
            suffix = "" if dec == self.hparams.decoding else f".{dec}"
            name = f"{stage}_step-{self.global_step:06d}{suffix}.json"
            write_outputs(out_dir / name, self.task_spec.name, p)
            write_outputs(out_dir / f"{stage}_last{suffix}.json", self.task_spec.name, p)

    # --- optimisation ---

    def configure_optimizers(self) -> dict:
        """AdamW with two groups (input encoder at `encoder_lr`, the rest at `lr`); linear warmup then decay."""
        hp = self.hparams
        enc, rest = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (enc if "input_encoder" in name and hp.encoder_lr is not None else rest).append(p)
        groups = [{"params": rest, "lr": hp.lr}]
        if enc:
            groups.append({"params": enc, "lr": hp.encoder_lr})
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(hp.warmup_ratio * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints ---

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights in .ckpt files (the frozen LLM / encoder reload from their source)."""
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["pplug_config"] = self.model.config.to_dict()

    def on_fit_end(self) -> None:
        """Write `<run>/final/` (rank 0): the best validation checkpoint's weights when there is one."""
        cb = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(cb, "best_model_path", "") if cb is not None else ""
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]  # never unpickle
            self.load_state_dict(state, strict=False)
        out = run_dir(self.trainer) / "final"  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            self.model.save_pretrained(out)
            self.final_dir = out


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the logger's log_dir (checkpoints/<run>/), else the trainer's default_root_dir."""
    d = trainer.log_dir if trainer.loggers else None
    return Path(d or trainer.default_root_dir)


def _history_encoder(name_or_path: str, cache: str | None):
    from .history import HistoryEncoder

    return HistoryEncoder(name_or_path, cache_path=cache)


# --------------------------------------------------------------------------------------------------
# DataModule


class _Examples(Dataset):
    def __init__(self, examples: list) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.examples[i]


class Collator:
    """Examples -> LaMPBatch for one method (picklable, so DataLoader workers can use it)."""

    def __init__(self, task: Any, method: str, causal: bool, max_history: int | None,
                 retrieved: dict[str, list[dict]] | None, retrieval_k: int | None, with_targets: bool,
                 persona: bool = False, budget: Any = None) -> None:
        self.task, self.method, self.causal = task, method, causal
        self.max_history, self.retrieved, self.retrieval_k = max_history, retrieved, retrieval_k
        self.with_targets, self.persona, self.budget = with_targets, persona, budget

    def __call__(self, examples: list) -> LaMPBatch:
        retrieved = [self.retrieved.get(ex.id, []) for ex in examples] if self.retrieved is not None else None
        with_targets = self.with_targets and all(ex.output is not None for ex in examples)
        personas = None
        if self.persona:
            from .persona import history_personas

            personas = history_personas(self.task, examples, self.max_history)
        batch = build_batch(self.task, examples, self.method, causal=self.causal, max_history=self.max_history,
                            retrieved=retrieved, retrieval_k=self.retrieval_k, with_targets=with_targets,
                            personas=personas, budget=self.budget)
        return LaMPBatch(ids=[ex.id for ex in examples], golds=[ex.output for ex in examples], batch=batch)


def subsample(examples: list, n: int | None, seed: int) -> list:
    """A seeded random subset of `n` examples in file order (all of them when n is None or larger)."""
    if n is None or n >= len(examples):
        return list(examples)
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


class LaMPDataModule(L.LightningDataModule):
    """LaMP splits as text batches for one method.

    Args:
        root: folder with `{split}_questions.json` / `{split}_outputs.json` (e.g. lamp_data/synthetic).
        task: LaMP task (linked from `--model.task` by train.py); None = from the outputs file.
        train_split: split trained on.
        val_split: split validated on (metrics logged as `val/<metric>`).
        test_split: split `trainer.test` evaluates.
        batch_size: training rows per step (per device).
        eval_batch_size: rows per validation/test batch (None: 2 x batch_size).
        max_train_examples: seeded random subset of the training split (None: all).
        max_val_examples: seeded random subset of the validation split (None: all).
        max_test_examples: seeded random subset of the test split (None: all).
        seed: subsampling seed.
        num_workers: DataLoader workers.
        method: method the prompts are built for (linked from `--model.method`).
        retrieval_k: retrieved items per prompt (linked from `--model.retrieval_k`).
        retriever: "bm25" or "embedding" (linked from `--model.retriever`).
        max_history: most recent history items kept (linked from `--model.max_history`).
        persona: write the persona derived from each user's history into the prompt after the soft prompt
            (`pplug.persona.history_persona_text`; the AI Persona ablation). Evaluate with `--persona` too.
    """

    def __init__(
        self,
        root: str = "lamp_data/synthetic/ratings",
        task: str | None = None,
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "dev",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_train_examples: int | None = None,
        max_val_examples: int | None = None,
        max_test_examples: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        method: str = "pplug",
        retrieval_k: int | None = None,
        retriever: str = "bm25",
        max_history: int = 512,
        persona: bool = False,
    ) -> None:
        super().__init__()
        get_method(method)
        self.save_hyperparameters(logger=False)
        self.causal = True
        self.encoder = None
        self.budget = None
        self.splits: dict[str, list] = {}
        self.task_spec = None
        self._retrieved: dict[str, dict[str, list[dict]]] = {}

    def connect(self, causal: bool = True, encoder: Any = None, budget: Any = None) -> None:
        """Settings only the model knows: causal LLM (answer cue), the history encoder (embedding retrieval)
        and the LLM's prompt budget (retrieved items are fitted to it)."""
        self.causal, self.encoder, self.budget = causal, encoder, budget

    def prepare_data(self) -> None:
        """Write the synthetic default data set on first use (rank 0 only)."""
        from .synth import ensure_default_data

        kind = _default_synth_kind(self.hparams.root)
        if kind is not None:
            ensure_default_data(Path(self.hparams.root).parent, kind=kind)

    def _load(self, split: str, n: int | None, seed_offset: int) -> list:
        from .data import LaMPDataError, load_outputs, load_split
        from .tasks import get_task

        hp = self.hparams
        loaded = load_split(hp.root, split, hp.task)
        if hp.task is not None and loaded.outputs_path is not None:
            file_task = get_task(load_outputs(loaded.outputs_path)[0])
            if file_task.name != loaded.task.name and {file_task.name, loaded.task.name} != {"LaMP_2", "LaMP_2N"}:
                raise LaMPDataError(f"{loaded.outputs_path}: field 'task': {file_task.name}, but the model is "
                                    f"configured for {loaded.task.name} (set --model.task {file_task.name})")
        self.task_spec = loaded.task
        return subsample(loaded.examples, n, hp.seed + seed_offset)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None) and "train" not in self.splits:
            self.splits["train"] = self._load(hp.train_split, hp.max_train_examples, 0)
        if stage in ("fit", "validate", None) and "val" not in self.splits:
            self.splits["val"] = self._load(hp.val_split, hp.max_val_examples, 1)
        if stage in ("test", None) and "test" not in self.splits:
            self.splits["test"] = self._load(hp.test_split, hp.max_test_examples, 2)

    def retrieved_for(self, name: str) -> dict[str, list[dict]] | None:
        """Retrieved items per example id of a split (computed once; None for methods without retrieval)."""
        hp = self.hparams
        k = resolve_k(hp.method, hp.retrieval_k)
        if k == 0:
            return None
        if name not in self._retrieved:
            self._retrieved[name] = {
                ex.id: retrieve(self.task_spec, ex, k, retriever=hp.retriever, encoder=self.encoder,
                                max_history=hp.max_history)
                for ex in self.splits[name]
            }
        return self._retrieved[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        if name not in self.splits:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        collate = Collator(self.task_spec, hp.method, self.causal, hp.max_history, self.retrieved_for(name),
                           hp.retrieval_k, with_targets=True, persona=hp.persona, budget=self.budget)
        bs = hp.batch_size if name == "train" else (hp.eval_batch_size or 2 * hp.batch_size)
        return DataLoader(_Examples(self.splits[name]), batch_size=bs, shuffle=shuffle, collate_fn=collate,
                          num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _default_synth_kind(root: str) -> str | None:
    """"ratings" for `.../lamp_data/synthetic/ratings` (a default synthetic set, generated on demand), else None."""
    p = Path(root)
    if p.parent.name == "synthetic" and p.parent.parent.name == "lamp_data" and p.name in ("ratings", "tags", "titles"):
        return p.name
    return None


__all__ = ["Collator", "DECODINGS", "LaMPBatch", "LaMPDataModule", "PPlugLitModule", "clean_generation", "decode",
           "run_dir", "subsample", "task_decodings"]
