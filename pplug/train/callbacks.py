"""Callbacks of train.py's Trainer: progress as plain lines for logs without a terminal (`LogProgress`), and a
checkpoint to resume from when SIGTERM or Ctrl-C stops a fit (`StopAndSave`)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


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


class StopAndSave(L.Callback):
    """SIGTERM or Ctrl-C (SIGINT) end a fit after the current training step, with `<dirpath>/last.ckpt` saved.

    Lightning turns SIGTERM into a flag that its loops read after every training step and validation batch, and
    raise `SIGTERMException` (a `SystemExit`) on: this callback saves the checkpoint when that exception ends the
    fit (through `trainer.save_checkpoint`: every rank takes part, rank 0 writes), the file `--ckpt_path last`
    resumes from (`ModelCheckpoint`'s own name for its last checkpoint). It routes the first SIGINT the same way
    (a second one interrupts at once), and holds a signal that comes during validation until the validation ends,
    so the checkpoint is always taken between two steps with that step's validation done: a resumed run goes on
    exactly as one that was never stopped. `signal_name`, `step` and `path` tell what happened (None: nothing).

    Not Lightning's `OnExceptionCheckpoint`: with one of those every fit without a `ckpt_path` resumes its last
    checkpoint (a new `python train.py` would continue an old run of the same name), and it saves on any error,
    in the middle of a step too.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.signal_name: str | None = None
        self.step: int | None = None
        self.path: Path | None = None
        self._forward: Any = None  # Lightning's SIGTERM handler
        self._held: int | None = None  # a signal that came during validation
        self._trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has put its SIGTERM handler in place by now (and puts the previous handlers back at teardown)
        if threading.current_thread() is not threading.main_thread():
            return
        self._forward = signal.getsignal(signal.SIGTERM)
        if callable(self._forward):
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now (Lightning's own handling, no checkpoint)
        self.signal_name = signal.Signals(signum).name
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:
            print(f"train.py: {self.signal_name}: stopping after this training step (Ctrl-C again: at once)",
                  file=sys.stderr, flush=True)
        if trainer is not None and trainer.validating:
            self._held = signum  # Lightning would stop mid-validation: pass it on when the validation is done
        else:
            self._forward(signum, frame)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._held is not None:
            signum, self._held = self._held, None
            self._forward(signum, None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        self.signal_name = self.signal_name or "SIGTERM"
        self.step = trainer.global_step
        self.path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(self.path)


__all__ = ["LogProgress", "StopAndSave"]
