"""Training the facet preference models of `pplug.decode.preference` from users' own histories, with Lightning.

For every user (a LaMP example's profile) and up to `items_per_user` of their past outputs, the real output is
the preferred side of a pair and a facet's alternative the other:

    length     the output truncated to its first half, or lengthened with words of the user's other outputs
    formality  the output with its casing flipped: lower-cased if the user writes capitalised, else title-cased
    topic      another user's output of about the same length

The user summary is leave-one-out (the mean of the user's other outputs), as at decoding time the candidate is
not among the past outputs. Loss: Bradley-Terry, -log sigmoid(r(preferred) - r(alternative)); a seeded tenth of
the users is held out and its pairwise accuracy recorded in each facet's config.json.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pplug.decode.preference import FACETS, FacetConfig, FacetModel, embed_candidates, facet_features, surface


@dataclass
class PrefsTrainConfig:
    """Settings of `train_preference_models` (`pplug prefs train`)."""

    facets: tuple[str, ...] = FACETS
    """Facets to train, one model each."""
    max_users: int | None = 150
    """Seeded random subset of the users (None: all)."""
    items_per_user: int = 6
    """Past outputs per user taken as preferred sides (each paired once per facet)."""
    max_history: int | None = 32
    """Most recent past outputs per user (the summary's and the candidates')."""
    hidden: int = 16
    """Hidden units of each head (0: linear)."""
    epochs: int = 30
    """Passes over the pairs."""
    batch_size: int = 256
    """Pairs per optimizer step."""
    lr: float = 1e-2
    """AdamW learning rate."""
    weight_decay: float = 1e-3
    """AdamW weight decay (the topic head has encoder-dim inputs; this keeps it from memorising users)."""
    val_fraction: float = 0.1
    """Share of users held out for the recorded pairwise accuracy."""
    seed: int = 0
    """Seed of the user subset, the perturbations and the initialisation."""


def perturb(facet: str, text: str, own: list[str], others: list[str], rng: random.Random) -> str:
    """The alternative of `text` for `facet` (see the module docstring); `own`: the user's other outputs,
    `others`: outputs of other users."""
    words = text.split()
    if facet == "length":
        if len(words) >= 4 and rng.random() < 0.5:
            return " ".join(words[: (len(words) + 1) // 2])
        pool = [w for o in own for w in o.split()] or [w for o in others[:20] for w in o.split()] or words
        extra = [rng.choice(pool) for _ in range(max(3, len(words)))]
        return " ".join(words + extra)
    if facet == "formality":
        long = [w for w in words if w[:1].isalpha() and len(w) > 3]
        capitalised = bool(long) and sum(w[0].isupper() for w in long) > len(long) / 2
        return text.lower() if capitalised else " ".join(w[:1].upper() + w[1:] for w in words)
    picks = [rng.choice(others) for _ in range(8)]  # topic: the closest in length of a few other users' outputs
    return min(picks, key=lambda o: abs(len(o.split()) - len(words)))


def build_pairs(encoder: Any, users: list[list[str]], cfg: PrefsTrainConfig) -> dict[str, tuple[torch.Tensor, ...]]:
    """facet -> (preferred features (N, F), alternative features (N, F), user index (N,))."""
    rng = random.Random(cfg.seed)
    every = [o for u in users for o in u]
    texts = sorted({o for u in users for o in u})
    emb = dict(zip(texts, encoder.encode(texts).float()))  # real outputs: cached like any history text
    rows: dict[str, list] = {f: [] for f in cfg.facets}
    alts: list[str] = []
    for ui, outs in enumerate(users):
        for i in rng.sample(range(len(outs)), min(cfg.items_per_user, len(outs))):
            rest = outs[:i] + outs[i + 1:]
            u_emb = torch.nn.functional.normalize(torch.stack([emb[o] for o in rest]).mean(dim=0), dim=0)
            u_surf = torch.tensor([surface(o) for o in rest]).mean(dim=0)
            others = [rng.choice(every) for _ in range(24)]
            others = [o for o in others if o not in outs] or others
            for f in cfg.facets:
                rows[f].append((ui, outs[i], len(alts), u_emb, u_surf))
                alts.append(perturb(f, outs[i], rest, others, rng))
    alt_emb = embed_candidates(encoder, alts)  # perturbed texts: not worth the persistent cache
    out = {}
    for f, items in rows.items():
        pos, neg = [], []
        for ui, text, a, u_emb, u_surf in items:
            both = facet_features(f, torch.stack([emb[text], alt_emb[a]]),
                                  torch.tensor([surface(text), surface(alts[a])]), u_emb, u_surf)  # (2, F)
            pos.append(both[0])
            neg.append(both[1])
        out[f] = (torch.stack(pos), torch.stack(neg), torch.tensor([it[0] for it in items]))
    return out


class PairwiseFacetModule(L.LightningModule):
    """Bradley-Terry training of one `FacetModel` on (preferred, alternative) feature pairs."""

    def __init__(self, model: FacetModel, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        margin = self.model(batch[0]) - self.model(batch[1])  # (N,)
        return torch.nn.functional.softplus(-margin).mean(), (margin > 0).float().mean()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss(batch)
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, acc = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/acc": acc}, prog_bar=False)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def train_facet(facet: str, pairs: tuple[torch.Tensor, ...], encoder: Any, cfg: PrefsTrainConfig,
                task: str) -> FacetModel:
    """One facet model trained on its pairs (held-out users' accuracy in `training_record`)."""
    from torch.utils.data import DataLoader, TensorDataset

    pos, neg, users = pairs
    n_users = int(users.max()) + 1 if len(users) else 0
    held = set(random.Random(cfg.seed).sample(range(n_users), int(n_users * cfg.val_fraction))) if n_users > 9 else set()
    val = torch.tensor([int(u) in held for u in users])
    tr_pos, tr_neg = pos[~val], neg[~val]
    torch.manual_seed(cfg.seed)
    model = FacetModel(FacetConfig(facet, hidden=cfg.hidden, task=task, max_history=cfg.max_history,
                                   encoder_name_or_path=getattr(encoder, "name_or_path", "default")),
                       pos.shape[1], getattr(encoder, "identity", ""), int(getattr(encoder, "dim", 0)))
    both = torch.cat([tr_pos, tr_neg])  # standardise on the training pairs, both sides
    model.feature_mean.copy_(both.mean(dim=0))
    model.feature_std.copy_(both.std(dim=0).clamp_min(1e-4))
    model.description_embedding.copy_(encoder.encode([model.config.description])[0].float())
    module = PairwiseFacetModule(model, cfg.lr, cfg.weight_decay)
    # Lightning's banner lines (accelerators, tips) say nothing about a CPU-only head of a few hundred weights
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = L.Trainer(max_epochs=cfg.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    loader = DataLoader(TensorDataset(tr_pos, tr_neg), batch_size=cfg.batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(pos[val], neg[val]), batch_size=1024) if val.any() else None
    trainer.fit(module, loader, val_loader)
    model.eval()

    def acc(p: torch.Tensor, q: torch.Tensor) -> float | None:
        with torch.no_grad():
            return round(float((model(p) > model(q)).float().mean()), 4) if len(p) else None

    model.training_record = {"pairs": int(len(pos)), "users": n_users, "held_out_users": len(held),
                             "train_pair_accuracy": acc(tr_pos, tr_neg), "val_pair_accuracy": acc(pos[val], neg[val]),
                             "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                          for k, v in vars(cfg).items()}}
    return model


def train_preference_models(encoder: Any, users: list[list[str]], cfg: PrefsTrainConfig, task: str,
                            out: str | Path | None = None) -> dict[str, FacetModel]:
    """Train every facet of `cfg` on `users` (each a list of that user's past outputs, two or more) and, with
    `out`, save them as `out/<facet>/` (config.json + model.safetensors)."""
    users = [u for u in users if len(u) >= 2]
    if not users:
        raise ValueError("training preference models needs users with at least two past outputs each")
    pairs = build_pairs(encoder, users, cfg)
    models = {f: train_facet(f, pairs[f], encoder, cfg, task) for f in cfg.facets}
    if out is not None:
        for f, m in models.items():
            m.save_pretrained(Path(out) / f)
    return models


__all__ = ["PairwiseFacetModule", "PrefsTrainConfig", "build_pairs", "perturb", "train_facet",
           "train_preference_models"]
