"""Preference (reward) models, one per facet of a user's taste, retrieved per user and mixed into MBR decoding.

    (user's past outputs, candidate) --features(facet)--> small head --> r_f(u, c)     one model per facet
    persona text --HistoryEncoder--> cosine to facet descriptions --softmax(s / T)--> w_f(u)   (`rank_adapters`)
    reward(u, c) = sum_f w_f(u) * r_f(u, c)
    reward-mbr:  argmax_k  (1 - w) * minmax(consensus_k) + w * minmax(reward_k)     (min-max within the pool)

Facets (`FACETS`): "length" (the user's typical output length), "formality" (casing and punctuation: title
case vs lower case), "topic" (the user's vocabulary, through the frozen sentence encoder). Each model scores a
candidate against a summary of the user's past outputs, so one trained model serves every user; users differ
in their summaries and in how much each facet weighs for them. `pplug.train.preference` trains them
(Bradley-Terry: the user's real output over a perturbed or borrowed one).

    PREFS/<facet>/config.json          facet, description text, feature layout, encoder identity, training record
    PREFS/<facet>/model.safetensors    head weights, feature scaling, the description embedding

`PreferenceSet.from_pretrained(PREFS, encoder)` loads every facet folder of PREFS; `FacetModel.from_pretrained`
one folder alone. A folder made with another sentence encoder is refused in one line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pplug.core.checkpoints import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
FACETS = ("length", "formality", "topic")
DESCRIPTIONS = {  # worded like the persona texts of `pplug.persona.from_history`, which retrieval compares them to
    "length": "Prefers: short outputs; about the same number of words per output; brief, concise length.",
    "formality": "Prefers: output style title case, capitalised words, formal casing and punctuation, "
                 "colon subtitles.",
    "topic": "Pattern: frequent topics, recurring keywords and vocabulary of the user's past interactions.",
}
_PUNCT = re.compile(r"[:;,.!?()\"'-]")


class PreferenceModelError(CheckpointError):
    """A preference-model folder is missing, corrupt or made with another sentence encoder (one line)."""


@dataclass
class FacetConfig:
    """What rebuilds one facet model (config.json's `config`)."""

    facet: str = "length"
    """Which facet of the user's outputs the model scores (one of `FACETS`)."""
    description: str = ""
    """The text retrieval compares a user's persona text to (empty: `DESCRIPTIONS[facet]`)."""
    hidden: int = 16
    """Hidden units of the head (0: a linear head)."""
    task: str = "LaMP_5"
    """The LaMP task whose history items the user summaries and persona texts come from."""
    max_history: int | None = 32
    """Most recent past outputs summarised per user (None: all)."""
    encoder_name_or_path: str = "default"
    """The frozen sentence encoder of candidates, past outputs and the description."""

    def __post_init__(self) -> None:
        if self.facet not in FACETS:
            raise ValueError(f"facet must be one of {FACETS}, got {self.facet!r}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        self.description = self.description or DESCRIPTIONS[self.facet]


def surface(text: str) -> list[float]:
    """Surface statistics of one text: log(1 + words), log(1 + characters), share of capitalised words
    (of those longer than 3 characters), share of upper-case letters, punctuation marks per word."""
    words = text.split()
    long = [w for w in words if w[:1].isalpha() and len(w) > 3]
    letters = [ch for ch in text if ch.isalpha()]
    return [math.log1p(len(words)), math.log1p(len(text)),
            sum(w[0].isupper() for w in long) / len(long) if long else 0.0,
            sum(ch.isupper() for ch in letters) / len(letters) if letters else 0.0,
            len(_PUNCT.findall(text)) / max(1, len(words))]


def facet_features(facet: str, cand_emb: torch.Tensor, cand_surface: torch.Tensor, user_emb: torch.Tensor,
                   user_surface: torch.Tensor) -> torch.Tensor:
    """(K, F) features of K candidates for one facet against one user's summary (mean embedding (D,), mean
    surface statistics (5,)). Why hand features beside the embedding: the default encoder is uncased and
    blind to length, so casing and length come from the text itself; the embedding carries topic."""
    if facet == "length":
        c, u = cand_surface[:, :2], user_surface[:2]
    elif facet == "formality":
        c, u = cand_surface[:, 2:], user_surface[2:]
    else:  # topic: agreement of the candidate's embedding with the user's mean one, dimension by dimension
        cos = (cand_emb @ user_emb).unsqueeze(1)  # (K, 1)
        return torch.cat([cand_emb * user_emb, cos], dim=1)
    d = c - u  # distance to the user's own habit, signed (longer / shorter) and unsigned
    return torch.cat([c, d, d.abs()], dim=1)


class FacetModel(torch.nn.Module):
    """One facet's reward head: standardised features -> (MLP or linear) -> a score per candidate.

    Args:
        config: its `FacetConfig`.
        in_dim: feature size (`facet_features`).
        encoder_identity, encoder_dim: the sentence encoder it was trained with (checked on load).
    """

    def __init__(self, config: FacetConfig, in_dim: int, encoder_identity: str = "", encoder_dim: int = 0) -> None:
        super().__init__()
        self.config, self.in_dim = config, in_dim
        self.encoder_identity, self.encoder_dim = encoder_identity, encoder_dim
        h = config.hidden
        self.head = (torch.nn.Sequential(torch.nn.Linear(in_dim, h), torch.nn.Tanh(), torch.nn.Linear(h, 1))
                     if h else torch.nn.Linear(in_dim, 1))
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.register_buffer("description_embedding", torch.zeros(max(encoder_dim, 1)))
        self.training_record: dict[str, Any] = {}

    @property
    def facet(self) -> str:
        return self.config.facet

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) features -> (N,) scores (higher: more like the user)."""
        return self.head((features - self.feature_mean) / self.feature_std).squeeze(-1)

    # --- saving and loading ---

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write `out_dir/config.json` + `out_dir/model.safetensors` (see the module docstring)."""
        from safetensors.torch import save_file

        from pplug.core.io import atomic_write_json
        from pplug.version import __version__

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME),
                  metadata={"format": "pt"})
        atomic_write_json(out / CONFIG_NAME, {
            "format_version": FORMAT_VERSION, "pplug_version": __version__, "kind": "pplug-preference-model",
            "config": asdict(self.config), "in_dim": self.in_dim,
            "encoder": {"identity": self.encoder_identity, "dim": self.encoder_dim},
            "training": self.training_record})
        return out

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, encoder: Any = None) -> FacetModel:
        """Load one facet folder; `encoder` (if given) must be the one it was trained with.

        Raises:
            PreferenceModelError: one line naming the file or field at fault.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / CONFIG_NAME
        if not path.is_file():
            raise PreferenceModelError(f"{path}: missing (not a preference-model folder; "
                                       "`pplug prefs train` writes them)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            config = FacetConfig(**doc["config"])
            in_dim, enc = int(doc["in_dim"]), doc["encoder"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise PreferenceModelError(f"{path}: not a readable preference-model config ({e})") from None
        if doc.get("format_version", 0) > FORMAT_VERSION:
            raise PreferenceModelError(f"{path}: format_version {doc['format_version']} is newer than this pplug")
        if encoder is not None and (enc.get("identity") != encoder.identity or enc.get("dim") != encoder.dim):
            raise PreferenceModelError(f"{path}: field 'encoder': trained with encoder {enc.get('identity')!r} "
                                       f"(dim {enc.get('dim')}) but the given one is {encoder.identity!r} "
                                       f"(dim {encoder.dim})")
        model = cls(config, in_dim, enc.get("identity", ""), int(enc.get("dim", 0)))
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise PreferenceModelError(f"{folder / WEIGHTS_NAME}: unreadable or does not fit config.json "
                                       f"({' '.join(str(e).split())[:160]})") from None
        model.training_record = doc.get("training", {})
        return model.eval()


# --------------------------------------------------------------------------------------------------
# a set of facet models, its retrieval and its scores


@dataclass
class UserSummary:
    """What the facet models see of one user: the mean embedding and mean surface statistics of past outputs."""

    embedding: torch.Tensor
    surface: torch.Tensor
    count: int = 0


def embed_candidates(encoder: Any, texts: Sequence[str]) -> torch.Tensor:
    """(K, D) L2-normalised embeddings of throwaway texts (candidates, perturbations): past the persistent
    cache of a HistoryEncoder, which would otherwise fill with every sample ever drawn."""
    run = getattr(encoder, "encode_uncached", None)
    return (run(list(texts)) if run is not None else encoder.encode(list(texts))).float()


def summarise_user(encoder: Any, past: Sequence[str]) -> UserSummary | None:
    """The summary of a user's past outputs (None without any: the reward then says nothing)."""
    past = [p for p in past if p.strip()]
    if not past:
        return None
    emb = torch.nn.functional.normalize(encoder.encode(list(past)).float().mean(dim=0), dim=0)  # (D,)
    return UserSummary(emb, torch.tensor([surface(p) for p in past]).mean(dim=0), len(past))


