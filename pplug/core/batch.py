"""PPlugBatch: the text-level batch every method and model reads (`pplug.methods.batches.build_batch` makes it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PPlugBatch:
    """A text-level batch; rows may belong to different users.

    Attributes:
        prompts: final prompt text per row (retrieved items / persona text already inserted).
        queries: input content for the input encoder (task.query_text(input)).
        histories: encoder texts of each row's history items, most recent last; may be [].
        targets: target text per row (training / loss only).
        history_stats: `TaskSpec.history_stats` of each row's history (models with `config.user_stats`).
        history_labels: `TaskSpec.history_label_indices` of each row's history items, aligned with `histories`
            (models with `config.label_token`).
    """

    prompts: list[str]
    queries: list[str]
    histories: list[list[str]]
    targets: list[str] | None = None
    history_stats: list[list[float]] | None = None
    history_labels: list[list[int]] | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if self.history_stats is not None and len(self.history_stats) != n:
            raise ValueError(f"PPlugBatch: history_stats ({len(self.history_stats)}) must have one row per prompt ({n})")
        if self.history_labels is not None:
            if len(self.history_labels) != n:
                raise ValueError(f"PPlugBatch: history_labels ({len(self.history_labels)}) must have one row per "
                                 f"prompt ({n})")
            for i, (labels, hist) in enumerate(zip(self.history_labels, self.histories)):
                if len(labels) != len(hist):
                    raise ValueError(f"PPlugBatch: row {i} has {len(hist)} history items but {len(labels)} "
                                     "history_labels")
        if len(self.queries) != n or len(self.histories) != n or (self.targets is not None and len(self.targets) != n):
            raise ValueError(
                f"PPlugBatch: prompts ({n}), queries ({len(self.queries)}), histories ({len(self.histories)})"
                + (f", targets ({len(self.targets)})" if self.targets is not None else "")
                + " must have the same length"
            )

    def __len__(self) -> int:
        return len(self.prompts)


__all__ = ["PPlugBatch"]
