"""Lightning training of PPlug (and of the trainable baselines) on LaMP-format data.

    LaMP files --LaMPDataModule--> (ids, PPlugBatch) --PPlugLitModule.model_step--> loss / predictions
                                                      (one PPlugModel: frozen LLM + trainable embedder)

- `PPlugLitModule` builds one `PPlugModel` from one `PPlugConfig` and trains it with one `TrainConfig`
  (`pplug.train.config`, the optimisation settings slow adaptation and the LoRA hub read too). Its `**config`
  keyword arguments are exactly the config's fields (LightningCLI follows them into the dataclass, so every field
  shows as `--model.<field>` with its type and default; nothing is declared twice). train.py hands LightningCLI
  `lit_module`, which takes the `TrainConfig` fields the module applies as flat `--model.lr`-style flags: the keys
  every run's config.yaml has. One `model_step` serves train, val and test. Validation decodes with
  `pplug.decode.inference` (the code that serves the model) and scores with `pplug.lamp.metrics.score`, the code
  behind `pplug score`; predictions are written next to the run, so a logged `val/<metric>` can be re-checked by
  hand.
- `.ckpt` files keep only trainable weights + optimiser state (`on_save_checkpoint` drops the frozen LLM
  and encoder; `strict_loading=False` lets them load back). At fit end rank 0 writes `<run>/final/` with
  `PPlugModel.save_pretrained` (weights of the best validation checkpoint when one exists).
- The data side, `LaMPDataModule` (`pplug.train.data`), and the `LogProgress` callback (`pplug.train.callbacks`)
  are importable from here too: a training script needs these three names.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm

from pplug.core.batch import PPlugBatch
from pplug.decode.inference import decode, decode_labels, task_decodings
from pplug.methods.registry import get_method, resolve_k
from pplug.modeling.config import PPlugConfig

from .callbacks import LogProgress
from .config import OPTIMIZER_FIELDS, TrainConfig
from .data import Collator, LaMPBatch, LaMPDataModule

# Intentional, so not worth a line in every log (train.py, slow adaptation): the frozen LLM stays in eval mode
# while the embedder trains, and batches are text that the model tokenises on its own device.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")


# --------------------------------------------------------------------------------------------------
# LightningModule


class PPlugLitModule(L.LightningModule):
    """Trains one method's trainable parts around a frozen LLM.

    Args:
        training: the optimisation settings. The module applies `lr`, `encoder_lr`, `weight_decay`, `warmup_ratio`
            and `history_dropout`; the loop's fields (epochs, steps, batch size, clipping, seed) are for whoever
            builds the Trainer and the data module (slow adaptation: from this same `TrainConfig`; train.py: from
            its `--trainer.*` and `--data.*` flags).
        num_beams: beams for generation tasks at validation/test.
        max_new_tokens: generation budget (None: the task's).
        embedding_cache: SQLite file of the history-embedding cache (None: the shared pplug cache).
        init_from: a checkpoint or run folder to start the trainable weights from (continued training, slow
            adaptation); its saved config defines the weights, run-time limits come from `config`.
        predictions_dir: where validation/test predictions are written (None: `<run>/predictions`).
        write_final: write `<run>/final/` at fit end (slow adaptation saves its versions itself).
        pick_decoding: at fit end, save into `final/` the decoding (`TaskSpec.decodings`, e.g. median or
            expected for ratings) with the best main metric at the validation of the kept weights, so the
            checkpoint serves with what validation chose; without validation the config's `decoding` stays.
        config: the `PPlugConfig` fields (method, task, num_user_tokens, torch_dtype, decoding, ...), as keyword
            arguments; `PPlugLitModule.from_config(config, ...)` takes the dataclass itself. `decoding` is the
            one logged as `val/<metric>`; rating tasks log the others as `val/<metric>_<decoding>` too.
    """

    def __init__(
        self,
        training: TrainConfig = TrainConfig(),
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        embedding_cache: str | None = None,
        init_from: str | None = None,
        predictions_dir: str | None = None,
        write_final: bool = True,
        pick_decoding: bool = True,
        **config: Any,
    ) -> None:
        super().__init__()
        from pplug.core.tasks import get_task
        from pplug.encode.history import HistoryEncoder
        from pplug.modeling.model import PPlugModel

        cfg = PPlugConfig(**config)  # validates every field (unknown method / task / dtype -> ValueError)
        resolve_k(cfg.method, cfg.retrieval_k)  # validates k
        self.train_config = training
        # logger=False: hyper-parameters go to the run's config.yaml (LightningCLI) rather than every event file.
        # The optimiser's fields stay flat, under the keys of config.yaml, so a .ckpt holds plain data as before.
        self.save_hyperparameters(logger=False, ignore=["training"])
        self.hparams.update({name: getattr(training, name) for name in OPTIMIZER_FIELDS})
        # Built on the CPU: Lightning moves the module (and, through PPlugModel._apply, the history encoder)
        # to the accelerator, and `setup` re-decides an "auto" dtype for it.
        encoder = HistoryEncoder(cfg.encoder_name_or_path, cache_path=embedding_cache, device="cpu")
        if init_from:
            runtime = {k: getattr(cfg, k) for k in ("temperature", "max_history", "max_input_tokens",
                                                      "max_target_tokens", "max_encoder_tokens", "torch_dtype")}
            self.model = PPlugModel.from_pretrained(init_from, history_encoder=encoder, device="cpu", **runtime)
        else:
            self.model = PPlugModel.from_config(cfg, history_encoder=encoder, device="cpu")
        self.config = self.model.config
        self.method = get_method(self.config.method)
        self.task_spec = get_task(self.config.task)
        # .ckpt files hold only the trainable weights (see on_save_checkpoint), so loading must not be strict.
        self.strict_loading = False
        self._preds: dict[str, dict[str, str]] = {}
        self._golds: dict[str, str] = {}
        self._loss_sum, self._loss_rows = 0.0, 0  # validation / test loss over the rows of this rank
        self._rng = random.Random(0)
        self.last_metrics: dict = {}
        self.weights_step: int | None = None  # the step of the kept weights once fit ends (the best validation's)
        self._val_scores: list[tuple[float, dict[str, dict[str, float]]]] = []  # (monitored value, per decoding)

    @classmethod
    def from_config(cls, config: PPlugConfig, training: TrainConfig = TrainConfig(),
                    **settings: Any) -> PPlugLitModule:
        """The LitModule for `config` (a `PPlugConfig`) trained with `training`; `settings` are the module's own
        (`init_from`, `embedding_cache`, `write_final`, ...)."""
        return cls(training, **settings, **config.to_dict())

    # --- helpers ---

    @property
    def is_causal(self) -> bool:
        return not bool(getattr(self.model.llm, "is_seq2seq", False))

    def trainable_keys(self) -> set[str]:
        """Keys of this module's state_dict that .ckpt files keep: the embedder's (what save_pretrained keeps)."""
        return {f"model.embedder.{k}" for k in self.model.embedder.state_dict()}

    def setup(self, stage: str) -> None:
        """Decide an "auto" dtype for the device training runs on, and tell the data module what only the
        model knows (causal vs seq2seq prompts, the encoder, the prompt budget)."""
        self._rng = random.Random(1000 + self.global_rank)  # distinct history-dropout draws per rank
        if self._trainer is not None and self.config.torch_dtype == "auto":
            self.model.llm.set_dtype("auto", self.trainer.strategy.root_device)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "connect"):
            dm.connect(causal=self.is_causal, encoder=self.model.history_encoder,
                       budget=self.model.llm.prompt_budget())
            if self.method.use_user_embedding:
                dm.encode_histories(self.model.history_encoder, stage)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are text; the model tokenises and moves tensors itself."""
        return batch

    def _drop_history(self, batch: PPlugBatch) -> PPlugBatch:
        """PPlug's augmentation: with prob `history_dropout`, drop a random 1-50% of a row's items (and their labels)."""
        p = self.train_config.history_dropout
        if p <= 0:
            return batch
        histories, labels = [], [] if batch.history_labels is not None else None
        for i, hist in enumerate(batch.histories):
            keep = range(len(hist))
            if len(hist) > 1 and self._rng.random() < p:
                n_drop = max(1, round(len(hist) * self._rng.uniform(0.01, 0.5)))
                drop = set(self._rng.sample(range(len(hist)), min(n_drop, len(hist) - 1)))
                keep = [j for j in keep if j not in drop]
            histories.append([hist[j] for j in keep])
            if labels is not None:
                labels.append([batch.history_labels[i][j] for j in keep])
        return replace(batch, histories=histories, history_labels=labels)

    # --- steps ---

    def model_step(self, batch: LaMPBatch, stage: str) -> torch.Tensor | None:
        """Loss on the targets (all stages) and, for val/test, predictions collected for scoring."""
        b = batch.batch
        if stage == "train" and self.train_config.history_dropout > 0:
            b = self._drop_history(b)
        loss, probs = None, None
        if b.targets is not None:
            if stage != "train" and self.model.scores_labels_with_loss:  # loss and label scores in one pass
                loss, logp = self.model.loss_and_label_logprobs(b)
                probs = logp.float().cpu().softmax(dim=-1)  # (B, C)
            else:
                loss = self.model(b)
            if stage == "train":  # sync_dist: the epoch mean averages every rank's rows, not rank 0's alone
                self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch),
                         sync_dist=True)
            else:  # logged with the metrics, a mean over the rows of all ranks together (`_score_and_log`)
                self._loss_sum += float(loss) * len(batch)
                self._loss_rows += len(batch)
        if stage != "train":
            self._collect(batch, stage, probs)
        return loss

    def training_step(self, batch: LaMPBatch, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the trainable weights' gradient norm (`train/grad_norm`) as it is before any clipping
        (`trainer.gradient_clip_val` clips after this hook): a spike here precedes a collapsed soft prompt."""
        norms = grad_norm(self.model, norm_type=2)  # only parameters with a gradient: the frozen LLM has none
        if norms:
            self.log("train/grad_norm", norms["grad_2.0_norm_total"], on_step=True, on_epoch=False)

    def validation_step(self, batch: LaMPBatch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: LaMPBatch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    @torch.no_grad()
    def _collect(self, batch: LaMPBatch, stage: str, probs: torch.Tensor | None = None) -> None:
        """Decode the batch (label tasks: from `probs`, the (B, C) label distribution, when the loss pass gave it)."""
        task = self.task_spec
        decodings = task_decodings(task, self.config.decoding)
        if probs is not None:
            preds = decode_labels(task, probs, decodings)
        else:
            preds = decode(self.model, task, batch.batch, decoding=decodings, num_beams=self.hparams.num_beams,
                           max_new_tokens=self.hparams.max_new_tokens)
        for dec, p in preds.items():
            self._preds.setdefault(dec, {}).update(zip(batch.ids, p))
        self._golds.update((i, g) for i, g in zip(batch.ids, batch.golds) if g is not None)

    def on_validation_epoch_start(self) -> None:
        self._preds, self._golds = {}, {}
        self._loss_sum, self._loss_rows = 0.0, 0

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._score_and_log("val")

    def on_test_epoch_end(self) -> None:
        self._score_and_log("test")

    def _score_and_log(self, stage: str) -> None:
        """Gather predictions from all ranks, score with pplug.lamp.metrics.score, log and write them (rank 0)."""
        from pplug.lamp.metrics import score

        if self.trainer.sanity_checking:
            return
        preds, golds, loss_sum, rows = {}, {}, 0.0, 0
        # every rank's shard (`EvalSampler`: each question on exactly one rank), so every rank scores them all
        for p, g, loss, n in _gather_objects((self._preds, self._golds, self._loss_sum, self._loss_rows)):
            for dec, d in p.items():
                preds.setdefault(dec, {}).update(d)
            golds.update(g)
            loss_sum, rows = loss_sum + loss, rows + n
        if not preds:
            return
        if rows:
            self.log(f"{stage}/loss", loss_sum / rows, prog_bar=True, rank_zero_only=False)
        main = self.config.decoding
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
        if stage == "val" and main in results:
            self._val_scores.append((results[main][self.task_spec.main_metric], results))
        # trainer.log_dir is a collective under DDP: resolve it on every rank, write on rank 0 only
        out_dir = Path(self.hparams.predictions_dir) if self.hparams.predictions_dir else run_dir(self.trainer) / "predictions"
        if self.trainer.is_global_zero:
            self._write_predictions(out_dir, stage, preds)

    def _write_predictions(self, out_dir: Path, stage: str, preds: dict[str, dict[str, str]]) -> None:
        from pplug.lamp.data import write_outputs

        for dec, p in preds.items():
            suffix = "" if dec == self.config.decoding else f".{dec}"
            # test runs on the kept weights (the best validation's), named after their step, not the last one
            step = self.weights_step if stage == "test" and self.weights_step is not None else self.global_step
            name = f"{stage}_step-{step:06d}{suffix}.json"
            write_outputs(out_dir / name, self.task_spec.name, p)
            write_outputs(out_dir / f"{stage}_last{suffix}.json", self.task_spec.name, p)

    # --- optimisation ---

    def configure_optimizers(self) -> dict:
        """AdamW with two groups (the trainable input encoder at `encoder_lr`, the rest at `lr`); linear warm-up,
        then linear decay to 0 at the run's last step."""
        t = self.train_config
        encoder = self.model.embedder.input_encoder if t.encoder_lr is not None else None
        in_encoder = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        enc, rest = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (enc if id(p) in in_encoder else rest).append(p)
        groups = [{"params": rest, "lr": t.lr}]
        if enc:
            groups.append({"params": enc, "lr": t.encoder_lr})
        optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = pplug_linear_schedule(optimizer, t.warmup_steps(total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints ---

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights in .ckpt files (the frozen LLM / encoder reload from their source)."""
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["pplug_config"] = self.model.config.to_dict()
        # history dropout's draws continue on resume (each rank has its own generator: rank 0 writes them all)
        checkpoint["history_dropout_rng"] = _gather_objects(self._rng.getstate())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("history_dropout_rng")
        if states:
            self._rng.setstate(states[min(self.global_rank, len(states) - 1)])

    def on_fit_end(self) -> None:
        """Write `<run>/final/` (rank 0): the best validation checkpoint's weights when there is one."""
        if not self.hparams.write_final:
            return
        cb = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(cb, "best_model_path", "") if cb is not None else ""
        self.weights_step = self.global_step
        if best and Path(best).is_file():
            ckpt = torch.load(best, map_location="cpu", weights_only=True)  # never unpickle
            self.load_state_dict(ckpt["state_dict"], strict=False)
            self.weights_step = int(ckpt.get("global_step", self.global_step))
        if self.hparams.pick_decoding and self._val_scores:
            self.pick_decoding()
            # every rank scored the same gathered predictions; rank 0's choice is the one saved and tested with
            self.config.decoding = self.trainer.strategy.broadcast(self.config.decoding, src=0)
        out = run_dir(self.trainer) / "final"  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            self.model.save_pretrained(out)
            self.final_dir = out


    def pick_decoding(self) -> str:
        """Set `config.decoding` to the best decoding at the validation whose weights are kept; returns it.

        The kept weights are those of the best validation by the monitored metric (ModelCheckpoint's choice,
        `val/<main metric>` under the configured decoding), so the decodings are compared at that validation.
        """
        task = self.task_spec
        better = max if task.higher_is_better else min
        _, results = better(self._val_scores, key=lambda entry: entry[0])
        metric = task.main_metric
        sign = 1 if task.higher_is_better else -1  # ties keep the configured decoding
        best = max(results, key=lambda dec: (sign * results[dec][metric], dec == self.config.decoding))
        if best != self.config.decoding:
            if self._trainer is None or self.trainer.is_global_zero:  # one line, not one per rank
                print(f"pplug: decoding {best!r} scored val/{metric} {results[best][metric]:.4f} against "
                      f"{results[self.config.decoding][metric]:.4f} for {self.config.decoding!r}; saved with the "
                      "checkpoint")
            self.config.decoding = best
        return best


def lit_module(
    lr: float = TrainConfig.lr,
    encoder_lr: float | None = TrainConfig.encoder_lr,
    weight_decay: float = TrainConfig.weight_decay,
    warmup_ratio: float = TrainConfig.warmup_ratio,
    history_dropout: float = TrainConfig.history_dropout,
    **settings: Any,
) -> PPlugLitModule:
    """`PPlugLitModule` as train.py's LightningCLI builds it: the `TrainConfig` fields the module applies are flat
    flags (`--model.lr`), the keys every run's config.yaml has had; `settings` are the module's own arguments and
    the `PPlugConfig` fields.

    Args:
        lr: peak AdamW learning rate of the embedder's MLPs and instruction embedding (`TrainConfig.lr`).
        encoder_lr: learning rate of the trainable input encoder; None: `lr` (`TrainConfig.encoder_lr`).
        weight_decay: AdamW weight decay (`TrainConfig.weight_decay`).
        warmup_ratio: share of the steps with a linear warm-up, then linear decay to 0 (`TrainConfig.warmup_ratio`).
        history_dropout: probability that a training row loses 1-50% of its history (`TrainConfig.history_dropout`).
    """
    training = TrainConfig(lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                           history_dropout=history_dropout)
    return PPlugLitModule(training, **settings)


def pplug_linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                          total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """PPlug's learning-rate curve: optimizer step s (from 0) takes lr * (s + 1) / (warmup_steps + 1) during the
    warm-up, then lr * (total_steps - s) / (total_steps - warmup_steps), down to 0 after the last step.

    It is transformers' `get_linear_schedule_with_warmup` one step on. Its warm-up starts at lr 0, a step that
    moves no weight while AdamW's moments take its gradient in; pplug's first step has always taken
    lr / (warmup_steps + 1). Entering the transformers curve for warmup_steps + 1 and total_steps + 1 steps at its
    step 1 (`last_epoch=0`, which makes LambdaLR read each group's `initial_lr`) gives exactly that curve.
    """
    from transformers import get_linear_schedule_with_warmup

    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return get_linear_schedule_with_warmup(optimizer, warmup_steps + 1, total_steps + 1, last_epoch=0)


def _gather_objects(obj: Any) -> list:
    """`obj` of every rank, in rank order ([obj] outside a distributed run)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the logger's log_dir (checkpoints/<run>/), else the trainer's default_root_dir."""
    d = trainer.log_dir if trainer.loggers else None
    return Path(d or trainer.default_root_dir)


__all__ = ["Collator", "LaMPBatch", "LaMPDataModule", "LogProgress", "PPlugLitModule", "lit_module",
           "pplug_linear_schedule", "run_dir"]
