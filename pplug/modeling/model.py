"""PPlugModel: one frozen LLM serving many users at once, each row with its own soft prompt.

    texts of each row's history --HistoryEncoder (frozen, cached)--> (B, N, d_enc) + mask
    query text --UserEmbedder--> [instruction; user tokens] (B, P, d_llm)
    [prefix; Emb(prompt)] --FrozenLLM--> loss / generations / choice log-probs

Only the UserEmbedder trains. `save_pretrained` writes exactly two files (peft style):
`pplug_config.json` (the config fields, flat, + base LLM / encoder identity, dims, pplug version) and `pplug.safetensors`
(trainable weights only). `from_pretrained` never unpickles and refuses a base LLM or encoder that does
not match the one the weights were trained for.

Example:
    >>> model = PPlugModel.from_config(PPlugConfig())          # default SmolLM2 + all-MiniLM-L6-v2
    >>> model.print_trainable_parameters()
    >>> batch = PPlugBatch(prompts=[...], queries=[...], histories=[[...], []])
    >>> model.generate(batch)                                    # one string per row
    >>> model.save_pretrained("checkpoints/run/final")
    >>> model = PPlugModel.from_pretrained("checkpoints/run/final")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pplug.core.batch import PPlugBatch
from pplug.core.checkpoints import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, legacy_run_settings, resolve
from pplug.core.io import publish_folder
from pplug.core.tasks import get_task
from pplug.encode.history import HistoryEncoder
from pplug.version import __version__

from .config import PPlugConfig
from .embedder import UserEmbedder, history_label_tensor, similarity_weights
from .label_rules import expected_rating, mix_history_prior
from .llm import FrozenLLM
from .prefill import check_position

FORMAT_VERSION = 2
"""2: the config records method, retrieval_k, retriever and decoding (1 lacked them; still read)."""


class PPlugModel(nn.Module):
    """Frozen LLM + frozen cached history encoder + trainable UserEmbedder.

    Build with `from_config` (fresh embedder) or `from_pretrained` (saved embedder); the LLM and history
    encoder may be passed in to share them between several models (e.g. baselines).
    """

    def __init__(self, config: PPlugConfig, llm: FrozenLLM, history_encoder: HistoryEncoder,
                 embedder: UserEmbedder):
        super().__init__()
        check_position(config.soft_prompt_position, llm.is_seq2seq)  # a seq2seq LLM: one line, before any step
        self.config = config
        self.llm = llm
        self.history_encoder = history_encoder  # not an nn.Module: frozen, outside state_dict
        self.embedder = embedder

    @classmethod
    def from_config(cls, config: PPlugConfig, llm: FrozenLLM | None = None,
                    history_encoder: HistoryEncoder | None = None, cache_path=None,
                    device: str | torch.device = "auto") -> PPlugModel:
        """A fresh (untrained) model.

        Args:
            config: the configuration.
            llm: an already loaded FrozenLLM (else loaded from config.base_model_name_or_path).
            history_encoder: an already loaded HistoryEncoder (else config.encoder_name_or_path with the
                shared embedding cache, or `cache_path`).
            device: where models loaded here run ("auto": cuda, then mps, then cpu); the model then sits on
                the LLM's device.
        """
        if llm is None:
            llm, history_encoder = load_frozen(config, history_encoder, cache_path, device)
        else:  # the config's limits win over whatever the shared LLM was built with
            llm.max_input_tokens, llm.max_target_tokens = config.max_input_tokens, config.max_target_tokens
        if history_encoder is None:
            history_encoder = HistoryEncoder(config.encoder_name_or_path, cache_path=cache_path, device=llm.device)
        labels = llm.text_embeddings(get_task(config.task).labels) if config.reads_label_embeddings else None
        embedder = UserEmbedder(config, encoder_dim=history_encoder.dim, token_dim=llm.token_dim,
                                token_norm=llm.token_norm, sentence_encoder=history_encoder.model,
                                label_embeddings=labels)
        return cls(config, llm, history_encoder, embedder).to(llm.device)

    # --- parameters ---

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should see (the embedder's; the LLM and history encoder are frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts; total includes the frozen LLM (not the history encoder)."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print like peft: `trainable params: N || all params: M || trainable%: x`."""
        trainable, total = self.count_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def train(self, mode: bool = True) -> PPlugModel:
        super().train(mode)
        self.llm.train(False)  # FrozenLLM stays in eval mode anyway; explicit for readers
        return self

    @property
    def device(self) -> torch.device:
        return self.llm.device

    @property
    def soft_prompt_position(self) -> str:
        """Where the soft prompt sits in the LLM's input ("prefix" or "after_prompt", `PPlugConfig`)."""
        return self.config.soft_prompt_position

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .cuda() / Lightning's device placement reach the history encoder too, which is not a
        # submodule (it is frozen and outside the state_dict) but must run where the model runs
        super()._apply(fn, recurse)
        if str(self.history_encoder.device) != str(self.device):
            self.history_encoder.to(self.device)
        return self

    def to_device(self, device: str | torch.device = "auto") -> PPlugModel:
        """Move the whole model ("auto": cuda, then mps, then cpu); returns self."""
        from pplug.core.runtime import resolve_device

        return self.to(resolve_device(device))

    # --- batch -> prefix ---

    def history_tensors(self, histories: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached embeddings of each row's `max_history` most recent items, padded.

        Distinct texts across the batch are embedded once. Returns (B, N, d_enc) float32 and a (B, N) bool
        mask, N = longest kept history (0 when every row is empty).
        """
        kept = [list(h)[-self.config.max_history :] if h else [] for h in histories]
        unique = list(dict.fromkeys(t for h in kept for t in h))
        b, n, d = len(kept), max((len(h) for h in kept), default=0), self.history_encoder.dim
        emb = torch.zeros(b, n, d)
        mask = torch.zeros(b, n, dtype=torch.bool)
        if unique:
            table = self.history_encoder.encode(unique)  # (U, d)
            row_of = {t: i for i, t in enumerate(unique)}
            for i, h in enumerate(kept):
                if h:
                    emb[i, : len(h)] = table[[row_of[t] for t in h]]
                    mask[i, : len(h)] = True
        return emb.to(self.device), mask.to(self.device)

    def history_inputs(self, batch: PPlugBatch, labels_for: str | None = None):
        """(B, N, d_enc) cached history embeddings, (B, N) mask, and (B, N) label indices (-1: none) where
        `labels_for` names the setting that reads them (else None): what the embedder, prior and attention term read."""
        emb, mask = self.history_tensors(batch.histories)
        if labels_for is not None and batch.history_labels is None:
            raise ValueError(f"{labels_for} reads the label of each history item: build the batch with "
                             "pplug.methods.batches.build_batch, or pass PPlugBatch(history_labels=...)")
        return emb, mask, (history_label_tensor(batch.history_labels, self.config.max_history, emb.shape[1])
                           if labels_for else None)

    def query_inputs(self, batch: PPlugBatch) -> Sequence[str] | torch.Tensor:
        """The inputs as the embedder takes them: texts (trainable input encoder), else cached frozen embeddings."""
        return batch.queries if self.embedder.needs_query_text else self.history_encoder.encode(batch.queries)

    def prefix(self, batch: PPlugBatch) -> torch.Tensor:
        """Soft prompt per row: (B, P, token_dim) = [instruction; user tokens; statistics; labels; input token]."""
        reads = "this model (config.label_token)" if self.config.reads_history_labels else None
        emb, mask, labels = self.history_inputs(batch, reads)
        queries = self.query_inputs(batch) if self.embedder.needs_query else None
        stats = None
        if self.config.user_stats:
            if batch.history_stats is None:
                raise ValueError("this model reads the user's history statistics (config.user_stats): build the "
                                 "batch with pplug.methods.batches.build_batch, or pass PPlugBatch(history_stats=...)")
            stats = torch.tensor(batch.history_stats, dtype=torch.float32)
        return self.embedder(emb, mask, queries, stats, labels)

    @torch.no_grad()
    def history_prior(self, batch: PPlugBatch) -> torch.Tensor:
        """(B, C): each row's past labels weighted by likeness to the input, what `history_mix_prior` mixes in."""
        emb, mask, labels = self.history_inputs(batch, f"history_mix_prior {self.config.history_mix_prior!r}")
        return self.history_prior_from(emb, mask, batch.queries, labels)

    @torch.no_grad()
    def history_prior_from(self, history_emb: torch.Tensor, history_mask: torch.Tensor, queries: Sequence[str] |
                           torch.Tensor, history_labels: torch.Tensor, encode=None, kind: str | None = None):
        """`history_prior` from (B, N, d_enc) history embeddings, their mask, the inputs (texts, or (B, d_enc) frozen
        embeddings as `UserEmbedder.forward` takes them) and (B, N) label indices -> (B, C) on the CPU. `encode`:
        the frozen encoder (default: cached; `pplug serve` passes its uncached one); `kind`: None = the config's."""
        if history_emb.shape[1] == 0:
            return torch.zeros(len(queries), len(get_task(self.config.task).labels))
        attention = (kind or self.config.history_mix_prior) == "attention"
        if not isinstance(queries, torch.Tensor) and not (attention and self.embedder.needs_query_text):
            queries = (encode or self.history_encoder.encode)(list(queries))  # texts -> (B, d_enc) frozen
        if attention:
            q = self.embedder.embed_query(queries)
            return self.embedder.attention_label_shares(history_emb, history_mask, q, history_labels)
        q = F.normalize(queries.float(), dim=-1)  # "encoder": the frozen encoder's own likeness, no trained weight
        w = similarity_weights(history_emb.cpu(), history_mask, q, self.config.history_mix_temperature)  # (B, N)
        return self.embedder.label_shares(w, history_labels)

    def _mixed(self, logp: torch.Tensor, batch: PPlugBatch, choices: Sequence[str], prior=None) -> torch.Tensor:
        """`logp` (B, C) with `history_mix_items` / `history_mix_prior` mixed in; `prior`: precomputed (serve)."""
        c = self.config
        prior = self.history_prior(batch) if prior is None and c.mixes_item_prior else prior
        return mix_history_prior(logp, batch.history_stats, c.history_mix_items, c.task, choices, prior,
                                 c.history_mix_model_temperature)

    # --- the three uses ---

    def forward(self, batch: PPlugBatch) -> torch.Tensor:
        """Scalar training loss on `batch.targets`: the mean token cross-entropy, + `rating_loss_weight` x the expected
        rating's squared error (rating tasks), + `attention_label_loss_weight` x `attention_label_loss`."""
        if batch.targets is None:
            raise ValueError("PPlugModel.forward needs batch.targets")
        plain = not self.config.rating_loss_weight and self.config.label_loss == "tokens"
        loss = self.llm(self.prefix(batch), batch.prompts, batch.targets, position=self.soft_prompt_position) \
            if plain else self._loss_and_raw_label_logprobs(batch)[0]
        weight = self.config.attention_label_loss_weight
        return loss + weight * self.attention_label_loss(batch) if weight else loss

    def attention_label_loss(self, batch: PPlugBatch) -> torch.Tensor:
        """`UserEmbedder.attention_label_loss` on the batch: its past items' labels against its gold labels."""
        emb, mask, history_labels = self.history_inputs(batch, "attention_label_loss_weight")
        labels = get_task(self.config.task).labels
        gold = torch.tensor([labels.index(t) if t in labels else -2 for t in batch.targets])  # -2: matches no item
        return self.embedder.attention_label_loss(emb, mask, self.query_inputs(batch), history_labels, gold)

    @property
    def scores_labels_with_loss(self) -> bool:
        """True for label tasks whose labels are single tokens ("1".."5"): `loss_and_label_logprobs` then gives
        the loss and the label scores from one forward pass (evaluation halves its cost)."""
        labels = get_task(self.config.task).labels
        return bool(labels) and self.llm.single_token(labels)

    def loss_and_label_logprobs(self, batch: PPlugBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`'s loss and the (B, C) label log-probs that `choice_logprobs` gives (mixed the same way),
        from one forward pass. Needs `scores_labels_with_loss`."""
        loss, logp = self._loss_and_raw_label_logprobs(batch)
        with torch.no_grad():
            return loss, self._mixed(logp.detach(), batch, get_task(self.config.task).labels)

    def _loss_and_raw_label_logprobs(self, batch: PPlugBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the (B, C) label log-probs before any history mix (training never reads the mix)."""
        if batch.targets is None:
            raise ValueError("PPlugModel.loss_and_label_logprobs needs batch.targets")
        task = get_task(self.config.task)
        labels = list(task.labels)
        loss, logp = self.llm(self.prefix(batch), batch.prompts, batch.targets, choices=labels,
                              position=self.soft_prompt_position)  # (B, C)
        if self.config.label_loss == "labels":  # the gold among the labels only: cross_entropy renormalises
            unknown = [t for t in batch.targets if t not in labels]
            if unknown:
                raise ValueError(f"label_loss 'labels' needs targets among {labels}, got {unknown[:3]!r}")
            gold = torch.tensor([labels.index(t) for t in batch.targets], device=logp.device)
            loss = F.cross_entropy(logp, gold)
        weight = self.config.rating_loss_weight
        if weight:
            try:
                gold = torch.tensor([float(t) for t in batch.targets], device=self.device)  # (B,)
            except ValueError:
                raise ValueError(f"rating_loss_weight needs numeric targets, got {list(batch.targets)[:3]!r}") \
                    from None
            expected = expected_rating(logp.softmax(dim=-1), labels)  # (B,), renormalised over the labels
            loss = loss + weight * (expected - gold).pow(2).mean()
        return loss, logp

    @torch.no_grad()
    def generate(self, batch: PPlugBatch, max_new_tokens: int | None = None, num_beams: int = 1,
                 prefix: torch.Tensor | None = None, **kwargs) -> list[str]:
        """One generated string per row (greedy or beam search). max_new_tokens defaults to the task's;
        `prefix`: the batch's soft prompts (B, P, D) when already computed (else `self.prefix(batch)`)."""
        if max_new_tokens is None:
            max_new_tokens = self.default_max_new_tokens
        return self.llm.generate(self.prefix(batch) if prefix is None else prefix, batch.prompts,
                                 max_new_tokens=max_new_tokens, num_beams=num_beams,
                                 position=self.soft_prompt_position, **kwargs)

    @torch.no_grad()
    def choice_logprobs(self, batch: PPlugBatch, choices: list[str], prefix: torch.Tensor | None = None,
                        history_prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) log p(choice | prefix, prompt), summed over the choice's tokens; with
        `config.history_mix_items`, the log of that distribution mixed with the user's own label shares (or, with
        `history_mix_prior` "encoder" / "attention", the labels of their past items weighted by likeness).
        `prefix`: the batch's soft prompts (B, P, D) when already computed (else `self.prefix(batch)`);
        `history_prior`: likewise the (B, C) `history_prior` (else computed from the batch)."""
        logp = self.llm.choice_logprobs(self.prefix(batch) if prefix is None else prefix, batch.prompts, choices,
                                        position=self.soft_prompt_position)
        return self._mixed(logp, batch, choices, history_prior)

    @property
    def default_max_new_tokens(self) -> int:
        """The generation budget when none is asked for: the task's (unknown task: the config's target budget)."""
        try:
            return int(get_task(self.config.task).max_new_tokens)
        except ValueError:
            return self.config.max_target_tokens

    # --- checkpoints ---

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The embedder's weights (all of it trains), keys prefixed "embedder."; contiguous CPU copies."""
        return {f"embedder.{k}": v.detach().cpu().contiguous().clone() for k, v in self.embedder.state_dict().items()}

    def checkpoint_metadata(self) -> dict:
        """Everything `pplug_config.json` records besides the config."""
        return {
            "format_version": FORMAT_VERSION,
            "pplug_version": __version__,
            "base_model": self.llm.identity(),
            "encoder": {"identity": self.history_encoder.identity, "dim": self.history_encoder.dim},
            "num_prefix_tokens": self.embedder.num_prefix_tokens,
        }

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write `pplug_config.json` + `pplug.safetensors` (trainable weights only) into `out_dir`, atomically.

        Files are written into a temporary sibling folder first and moved into place, so a crash never leaves
        a half-written checkpoint. An existing folder is updated file by file (each file atomically).
        """
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            doc = {**self.config.to_dict(), **self.checkpoint_metadata()}  # flat, like peft's adapter_config.json
            (tmp / CONFIG_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            save_file(self.trainable_state_dict(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            if not publish_folder(tmp, out):
                # weights first: the config (what loaders read first) never points at missing weights
                os.replace(tmp / WEIGHTS_NAME, out / WEIGHTS_NAME)
                os.replace(tmp / CONFIG_NAME, out / CONFIG_NAME)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @staticmethod
    def load_checkpoint_config(ckpt_dir: str | os.PathLike) -> tuple[PPlugConfig, dict]:
        """(config, metadata) from `ckpt_dir/pplug_config.json`; CheckpointError when missing or corrupt."""
        path = Path(ckpt_dir) / CONFIG_NAME
        if not Path(ckpt_dir).is_dir():
            raise CheckpointError(f"{ckpt_dir}: checkpoint folder not found")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (not a pplug checkpoint folder)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt JSON ({e})") from None
        if not isinstance(doc, dict) or "base_model_name_or_path" not in doc:
            raise CheckpointError(f"{path}: not a pplug config (no 'base_model_name_or_path')")
        fields = {f.name for f in dataclasses.fields(PPlugConfig)} | {"use_user_embedding"}
        if "method" not in doc:  # format 1: the method lived in train.py's config.yaml beside the folder
            doc = {**legacy_run_settings(ckpt_dir), **doc}
        try:
            config = PPlugConfig.from_dict({k: v for k, v in doc.items() if k in fields})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: invalid config: {e}") from None
        doc = {k: v for k, v in doc.items() if k not in fields}
        if doc.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {doc['format_version']} is newer than this pplug "
                                  f"({__version__}) understands; upgrade pplug")
        return config, doc

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | os.PathLike, llm: FrozenLLM | None = None,
                        history_encoder: HistoryEncoder | None = None, cache_path=None,
                        device: str | torch.device = "auto", **config_overrides) -> PPlugModel:
        """Rebuild a saved model around its (frozen) base LLM and encoder.

        Args:
            ckpt_dir: folder written by `save_pretrained`, or a run folder (its serving version is loaded:
                LATEST, else final/; `pplug.core.checkpoints.resolve`).
            device: where to run ("auto": cuda, then mps, then cpu), for models loaded here.
            llm / history_encoder: already loaded models to reuse; they must match the ones the checkpoint
                was trained for (model type, dims, vocabulary; encoder weights), else CheckpointError.
            cache_path: embedding cache for a history encoder loaded here.
            **config_overrides: run-time fields to change, e.g. max_input_tokens or torch_dtype (not dims).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        ckpt_dir = resolve(ckpt_dir)
        config, meta = cls.load_checkpoint_config(ckpt_dir)
        if config_overrides:
            fixed = {"num_user_tokens", "use_instruction", "input_encoder", "aggregation", "user_stats", "input_token",
                     "label_token", "stats_init", "task", "base_model_name_or_path", "encoder_name_or_path", "method"}
            bad = sorted(set(config_overrides) & fixed)
            if bad:
                raise CheckpointError(f"{ckpt_dir}: {bad} define the saved weights and cannot be overridden")
            config = dataclasses.replace(config, **config_overrides)
        weights = Path(ckpt_dir) / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{weights}: missing")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights}: corrupt safetensors file ({e})") from None

        model = cls.from_config(config, llm=llm, history_encoder=history_encoder, cache_path=cache_path, device=device)
        want, got = meta.get("base_model", {}), model.llm.identity()
        diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
        if diff:
            raise CheckpointError(
                f"{ckpt_dir}: trained for base LLM {config.base_model_name_or_path!r} but the given LLM differs: "
                + ", ".join(f"{k} saved={a!r} given={b!r}" for k, (a, b) in diff.items())
            )
        enc = meta.get("encoder", {})
        if enc and (enc.get("dim") != model.history_encoder.dim or enc.get("identity") != model.history_encoder.identity):
            raise CheckpointError(
                f"{ckpt_dir}: trained with encoder {enc.get('identity')!r} (dim {enc.get('dim')}) but the given encoder "
                f"is {model.history_encoder.identity!r} (dim {model.history_encoder.dim})"
            )
        prefix = "embedder."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        expected = model.embedder.state_dict()
        missing, unexpected = sorted(set(expected) - set(own)), sorted(set(own) - set(expected))
        if missing or unexpected or len(own) != len(state):
            raise CheckpointError(f"{weights}: weights do not fit the config (missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]})")
        for k, v in own.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise CheckpointError(f"{weights}: '{k}' has shape {tuple(v.shape)}, the model needs "
                                      f"{tuple(expected[k].shape)}")
        model.embedder.load_state_dict(own)
        return model


def load_frozen(config: PPlugConfig, history_encoder: HistoryEncoder | None = None, cache_path=None,
                device: str | torch.device = "auto") -> tuple[FrozenLLM, HistoryEncoder]:
    """The frozen LLM (the config's dtype and token limits) and sentence encoder a `config` runs on, loaded fresh
    (`history_encoder`, when given, is kept): what `PPlugModel.from_config` builds a model on."""
    llm = FrozenLLM(config.base_model_name_or_path, dtype=config.torch_dtype, device=device,
                    max_input_tokens=config.max_input_tokens, max_target_tokens=config.max_target_tokens)
    if history_encoder is None:
        history_encoder = HistoryEncoder(config.encoder_name_or_path, cache_path=cache_path, device=llm.device)
    return llm, history_encoder


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CheckpointError", "PPlugBatch", "PPlugModel"]
