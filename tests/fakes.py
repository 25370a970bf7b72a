"""Stand-ins shared by several test files (importable as `fakes`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import re
import zlib

import lightning as L
import torch


class BagOfWords:
    """A deterministic stand-in for the sentence encoder: hashed bag of lower-cased words, L2-normalised."""

    dim = 64
    identity = "bag-of-words-64"
    name_or_path = "bag-of-words"

    def encode(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)



class SignalAtStep(L.Callback):
    """Sends this process `signum` (default SIGTERM) when training reaches `step`, as a scheduler or a user would
    stop a run at a chosen step (train.py takes it through `--trainer.callbacks`)."""

    def __init__(self, step: int, signum: int = 15) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
