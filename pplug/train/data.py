"""LaMP splits (or examples held in memory) as text batches for one method, for Lightning.

    LaMP files --LaMPDataModule--> Collator --> LaMPBatch(ids, golds, PPlugBatch)

`LaMPDataModule` loads, subsamples (seeded) and collates LaMP splits, or the examples slow adaptation
passes in, into text batches for a method: prompts from `pplug.methods.prompts`, retrieval from `pplug.methods.batches`.
The model tokenises the text on its own device.

Training batches come from a `ResumableLoader`: Lightning saves its `state_dict` (the epoch, its permutation seed,
the batches served, the random generators) in every checkpoint and hands it back on resume, so an interrupted run
continues the epoch where it stopped instead of starting it again. Every loader shards itself over the ranks of a
distributed run (Lightning leaves a `DistributedSampler` in place): training like Lightning's own sampler, evaluation
with no padding, so each validation / test question is scored exactly once.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pplug.lamp.data import subsample
from pplug.methods.batches import build_batch, retrieve
from pplug.methods.registry import get_method, resolve_k

from .augment import history_copies


@dataclass
class LaMPBatch:
    """A collated batch: record ids, gold outputs (None where unknown) and the model's text batch."""

    ids: list[str]
    golds: list[str | None]
    batch: Any
    """The `PPlugBatch` (prompts, queries, histories, targets)."""

    def __len__(self) -> int:
        return len(self.ids)


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
                 persona: bool = False, budget: Any = None, persona_text: dict[str, str | None] | None = None,
                 history_copies: int = 1, seed: int = 0) -> None:
        self.task, self.method, self.causal = task, method, causal
        self.max_history, self.retrieved, self.retrieval_k = max_history, retrieved, retrieval_k
        self.with_targets, self.persona, self.budget = with_targets, persona, budget
        self.persona_text = persona_text
        self.history_copies, self.seed = history_copies, seed
        self.draws: dict[str, int] = {}  # how often each question was collated: the epoch of its copies

    def __call__(self, examples: list) -> LaMPBatch:
        if self.history_copies > 1:  # each question, then its history-drop copies (`pplug.train.augment`)
            out = []
            for ex in examples:
                epoch = self.draws[ex.id] = self.draws.get(ex.id, -1) + 1
                out.extend(history_copies([ex], self.history_copies, self.seed, epoch))
            examples = out
        retrieved = [self.retrieved.get(ex.id, []) for ex in examples] if self.retrieved is not None else None
        with_targets = self.with_targets and all(ex.output is not None for ex in examples)
        personas = None
        if self.persona_text is not None:  # given per example (slow adaptation: the store's personas)
            personas = [self.persona_text.get(ex.id) for ex in examples]
        elif self.persona:
            from pplug.persona.from_history import history_personas

            personas = history_personas(self.task, examples, self.max_history)
        batch = build_batch(self.task, examples, self.method, causal=self.causal, max_history=self.max_history,
                            retrieved=retrieved, retrieval_k=self.retrieval_k, with_targets=with_targets,
                            personas=personas, budget=self.budget)
        return LaMPBatch(ids=[ex.id for ex in examples], golds=[ex.output for ex in examples], batch=batch)


class TrainSampler(DistributedSampler):
    """The training order: a new permutation every epoch, this rank's share of it, resumable mid-epoch.

    One process: each epoch's permutation is seeded by a draw from torch's global generator when the epoch starts,
    as torch's `RandomSampler` does, so `seed_everything` fixes the order and it is the order of
    `DataLoader(shuffle=True)`. Several ranks: the permutation of `seed + epoch` (seed: `PL_GLOBAL_SEED`) and every
    `num_replicas`-th row of it, as the `DistributedSampler` Lightning would put in its place. Lightning calls
    `set_epoch` at every epoch start; `ResumableLoader` saves `epoch_seed` and sets `skip` on resume.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=int(os.getenv("PL_GLOBAL_SEED", "0")))
        self.epoch_seed: int | None = None
        """The seed of the current epoch's permutation (None until the epoch starts)."""
        self.skip = 0
        """Rows of the current epoch to leave out: those served before the checkpoint a run resumed from."""

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch_seed = None
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:  # a generator: the seed is drawn at the first batch, as RandomSampler does
        if self.epoch_seed is None:
            self.epoch_seed = (int(torch.empty((), dtype=torch.int64).random_().item()) if self.num_replicas == 1
                               else self.seed + self.epoch)
        if self.num_replicas == 1:
            generator = torch.Generator()
            generator.manual_seed(self.epoch_seed)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(super().__iter__())  # DistributedSampler's permutation of seed + epoch, this rank's share
        skip, self.skip = self.skip, 0
        yield from indices[skip:]


