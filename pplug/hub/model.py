"""LoRAHub: K peft LoRA adapters on one frozen LLM, retrieved per user from their persona text.

    persona text --HistoryEncoder--> e_u --cosine--> description embeddings (K, D) --top-k, softmax(s / T)--> weights
    one user:  the retrieved adapters merged into one (`add_weighted_adapter`, "cat" or "linear")   `hub.merge`
    a batch:   one adapter name per row, every row through its own adapter in one forward pass      `hub.rows`

Each adapter was trained on a group of users with a shared trait (`pplug.hub.train`) and carries a
description text (the persona text of the group's most central user) and its embedding by the frozen sentence
encoder. A user with no history (an empty persona text) gets the hub's general adapter, trained on everyone.
Fast adaptation needs no training: new history -> a new persona text -> other retrieved adapters.

    HUB/hub.json                    config, adapter names and descriptions, base-LLM and encoder identity
    HUB/descriptions.safetensors    the description embeddings (K, D), in hub.json's adapter order
    HUB/adapters/<name>/            one peft adapter folder each: adapter_config.json + adapter_model.safetensors

`LoRAHub.from_pretrained(HUB, llm)` rebuilds the hub from that folder alone. A hub attaches to the FrozenLLM it
is given: peft puts its LoRA layers into `llm.model`, and plain calls on the LLM run through the hub's active
adapter (the general one unless `hub.use` says otherwise).

A second hub can be loaded beside a first on the same LLM (`from_pretrained(..., attach_to=first)`, what a server
does with a newly promoted hub version): its adapters join the same peft model under peft names of their own
(`peft_name`), the hubs' own names stay as saved, and `first.unload()` then removes the first hub's adapters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from pplug.core.io import atomic_write_json, publish_folder
from pplug.version import __version__

from .config import (
    ADAPTER_WEIGHTS_NAME,
    ADAPTERS_DIR,
    BASE,
    DESCRIPTIONS_NAME,
    FORMAT_VERSION,
    GENERAL,
    HUB_CONFIG_NAME,
    MIX_PREFIX,
    PLUGIN_NAME,
    HubError,
    LoRAHubConfig,
    Retrieval,
    check_name,
)
from .files import check_adapter_folder, check_encoder, read_descriptions, read_hub_json
from .plugin import HubPlugin
from .retrieval import rank_adapters


class LoRAHub(HubPlugin):
    """K named LoRA adapters plus a general one on a frozen LLM, with a description embedding each.

    Args:
        llm: the `FrozenLLM` the adapters attach to (its `model` gets peft's LoRA layers).
        config: the hub's `LoRAHubConfig`.
        descriptions: adapter name -> description text, in retrieval order (the general adapter not included).
        encoder: the frozen sentence encoder (`HistoryEncoder`) of descriptions and persona texts.
        general_description: the general adapter's description (shown, never retrieved).

    Builds fresh adapters (peft's initialisation: B = 0, so each starts as the frozen LLM itself);
    `LoRAHub.from_pretrained` loads trained ones. Shapes: `description_embeddings` (K, encoder dim).
    """

    def __init__(self, llm: Any, config: LoRAHubConfig, descriptions: dict[str, str], encoder: Any,
                 general_description: str = "all users", *, _load_from: Path | None = None,
                 _embeddings: torch.Tensor | None = None, _attach_to: LoRAHub | None = None) -> None:
        from peft import PeftModel, get_peft_model
        from peft.tuners.lora import LoraLayer

        if not descriptions:
            raise ValueError("a LoRA hub needs at least one adapter besides the general one")
        for name in descriptions:
            if check_name(name) == GENERAL:
                raise ValueError(f"adapter name {GENERAL!r} is the general adapter's")
        self.llm, self.config, self.encoder = llm, config, encoder
        self.names = list(descriptions)
        self.descriptions = {GENERAL: general_description, **descriptions}
        self.folder: Path | None = _load_from
        """The folder the hub was loaded from (None: built in memory)."""
        self._prefix = ""
        if _attach_to is not None:  # beside another hub on the same LLM: adapters under peft names of their own
            if _load_from is None or _attach_to.llm is not llm:
                raise ValueError("attach_to: a saved hub, loaded on the LLM the other hub is on")
            taken, gen = set(_attach_to.peft.peft_config), _attach_to._generation
            while True:
                gen += 1
                self._prefix = f"g{gen}-"
                if not any(self.peft_name(n) in taken for n in self.adapter_names):
                    break
            self._generation = gen
        elif any(isinstance(m, LoraLayer) for m in llm.model.modules()):
            raise ValueError("this LLM already carries LoRA layers (another hub?): load a fresh FrozenLLM")
        else:
            self._generation = 0
        with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
            if _load_from is None:
                lora = config.lora_config(llm.is_seq2seq)
                self.peft = get_peft_model(llm.model, lora, adapter_name=GENERAL)
                for name in self.names:
                    self.peft.add_adapter(name, lora)
            else:
                folders = {n: _load_from / ADAPTERS_DIR / n for n in self.adapter_names}
                if _attach_to is None:
                    self.peft = PeftModel.from_pretrained(llm.model, str(folders[GENERAL]), adapter_name=GENERAL)
                    rest = self.names
                else:
                    self.peft, rest = _attach_to.peft, self.adapter_names
                try:
                    for name in rest:
                        self.peft.load_adapter(str(folders[name]), adapter_name=self.peft_name(name))
                except BaseException:
                    if _attach_to is not None:  # the other hub stays as it was: none of this one's adapters
                        for name in self.adapter_names:
                            if self.peft_name(name) in self.peft.peft_config:
                                self.peft.delete_adapter(self.peft_name(name))
                        _attach_to.freeze()
                    raise
        self.peft.set_adapter(self.peft_name(GENERAL))
        self.freeze()
        self.description_embeddings = (_embeddings if _embeddings is not None
                                       else encoder.encode([descriptions[n] for n in self.names]).float())  # (K, D)
        self._mixes: OrderedDict[tuple, str] = OrderedDict()
        llm.__dict__.setdefault("plugins", {})[PLUGIN_NAME] = self  # the latest hub loaded is the one methods use

    # --- adapters ---

    @property
    def adapter_names(self) -> list[str]:
        """Every adapter of the hub: the general one first, then the K retrievable ones."""
        return [GENERAL, *self.names]

    def peft_name(self, name: str) -> str:
        """peft's name of the hub's adapter `name`: the name itself, or prefixed for a hub loaded beside another
        one (`attach_to`); "__base__" stays itself."""
        return name if name == BASE else self._prefix + name

    def unload(self) -> None:
        """Remove every adapter of this hub (and its merges) from the LLM; the hub is unusable afterwards.
        Another hub attached to the same LLM keeps its adapters and stays active."""
        for name in [*self._mixes.values(), *self.adapter_names]:
            if self.peft_name(name) in self.peft.peft_config:
                self.peft.delete_adapter(self.peft_name(name))
        self._mixes.clear()
        self.freeze()
        if getattr(self.llm, "plugins", {}).get(PLUGIN_NAME) is self:
            del self.llm.plugins[PLUGIN_NAME]

    def freeze(self) -> None:
        """No LoRA weight requires a gradient (training unfreezes one adapter at a time)."""
        for name, p in self.llm.model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)

    def check_adapter(self, name: str) -> str:
        """`name` if the hub (or a merge it made) has that adapter, else HubError listing the hub's adapters."""
        if name == BASE or self.peft_name(name) in self.peft.peft_config:
            return name
        raise HubError(f"unknown adapter {name!r}; this hub has: {', '.join(self.adapter_names)}")

    def set_description(self, name: str, text: str) -> None:
        """Set an adapter's description text and re-embed it."""
        if name not in self.adapter_names:
            raise HubError(f"unknown adapter {name!r}; this hub has: {', '.join(self.adapter_names)}")
        self.descriptions[name] = text
        if name != GENERAL:
            self.description_embeddings[self.names.index(name)] = self.encoder.encode([text])[0].float()

    # --- retrieval ---

    def persona_text(self, profile: Sequence[dict]) -> str:
        """The persona text a user's history tells (`LoRAHubConfig.persona_text`)."""
        return self.config.persona_text(profile)

    def retrieve(self, persona_texts: Sequence[str | None], top_k: int | None = None,
                 temperature: float | None = None) -> list[Retrieval]:
        """Top-k adapters per persona text by cosine similarity to the descriptions, softmax-weighted.

        An empty or missing persona text (a cold-start user) gets the general adapter with weight 1. Persona
        texts are embedded without the embedding cache (`rank_adapters`).
        """
        return rank_adapters(self.encoder, self.names, self.description_embeddings, persona_texts,
                             top_k or self.config.top_k, temperature or self.config.temperature)

    def retrieve_for_histories(self, profiles: Sequence[Sequence[dict]]) -> list[Retrieval]:
        """`retrieve` on the persona text of each user's history (profile items)."""
        return self.retrieve([self.persona_text(p) for p in profiles])

    # --- merging ---

    def merge(self, retrieval: Retrieval) -> str:
        """The name of one adapter that applies `retrieval`: the adapter itself when one was retrieved, else a
        weighted merge (`add_weighted_adapter`, `config.combination_type`), made once and kept (LRU)."""
        for name in retrieval.adapters:
            if name != BASE:
                self.check_adapter(name)
        if len(retrieval.adapters) == 1:
            return retrieval.adapters[0]
        key = (tuple(retrieval.adapters), tuple(round(w, 6) for w in retrieval.weights))
        if key in self._mixes:
            self._mixes.move_to_end(key)
            return self._mixes[key]
        name = MIX_PREFIX + hashlib.sha256(repr(key).encode()).hexdigest()[:12]
        self.peft.add_weighted_adapter([self.peft_name(n) for n in key[0]], list(key[1]), self.peft_name(name),
                                       combination_type=self.config.combination_type)
        self.freeze()
        self._mixes[key] = name
        while len(self._mixes) > self.config.max_mixes:
            _, old = self._mixes.popitem(last=False)
            self._delete(old)
        return name

    def _delete(self, name: str) -> None:
        active = self.peft.active_adapter
        self.peft.delete_adapter(self.peft_name(name))
        if active == self.peft_name(name):
            self.peft.set_adapter(self.peft_name(GENERAL))
        self.freeze()

    def forget_mixes(self) -> None:
        """Drop every merged adapter (after training changed the adapters they were merged from)."""
        for name in list(self._mixes.values()):
            self._delete(name)
        self._mixes.clear()

    def adapters_for(self, retrievals: Sequence[Retrieval]) -> list[str]:
        """One adapter name per row (`merge` of each row's retrieval), for `rows`."""
        names = [self.merge(r) for r in retrievals]
        missing = [n for n in names if n != BASE and self.peft_name(n) not in self.peft.peft_config]
        if missing:  # a batch retrieving more distinct sets than max_mixes evicted some of its own
            raise HubError(f"a batch needs {len(set(names))} distinct merged adapters but max_mixes is "
                           f"{self.config.max_mixes}: raise it or use smaller batches")
        return names

    # --- running ---

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Every call on the LLM inside runs through adapter `name` ("__base__": no adapter)."""
        self.check_adapter(name)
        previous = self.peft.active_adapter
        if name == BASE:
            with self.peft.disable_adapter():
                yield
            return
        self.peft.set_adapter(self.peft_name(name))
        self.freeze()
        try:
            yield
        finally:
            self.peft.set_adapter(previous)
            self.freeze()

    @contextlib.contextmanager
    def rows(self, adapter_names: Sequence[str]) -> Iterator[None]:
        """Every forward pass of the LLM inside runs row i through adapter `adapter_names[i]` (peft's
        mixed-adapter batches: `adapter_names=` on each LoRA layer).

        Why hooks of our own rather than peft's `generate(adapter_names=...)`: `FrozenLLM` calls the model with
        more rows than it was given in places (beam search, one row per choice for multi-token labels), always
        by `repeat_interleave`, so each layer gets the names repeated to its own batch size.
        """
        from peft.tuners.lora import LoraLayer

        names = [self.peft_name(self.check_adapter(n)) for n in adapter_names]
        if not names:
            raise ValueError("rows: no adapter names")

        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            n = x.shape[0]
            if n % len(names):
                raise ValueError(f"rows: a layer got {n} rows for {len(names)} adapter names (not a multiple)")
            kwargs["adapter_names"] = [a for a in names for _ in range(n // len(names))]
            return args, kwargs

        handles = [m.register_forward_pre_hook(hook, with_kwargs=True)
                   for m in self.llm.model.modules() if isinstance(m, LoraLayer)]
        self.llm.rows_share_prompts = False  # a prompt's keys differ per adapter: no row reads another's prefill
        try:
            yield
        finally:
            self.llm.rows_share_prompts = True
            for h in handles:
                h.remove()

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str], adapter_names: Sequence[str],
                        prefix: torch.Tensor | None = None) -> torch.Tensor:
        """`FrozenLLM.choice_logprobs` with row i through adapter `adapter_names[i]`: (B, C) log-probabilities."""
        with self.rows(adapter_names):
            return self.llm.choice_logprobs(prefix, prompts, choices)

    def generate(self, prompts: Sequence[str], adapter_names: Sequence[str], prefix: torch.Tensor | None = None,
                 **kwargs: Any) -> list[str]:
        """`FrozenLLM.generate` with row i through adapter `adapter_names[i]`."""
        with self.rows(adapter_names):
            return self.llm.generate(prefix, prompts, **kwargs)

    # --- saving and loading ---

    def metadata(self) -> dict[str, Any]:
        """hub.json without the training record."""
        return {
            "format_version": FORMAT_VERSION,
            "pplug_version": __version__,
            "config": self.config.to_dict(),
            "adapters": [{"name": n, "description": self.descriptions[n]} for n in self.names],
            "general": {"name": GENERAL, "description": self.descriptions[GENERAL]},
            "base_model": self.llm.identity(),
            "encoder": {"identity": self.encoder.identity, "dim": self.encoder.dim},
        }

    def save_pretrained(self, out_dir: str | os.PathLike, training: dict | None = None) -> Path:
        """Write the hub folder (see the module docstring). `training`: a record kept in hub.json as is.

        Everything is written into a temporary sibling folder first; a new folder is then moved into place in
        one step. An existing hub is updated adapter by adapter, hub.json last, so it never names a missing file.
        """
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            for name in self.adapter_names:
                folder = tmp / ADAPTERS_DIR / name
                folder.mkdir(parents=True)
                self.peft.peft_config[self.peft_name(name)].save_pretrained(str(folder))
                state = get_peft_model_state_dict(self.peft, adapter_name=self.peft_name(name))
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                          str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
            save_file({"description_embeddings": self.description_embeddings.cpu().contiguous()},
                      str(tmp / DESCRIPTIONS_NAME), metadata={"format": "pt"})
            doc = {**self.metadata(), **({"training": training} if training is not None else {})}
            (tmp / HUB_CONFIG_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if publish_folder(tmp, out):
                return out
            (out / ADAPTERS_DIR).mkdir(exist_ok=True)
            for name in self.adapter_names:
                dest = out / ADAPTERS_DIR / name
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(tmp / ADAPTERS_DIR / name, dest)
            os.replace(tmp / DESCRIPTIONS_NAME, out / DESCRIPTIONS_NAME)
            atomic_write_json(out / HUB_CONFIG_NAME, doc)
            for stale in (out / ADAPTERS_DIR).iterdir():
                if stale.is_dir() and stale.name not in self.adapter_names:
                    shutil.rmtree(stale)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @classmethod
    def from_pretrained(cls, hub_dir: str | os.PathLike, llm: Any, encoder: Any = None,
                        cache_path: Any = None, attach_to: LoRAHub | None = None) -> LoRAHub:
        """Rebuild a saved hub on `llm` (a fresh `FrozenLLM` of the base model it was trained on).

        Args:
            hub_dir: the folder `save_pretrained` wrote, or a hub run folder (its serving version, LATEST).
            llm: the frozen LLM; another model than the hub's (type, sizes, embedding weights) is refused.
            encoder: the sentence encoder to reuse (it must be the hub's); None loads `config.encoder_name_or_path`.
            cache_path: embedding cache of an encoder loaded here.
            attach_to: a hub already on `llm`: this one loads beside it (its own peft names), and `attach_to`
                keeps serving as it was whether this load succeeds or fails (then `attach_to.unload()` drops it).

        Raises:
            HubError: one line naming the file or field at fault (every file is checked before the LLM is touched).
        """
        from pplug.encode.history import HistoryEncoder

        from .files import resolve_hub

        hub_dir = resolve_hub(hub_dir)
        doc = read_hub_json(hub_dir)
        path = hub_dir / HUB_CONFIG_NAME
        want, got = doc["base_model"], llm.identity()
        diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
        if diff:
            raise HubError(f"{path}: field 'base_model': made for base LLM "
                           f"{doc['config'].base_model_name_or_path!r} but the given LLM differs: "
                           + ", ".join(f"{k} saved={a!r} given={b!r}" for k, (a, b) in diff.items()))
        config: LoRAHubConfig = doc["config"]
        encoder = encoder or HistoryEncoder(config.encoder_name_or_path, cache_path=cache_path, device="cpu")
        check_encoder(doc, encoder, path)
        names = [a["name"] for a in doc["adapters"]]
        for name in [GENERAL, *names]:
            check_adapter_folder(hub_dir / ADAPTERS_DIR / name)
        emb = read_descriptions(hub_dir / DESCRIPTIONS_NAME, len(names), encoder.dim)
        try:
            return cls(llm, config, {a["name"]: a["description"] for a in doc["adapters"]}, encoder,
                       doc["general"].get("description", ""), _load_from=hub_dir, _embeddings=emb,
                       _attach_to=attach_to)
        except (RuntimeError, KeyError, ValueError) as e:  # weights that do not fit this model's layers
            raise HubError(f"{hub_dir / ADAPTERS_DIR}: adapter weights do not fit the LLM "
                           f"({' '.join(str(e).split())[:200]})") from None


__all__ = ["BASE", "GENERAL", "HubError", "LoRAHub", "LoRAHubConfig", "Retrieval"]
