"""How trainable weights are trained: one `TrainConfig` for train.py's LightningModule, slow adaptation and the
LoRA hub's adapters.

    AdamW(lr, weight_decay) --linear warm-up over warmup_ratio of the steps, then linear decay to 0--> the weights

The LightningModule applies the optimiser's fields (`lr` .. `history_dropout`; train.py's `--model.<field>`); the
loop's fields (`epochs` .. `seed`) go to whoever runs the loop: slow adaptation's Trainer and the hub's loop read
them here, while train.py takes them from Lightning (`--trainer.max_steps`, `--trainer.max_epochs`,
`--trainer.gradient_clip_val`, `--data.batch_size`, `--seed_everything`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation settings of a training run (defaults: PPlug's, with the learning rate of the CPU recipes)."""

    lr: float = 1e-3
    """Peak AdamW learning rate of the trainable weights (PPlug's embedder MLPs and instruction embedding, a hub's
    LoRA weights). The paper's 1e-4 goes with its batch of 64; the recipes' batch of 8 trains at 1e-3."""
    encoder_lr: float | None = 1e-4
    """Learning rate of PPlug's trainable input encoder: a pretrained transformer needs a smaller one (None: `lr`)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (PPlug: 1e-4)."""
    warmup_ratio: float = 0.05
    """Share of the optimizer steps with a linear warm-up; then linear decay to 0 (PPlug: 0.05)."""
    history_dropout: float = 0.0
    """Probability that a training row loses a random 1-50% of its history items (PPlug's augmentation made 10
    such copies of every example; drawing per step is the same in expectation)."""
    epochs: int = 1
    """Passes over the training examples."""
    max_steps: int | None = None
    """Optimizer steps at most (None: as many as the epochs take)."""
    batch_size: int = 8
    """Examples per optimizer step."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this (None: no clipping)."""
    seed: int = 0
    """Seed of the batch order, the history-dropout draws and the new weights' initialisation."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.history_dropout <= 1.0:
            raise ValueError(f"history_dropout must be in [0, 1], got {self.history_dropout}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    def warmup_steps(self, total_steps: int) -> int:
        """The warm-up's length in optimizer steps for a run of `total_steps`."""
        return int(round(self.warmup_ratio * total_steps))


OPTIMIZER_FIELDS = ("lr", "encoder_lr", "weight_decay", "warmup_ratio", "history_dropout")
"""The fields train.py's LightningModule applies (`--model.<field>`); the others are the loop's."""


__all__ = ["OPTIMIZER_FIELDS", "TrainConfig"]
