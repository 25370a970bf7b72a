"""The LoRA hub's config and names (`pplug.hub.model`): `LoRAHubConfig`, the folder's file names, `HubError`."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pplug.core.checkpoints import CheckpointError

HUB_CONFIG_NAME = "hub.json"
DESCRIPTIONS_NAME = "descriptions.safetensors"
ADAPTERS_DIR = "adapters"
ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft's names
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
GENERAL = "general"
PLUGIN_NAME = "hub"
"""The hub's name among method plug-ins (`pplug.methods.registry`) and its command line option, `--hub DIR`."""
BASE = "__base__"
"""peft's name for "no adapter" in a mixed batch: the row runs through the frozen LLM alone."""
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIX_PREFIX = "mix-"


class HubError(CheckpointError):
    """A hub folder is missing, corrupt or made for another LLM, or an adapter name is unknown (one line)."""


@dataclass
class LoRAHubConfig:
    """What rebuilds a LoRA hub around its frozen LLM (saved as `config` in hub.json)."""

    task: str = "LaMP_3"
    """The LaMP task whose history the persona texts are derived from (`pplug.persona.from_history`)."""
    base_model_name_or_path: str = "default"
    """The frozen LLM the adapters were trained on (identity checked on load, like a PPlug checkpoint)."""
    encoder_name_or_path: str = "default"
    """The frozen sentence encoder of descriptions and persona texts (`pplug.encode.history.HistoryEncoder`)."""
    r: int = 8
    """LoRA rank of every adapter."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by lora_alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input while training (the frozen LLM itself never drops out)."""
    target_modules: list[str] | None = None
    """Module names that get LoRA layers; None: peft's default for the model type (q_proj/v_proj for Llama)."""
    top_k: int = 2
    """Adapters retrieved per user (the general adapter is not a candidate: it serves cold start)."""
    temperature: float = 0.1
    """Softmax temperature over the top-k cosine similarities: small values give the best match most weight."""
    combination_type: Literal["cat", "linear"] = "cat"
    """How `merge` combines retrieved adapters (peft `add_weighted_adapter`): "cat" stacks them (rank = sum of
    ranks), so the merged update is exactly sum_i w_i * B_i A_i; "linear" keeps rank r by mixing A and B
    separately with sqrt(w_i) each, which adds cross terms B_i A_j."""
    max_history: int | None = None
    """Most recent history items a persona text is derived from (None: all)."""
    persona_max_chars: int = 400
    """Length limit of a rendered persona text."""
    max_mixes: int = 64
    """Merged adapters kept at once (least recently used dropped first); each holds k * r ranks with "cat"."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.lora_alpha <= 0:
            raise ValueError(f"r must be >= 1 and lora_alpha > 0, got r={self.r}, lora_alpha={self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.top_k < 1 or self.temperature <= 0 or self.max_mixes < 1:
            raise ValueError(f"top_k and max_mixes must be >= 1 and temperature > 0, got top_k={self.top_k}, "
                             f"temperature={self.temperature}, max_mixes={self.max_mixes}")
        if self.combination_type not in ("cat", "linear"):
            raise ValueError(f"combination_type must be 'cat' or 'linear', got {self.combination_type!r}")
        from pplug.core.tasks import get_task

        get_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "config") -> LoRAHubConfig:
        """The config from a dict; unknown keys and invalid values raise ValueError naming `where`."""
        unknown = sorted(set(doc) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}")
        try:
            return cls(**doc)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def persona_text(self, profile: Any) -> str:
        """The persona text a user's history (profile items) tells; empty for a user with no history."""
        from pplug.core.tasks import get_task
        from pplug.persona.from_history import history_persona_text

        items = list(profile)[-self.max_history:] if self.max_history else list(profile)
        return history_persona_text(items, get_task(self.task), max_chars=self.persona_max_chars)

    def lora_config(self, is_seq2seq: bool):
        """The peft `LoraConfig` of every adapter."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.target_modules) if self.target_modules else None,
                          task_type="SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM")


@dataclass
class Retrieval:
    """The adapters retrieved for one user, best first, with their softmax weights and cosine scores."""

    adapters: list[str]
    weights: list[float]
    scores: list[float] = field(default_factory=list)

    @property
    def cold_start(self) -> bool:
        return self.adapters == [GENERAL] and not self.scores


def check_name(name: str) -> str:
    """An adapter name usable as a folder name and distinct from peft's "__base__" and merged adapters."""
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith(MIX_PREFIX):
        raise ValueError(f"adapter name {name!r}: use letters, digits, '_', '.', '-' (not starting with "
                         f"'{MIX_PREFIX}'), at most 64 characters")
    return name


__all__ = ["BASE", "GENERAL", "PLUGIN_NAME", "HubError", "LoRAHubConfig", "Retrieval", "check_name"]
