"""Training progress as plain lines, for logs without a terminal (CI, nohup, `make train > log`)."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L


class LogProgress(L.Callback):
    """Progress as plain lines, for logs without a terminal (CI, nohup, `make train > log`).

    Every `every_n_steps` optimizer steps (and at the last): `train step N/M | loss x | r it/s | ETA t`;
    after every validation: its `val/` metrics. train.py uses it instead of the progress bar whenever
    stderr is not a terminal.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        from pplug.core.runtime import format_seconds

        step = trainer.global_step
        total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else int(
            trainer.estimated_stepping_batches)
        if not trainer.is_global_zero or (step % self.every_n_steps and step != total):
            return
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (step - self._step0) / elapsed
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss_s = f" | loss {float(loss):.4f}" if loss is not None else ""
        eta = f" | ETA {format_seconds((total - step) / rate)}" if rate > 0 else ""
        print(f"train step {step}/{total}{loss_s} | {rate:.2f} it/s{eta}", file=sys.stderr, flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if shown:
            print(f"validation at step {trainer.global_step}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())), file=sys.stderr, flush=True)


__all__ = ["LogProgress"]