class EvalSampler(DistributedSampler):
    """Every `num_replicas`-th row from `rank`, in order and with no padding: each question is scored exactly once
    across the ranks (the shards may differ by one row). A `DistributedSampler`, so Lightning keeps it."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        states["numpy"] = (name, keys.tolist(), pos, has_gauss, gauss)  # plain data: checkpoints load weights_only
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        pass
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy as np

        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch through Lightning's stateful-loader interface.

    Lightning puts `state_dict()` in every checkpoint and calls `load_state_dict()` before a resumed fit iterates.
    The state: the epoch, its permutation seed, the batches of it already trained on, the collator's counts (the
    epoch of each question's history copies) and the random generators of every rank. On resume the epoch continues
    with its next batch, and the generators are set back just before that batch, after the fresh iterator's own
    draws, so dropout masks and later epochs' orders are those of a run that was never stopped.
    """

    def __init__(self, dataset: Dataset, sampler: TrainSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._served = 0  # batches of the current epoch handed to the training loop
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        self._served = resume["batches"] if resume else 0
        if resume:
            self.sampler.skip = self._served * self.batch_size  # every batch but an epoch's last one is full
        for batch in super().__iter__():
            if resume:  # the fresh iterator drew its seeds: now continue the generators where the checkpoint left them
                _set_rng_states(resume["rng"][min(self.sampler.rank, len(resume["rng"]) - 1)])
                resume = None
            self._served += 1
            yield batch
        if resume:  # stopped after an epoch's last batch: the next epoch starts from the checkpoint's generators
            _set_rng_states(resume["rng"][min(self.sampler.rank, len(resume["rng"]) - 1)])

    def state_dict(self) -> dict[str, Any]:
        rng = [_rng_states()]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.sampler.num_replicas > 1:
            # every rank builds the checkpoint (rank 0 writes it): gather each rank's generators into it
            rng = [None] * self.sampler.num_replicas
            torch.distributed.all_gather_object(rng, _rng_states())
        draws = getattr(self.collate_fn, "draws", None)
        return {"epoch": self.sampler.epoch, "epoch_seed": self.sampler.epoch_seed, "batches": self._served,
                "draws": dict(draws) if draws is not None else None, "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.epoch_seed = state["epoch_seed"]
        if state.get("draws") is not None and hasattr(self.collate_fn, "draws"):
            self.collate_fn.draws = dict(state["draws"])
        self._resume = state


class LaMPDataModule(L.LightningDataModule):
    """LaMP splits as text batches for one method.

    `LaMPDataModule.from_examples(task, train, val, ...)` serves examples held in memory instead of files.

    Args:
        root: folder with `{split}_questions.json` / `{split}_outputs.json` (e.g. lamp_data/synthetic);
            None for a module made by `from_examples`.
        task: LaMP task (linked from `--model.task` by train.py); None = from the outputs file.
        train_split: split trained on.
        val_split: split validated on (metrics logged as `val/<metric>`).
        test_split: split `trainer.test` evaluates.
        batch_size: training rows per step (per device).
        eval_batch_size: rows per validation/test batch (None: 2 x batch_size).
        max_train_examples: seeded random subset of the training split (None: all).
        max_val_examples: seeded random subset of the validation split (None: all).
        max_test_examples: seeded random subset of the test split (None: all). When validation and test read
            the same split and validation is a subset, the test questions are drawn from the rest: the
            decoding picked on validation is then scored on questions it was not picked on (unless validation
            took the whole split).
        seed: subsampling seed.
        num_workers: DataLoader workers.
        method: method the prompts are built for (linked from `--model.method`).
        retrieval_k: retrieved items per prompt (linked from `--model.retrieval_k`).
        retriever: "bm25" or "embedding" (linked from `--model.retriever`).
        max_history: most recent history items kept (linked from `--model.max_history`).
        persona: write the persona derived from each user's history into the prompt after the soft prompt
            (`pplug.persona.history_persona_text`; the AI Persona ablation). Evaluate with `--persona` too.
        history_copies: each training question this many times a step, the copies with random parts of the
            history left out (the official PPlug recipe's augmentation, `pplug.train.augment`; users with at
            most 2 items get none); `batch_size` counts questions. Cheap with `--model.soft_prompt_position
            after_prompt`, where the copies share their question's prefill. 1: none.
    """

    def __init__(
        self,
        root: str | None = "lamp_data/synthetic/ratings",
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
        history_copies: int = 1,
    ) -> None:
        super().__init__()
        get_method(method)
        if history_copies < 1:
            raise ValueError(f"data.history_copies must be >= 1, got {history_copies}")
        self.save_hyperparameters(logger=False)
        self.causal = True
        self.encoder = None
        self.budget = None
        self.splits: dict[str, list] = {}
        self.task_spec = None
        self.persona_text: dict[str, str | None] | None = None
        self._retrieved: dict[str, dict[str, list[dict]]] = {}

    @classmethod
    def from_examples(cls, task: Any, train: list, val: list, persona_text: dict[str, str | None] | None = None,
                      **hparams: Any) -> LaMPDataModule:
        """A data module over examples held in memory (train and val; test = val), e.g. interactions.

        Args:
            task: the TaskSpec or name.
            train, val: pplug.lamp.data.Example records with outputs.
            persona_text: persona text per example id, written after the soft prompt (None: no persona).
            **hparams: the other settings (batch_size, method, retrieval_k, retriever, max_history, seed, ...).
        """
        from pplug.core.tasks import get_task

        dm = cls(root=None, task=get_task(task).name, **hparams)
        dm.task_spec = get_task(task)
        dm.splits = {"train": list(train), "val": list(val), "test": list(val)}
        dm.persona_text = persona_text
        return dm

    def connect(self, causal: bool = True, encoder: Any = None, budget: Any = None) -> None:
        """Settings only the model knows: causal LLM (answer cue), the history encoder (embedding retrieval)
        and the LLM's prompt budget (retrieved items are fitted to it)."""
        self.causal, self.encoder, self.budget = causal, encoder, budget

    def prepare_data(self) -> None:
        """Write the synthetic default data set on first use (rank 0 only)."""
        from pplug.synth.generate import ensure_default_data

        kind = _default_synth_kind(self.hparams.root) if self.hparams.root is not None else None
        if kind is not None:
            ensure_default_data(Path(self.hparams.root).parent, kind=kind)

    def _load(self, split: str, n: int | None, seed_offset: int, exclude: frozenset[str] = frozenset()) -> list:
        from pplug.core.tasks import get_task
        from pplug.lamp.data import LaMPDataError, load_outputs, load_split

        hp = self.hparams
        if hp.root is None:
            raise LaMPDataError(f"split {split!r}: no data root and no examples given (data.root is null)")
        loaded = load_split(hp.root, split, hp.task)
        if hp.task is not None and loaded.outputs_path is not None:
            file_task = get_task(load_outputs(loaded.outputs_path)[0]).name
            if not loaded.task.accepts_outputs_of(file_task):
                raise LaMPDataError(f"{loaded.outputs_path}: field 'task': {file_task}, but the model is "
                                    f"configured for {loaded.task.name} (set --model.task {file_task})")
        self.task_spec = loaded.task
        rest = [ex for ex in loaded.examples if ex.id not in exclude]
        return subsample(rest or loaded.examples, n, hp.seed + seed_offset)  # validation took all: test on all

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None) and "train" not in self.splits:
            self.splits["train"] = self._load(hp.train_split, hp.max_train_examples, 0)
        if stage in ("fit", "validate", None) and "val" not in self.splits:
            self.splits["val"] = self._load(hp.val_split, hp.max_val_examples, 1)
        if stage in ("test", None) and "test" not in self.splits:
            held = frozenset()
            if hp.val_split == hp.test_split and hp.max_val_examples is not None:
                val = self.splits.get("val") or self._load(hp.val_split, hp.max_val_examples, 1)
                held = frozenset(ex.id for ex in val)
            self.splits["test"] = self._load(hp.test_split, hp.max_test_examples, 2, exclude=held)

    def encode_histories(self, encoder: Any, stage: str | None = None) -> int:
        """Embed every history item of the splits a stage uses before its first step, in large batches and
        with progress shown, instead of a few per training step; returns how many texts that was (the
        cache makes a second call, or a second run, nearly free)."""
        from pplug.methods.batches import recent_history

        self.setup(stage)
        names = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", tuple(self.splits))
        texts = {self.task_spec.history_text(it) for name in names if name in self.splits
                 for ex in self.splits[name] for it in recent_history(ex.profile, self.hparams.max_history)}
        encoder.encode(sorted(texts), show_progress=True)
        return len(texts)

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

    def _loader(self, name: str) -> DataLoader:
        hp = self.hparams
        if name not in self.splits:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        collate = Collator(self.task_spec, hp.method, self.causal, hp.max_history, self.retrieved_for(name),
                           hp.retrieval_k, with_targets=True, persona=hp.persona, budget=self.budget,
                           persona_text=self.persona_text, seed=hp.seed,
                           history_copies=hp.history_copies if name == "train" else 1)
        bs = hp.batch_size if name == "train" else (hp.eval_batch_size or 2 * hp.batch_size)
        data = _Examples(self.splits[name])
        trainer = self.trainer  # set once a Trainer runs this module: its ranks share the data
        ranks = {"num_replicas": trainer.world_size, "rank": trainer.global_rank} if trainer is not None else {}
        kwargs = {"batch_size": bs, "collate_fn": collate, "num_workers": hp.num_workers,
                  "persistent_workers": hp.num_workers > 0}
        if name == "train":
            return ResumableLoader(data, TrainSampler(data, **ranks), **kwargs)
        return DataLoader(data, sampler=EvalSampler(data, **ranks), **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _default_synth_kind(root: str) -> str | None:
    """"ratings" for `.../lamp_data/synthetic/ratings` (a default synthetic set, generated on demand), else None."""
    p = Path(root)
    if p.parent.name == "synthetic" and p.parent.parent.name == "lamp_data" and p.name in ("ratings", "tags", "titles"):
        return p.name
    return None


__all__ = ["Collator", "EvalSampler", "LaMPBatch", "LaMPDataModule", "ResumableLoader", "TrainSampler"]