@dataclass
class PreferenceSet:
    """The facet models of one folder and the rule that weighs them per user.

    Attributes:
        models: facet name -> FacetModel.
        encoder: the sentence encoder of candidates, past outputs, persona texts and descriptions.
        temperature: softmax temperature over the cosine similarities of a persona text to the descriptions.
    """

    models: dict[str, FacetModel]
    encoder: Any
    temperature: float = 0.1
    _desc: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise PreferenceModelError("a preference set needs at least one facet model")
        self._desc = torch.stack([m.description_embedding.float() for m in self.models.values()])  # (F, D)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, encoder: Any = None, temperature: float = 0.1
                        ) -> PreferenceSet:
        """Every facet folder under `folder` (each holding config.json), in name order; `encoder` None loads the
        one the facets were trained with (`FacetConfig.encoder_name_or_path`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise PreferenceModelError(f"{folder}: preference-model folder not found")
        subs = sorted(p for p in folder.iterdir() if (p / CONFIG_NAME).is_file())
        if not subs:
            raise PreferenceModelError(f"{folder}: no facet folders (<facet>/{CONFIG_NAME}); "
                                       "`pplug prefs train` writes them")
        if encoder is None:
            from pplug.encode.history import HistoryEncoder

            encoder = HistoryEncoder(FacetModel.from_pretrained(subs[0]).config.encoder_name_or_path, device="cpu")
        return cls({p.name: FacetModel.from_pretrained(p, encoder) for p in subs}, encoder, temperature)

    def persona_text(self, profile: Sequence[dict]) -> str:
        """The persona text of a user's history (the hub's: `pplug.persona.from_history.history_persona_text`)."""
        from pplug.core.tasks import get_task
        from pplug.persona.from_history import history_persona_text

        cfg = next(iter(self.models.values())).config
        items = list(profile)[-cfg.max_history:] if cfg.max_history else list(profile)
        return history_persona_text(items, get_task(cfg.task))

    def weights(self, persona_texts: Sequence[str | None]) -> list[dict[str, float]]:
        """Facet weights per persona text: the LoRA hub's retrieval rule over every facet (softmax over cosine,
        `pplug.encode.history.rank_descriptions`); an empty persona text (cold start) gets uniform weights."""
        from pplug.encode.history import rank_descriptions

        out = []
        for r in rank_descriptions(self.encoder, self._desc, persona_texts, len(self.names), self.temperature):
            if r is None:
                out.append({n: 1.0 / len(self.names) for n in self.names})
            else:
                out.append({self.names[j]: float(w) for j, w in zip(r[0], r[1])})
        return out

    def scores(self, texts: Sequence[str], user: UserSummary | None) -> dict[str, torch.Tensor]:
        """facet -> (K,) score of each candidate for this user (zeros for a user with no past outputs)."""
        if user is None:
            return {n: torch.zeros(len(texts)) for n in self.names}
        emb = embed_candidates(self.encoder, texts)  # (K, D)
        surf = torch.tensor([surface(t) for t in texts])  # (K, 5)
        with torch.no_grad():
            return {n: m(facet_features(m.facet, emb, surf, user.embedding, user.surface))
                    for n, m in self.models.items()}

    def reward(self, texts: Sequence[str], user: UserSummary | None, weights: dict[str, float]) -> torch.Tensor:
        """(K,) sum_f w_f * r_f of each candidate (facets missing from `weights` count 0)."""
        unknown = set(weights) - set(self.names)
        if unknown:
            raise PreferenceModelError(f"unknown facet {sorted(unknown)[0]!r}; this set has: {', '.join(self.names)}")
        per = self.scores(texts, user)
        return sum((weights.get(n, 0.0) * s for n, s in per.items()), torch.zeros(len(texts)))


_SETS: dict[tuple, PreferenceSet] = {}


def load_set(folder: str | os.PathLike, encoder: Any) -> PreferenceSet:
    """`PreferenceSet.from_pretrained`, loaded once per (folder, its files' times, encoder) in a process."""
    folder = Path(folder).resolve()
    stamp = tuple(sorted((p.parent.name, p.stat().st_mtime_ns) for p in folder.glob(f"*/{CONFIG_NAME}"))) \
        if folder.is_dir() else ()
    key = (str(folder), stamp, getattr(encoder, "identity", id(encoder)))
    if key not in _SETS:
        _SETS[key] = PreferenceSet.from_pretrained(folder, encoder)
    return _SETS[key]


def row_rewards(specs: Sequence[Any], pools: Sequence[Any], rows: Any, encoder: Any) -> list[torch.Tensor | None]:
    """(K,) reward of each reward-mbr row's pool (None elsewhere): the row's own facet set (`spec.preference_models`)
    and facet weights (`rows.facet_weights[i]`, else retrieved from the persona text of `rows.profiles[i]`,
    else uniform)."""
    out: list[torch.Tensor | None] = [None] * len(specs)
    past = rows.user_outputs if rows.user_outputs is not None else [[] for _ in specs]
    for i, (spec, pool) in enumerate(zip(specs, pools)):
        if pool is None or spec.name != "reward-mbr":
            continue
        prefs = load_set(spec.preference_models, encoder)
        given = rows.facet_weights[i] if rows.facet_weights is not None else None
        if given is None:
            profile = rows.profiles[i] if rows.profiles is not None else []
            given = prefs.weights([prefs.persona_text(profile) if profile else ""])[0]
        user = summarise_user(encoder, past[i])
        out[i] = prefs.reward(pool.texts, user, given) if user is not None else None
    return out


__all__ = ["DESCRIPTIONS", "FACETS", "FacetConfig", "FacetModel", "PreferenceModelError", "PreferenceSet",
           "UserSummary", "embed_candidates", "facet_features", "load_set", "row_rewards", "summarise_user",
           "surface"]
