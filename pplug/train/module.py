"""Lightning training of PPlug (and of the trainable baselines) on LaMP-format data.

    LaMP files --LaMPDataModule--> (ids, PPlugBatch) --PPlugLitModule.model_step--> loss / predictions
                                                      (one PPlugModel: frozen LLM + trainable embedder)

- `PPlugLitModule` builds one `PPlugModel` from one `PPlugConfig`: its `**config` keyword arguments are
  exactly the config's fields (LightningCLI follows them into the dataclass, so every field shows as
  `--model.<field>` with its type and default; nothing is declared twice), plus the optimisation settings.
  One `model_step` serves train, val and test. Validation decodes with `pplug.decode.inference` (the code that
  serves the model) and scores with `pplug.lamp.metrics.score`, the code behind `pplug score`; predictions are
  written next to the run, so a logged `val/<metric>` can be re-checked by hand.
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
from .callbacks import LogProgress
from pplug.modeling.config import PPlugConfig
from .data import Collator, LaMPBatch, LaMPDataModule
from pplug.decode.inference import decode, decode_labels, task_decodings
from pplug.methods.registry import get_method, resolve_k

# Intentional, so not worth a line in every log (train.py, slow adaptation): the frozen LLM stays in eval mode
# while the embedder trains, and batches are text that the model tokenises on its own device.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")


# --------------------------------------------------------------------------------------------------
# LightningModule


class PPlugLitModule(L.LightningModule):
    """Trains one method's trainable parts around a frozen LLM.

    Args:
        lr: peak AdamW learning rate of the embedder's MLPs and instruction embedding.
        encoder_lr: learning rate of the trainable input encoder (a pretrained transformer needs a smaller one;
            None = `lr`).
        weight_decay: AdamW weight decay (PPlug: 1e-4).
        warmup_ratio: fraction of the optimizer steps with linear warmup; then linear decay to 0 (PPlug: 0.05).
        history_dropout: probability that a training row loses a random 1-50% of its history items (PPlug's
            augmentation made 10 such copies of every example; drawing per step is the same in expectation).
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
        lr: float = 1e-3,
        encoder_lr: float | None = 1e-4,
        weight_decay: float = 1e-4,
        warmup_ratio: float = 0.05,
        history_dropout: float = 0.0,
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
        from pplug.encode.history import HistoryEncoder
        from pplug.modeling.model import PPlugModel
        from pplug.core.tasks import get_task

        if not 0.0 <= history_dropout <= 1.0:
            raise ValueError(f"history_dropout must be in [0, 1], got {history_dropout}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        cfg = PPlugConfig(**config)  # validates every field (unknown method / task / dtype -> ValueError)
        resolve_k(cfg.method, cfg.retrieval_k)  # validates k
        # logger=False: hyper-parameters go to the run's config.yaml (LightningCLI) rather than every event file
        self.save_hyperparameters(logger=False)
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
        self._rng = random.Random(0)
        self.last_metrics: dict = {}
        self._val_scores: list[tuple[float, dict[str, dict[str, float]]]] = []  # (monitored value, per decoding)

    @classmethod
    def from_config(cls, config: PPlugConfig, **training: Any) -> PPlugLitModule:
        """The LitModule for `config` (a `PPlugConfig`) with optimisation settings as keyword arguments."""
        return cls(**training, **config.to_dict())

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
        p = self.hparams.history_dropout
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
        if stage == "train" and self.hparams.history_dropout > 0:
            b = self._drop_history(b)
        loss, probs = None, None
        if b.targets is not None:
            if stage != "train" and self.model.scores_labels_with_loss:  # loss and label scores in one pass
                loss, logp = self.model.loss_and_label_logprobs(b)
                probs = logp.float().cpu().softmax(dim=-1)  # (B, C)
            else:
                loss = self.model(b)
            self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                     batch_size=len(batch), sync_dist=stage != "train")
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

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._score_and_log("val")

    def on_test_epoch_end(self) -> None:
        self._score_and_log("test")

    def _score_and_log(self, stage: str) -> None:
        """Gather predictions from all ranks, score with pplug.lamp.metrics.score, log and write them (rank 0)."""
        from pplug.lamp.metrics import score

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
        if not self.hparams.write_final:
            return
        cb = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(cb, "best_model_path", "") if cb is not None else ""
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]  # never unpickle
            self.load_state_dict(state, strict=False)
        if self.hparams.pick_decoding and self._val_scores:
            self.pick_decoding()
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
            print(f"pplug: decoding {best!r} scored val/{metric} {results[best][metric]:.4f} against "
                  f"{results[self.config.decoding][metric]:.4f} for {self.config.decoding!r}; saved with the checkpoint")
            self.config.decoding = best
        return best


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the logger's log_dir (checkpoints/<run>/), else the trainer's default_root_dir."""
    d = trainer.log_dir if trainer.loggers else None
    return Path(d or trainer.default_root_dir)


__all__ = ["Collator", "LaMPBatch", "LaMPDataModule", "LogProgress", "PPlugLitModule", "run_dir"]
