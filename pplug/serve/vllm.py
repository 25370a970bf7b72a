"""`pplug serve --engine vllm`: generation on vLLM, everything else as with `--engine hf`.

What runs where:

- the users' soft prompts (B, P, D): the checkpoint's embedder, in torch, exactly as with `--engine hf`;
- each row's `[prefix; Emb(prompt)]`: `FrozenLLM.prompt_embeds`, the same prefix rules as `build_inputs`
  (prefix cast to the embedding dtype, middle truncation, BOS for an empty prompt), one (P + L, D) tensor
  per row without padding;
- generation (generation tasks): a vLLM `LLM` loaded from the same base model folder with
  `enable_prompt_embeds=True`, one `{"prompt_embeds": tensor}` per row, greedy (temperature 0), stopping at
  the tokenizer's EOS as HF `generate` does, and decoded with the same tokenizer;
- scoring (label tasks: ratings, tags, categories): the HF model (`FrozenLLM.choice_logprobs`), as with
  `--engine hf`. vLLM is loaded but never asked: a rating request is scored on the HF model.

The HF copy of the base model stays loaded next to vLLM's: its token embeddings build the rows and it scores
labels. vLLM is imported only here, and only when `--engine vllm` is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

INSTALL_HINT = "pip install pplug[vllm]"


class VLLMUnavailable(ValueError):
    """`--engine vllm` cannot run here (vLLM missing, or a base model vLLM cannot load); one line saying why."""


def require_vllm() -> Any:
    """The imported `vllm` module, or VLLMUnavailable with the install command."""
    try:
        import vllm
    except ImportError as e:  # also a broken install: the reason is in the message
        raise VLLMUnavailable(f"--engine vllm needs vLLM, which cannot be imported here ({e}): "
                              f"{INSTALL_HINT}") from None
    return vllm


def model_folder(llm: Any) -> str:
    """The folder vLLM loads the base model from: the one the served FrozenLLM was loaded from.

    vLLM reads weights from disk, so an LLM built in memory (e.g. a tiny random model passed as `model=`)
    cannot be served; the folder's config must describe the served model (same type, width and vocabulary),
    else vLLM would run other weights than the ones the soft prompts were trained for.
    """
    from pplug.core.weights import resolve_llm

    if llm.is_seq2seq:
        raise VLLMUnavailable("--engine vllm serves causal LLMs only (vLLM takes prompt embeddings for decoder-only "
                              "models); serve this seq2seq checkpoint with --engine hf")
    try:
        path = Path(resolve_llm(llm.name_or_path))
    except (RuntimeError, OSError) as e:  # "default" without its package: say so in the same one line
        raise VLLMUnavailable(f"--engine vllm: cannot find the folder of the base LLM {llm.name_or_path!r}: "
                              f"{e}") from None
    config = path / "config.json"
    if not config.is_file():
        raise VLLMUnavailable(f"--engine vllm: the base LLM {llm.name_or_path!r} is not a model folder on disk "
                              f"({config} missing); vLLM loads weights from a folder: save the LLM with "
                              f"save_pretrained and serve a checkpoint that names that folder")
    cfg = json.loads(config.read_text())
    cfg = {**cfg.get("text_config", {}), **cfg}
    want = {"model_type": str(llm.model.config.model_type), "hidden_size": llm.token_dim, "vocab_size": llm.vocab_size}
    got = {k: cfg.get(k) for k in want}
    if got != want:
        raise VLLMUnavailable(f"--engine vllm: {path} holds another model ({got}) than the served LLM ({want}), "
                              f"which was not loaded from a folder vLLM can read; save it with save_pretrained first")
    return str(path)


def sampling_params(max_tokens: int, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                    stop: list[str] | None = None, eos_id: int | None = None) -> Any:
    """vLLM `SamplingParams` for a generation request: temperature 0 is greedy; `stop` strings end a sequence
    (their text is dropped, as vLLM does); `eos_id` stops at that token, as HF `generate(eos_token_id=...)`."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                          seed=seed, stop=list(stop or []) or None,
                          stop_token_ids=[int(eos_id)] if eos_id is not None else None,
                          detokenize=bool(stop))  # texts are decoded with pplug's tokenizer, see generate


class VLLMGenerator:
    """Greedy generation from `[prefix; Emb(prompt)]` rows on a vLLM engine holding the FrozenLLM's weights.

    Args:
        llm: the served FrozenLLM (causal; loaded from a folder, see `model_folder`).
        gpu_memory_utilization: share of the GPU's memory vLLM takes for weights and KV cache (the HF copy and
            the encoders live in the rest); ignored by vLLM's CPU build (its KV cache size is
            $VLLM_CPU_KVCACHE_SPACE GiB).
        engine_args: more `vllm.LLM` arguments (e.g. `enforce_eager=True`, `max_model_len=...`).
    """

    def __init__(self, llm: Any, gpu_memory_utilization: float = 0.5, **engine_args: Any):
        vllm = require_vllm()
        self.llm = llm
        self.path = model_folder(llm)
        self.version = str(getattr(vllm, "__version__", "unknown"))
        dtype = str(llm.dtype).removeprefix("torch.")
        args = dict(model=self.path, tokenizer=self.path, dtype=dtype, enable_prompt_embeds=True, seed=0,
                    gpu_memory_utilization=gpu_memory_utilization,
                    generation_config="vllm")  # no sampling defaults or extra stop ids from the model folder
        args.update(engine_args)
        try:
            self.engine = vllm.LLM(**args)
        except Exception as e:  # noqa: BLE001 - any load failure becomes the one line `pplug serve` prints
            raise VLLMUnavailable(f"--engine vllm: vLLM {self.version} cannot load {self.path}: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def generate(self, prefix: torch.Tensor | None, prompts: list[str], max_new_tokens: int = 32,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 stop: list[str] | None = None, position: str = "prefix") -> list[str]:
        """Continuations of [prefix; prompt] ([prompt; prefix] with `position` "after_prompt") (special tokens
        dropped, whitespace stripped, as `FrozenLLM.generate`).

        The default settings are greedy; `pplug serve` always asks for them (its outputs are deterministic).
        """
        rows = self.llm.prompt_embeds(prefix, prompts, position)
        params = sampling_params(max_new_tokens, temperature, top_p, seed, stop, eos_id=self.llm.eos_id)
        outs = self.engine.generate([{"prompt_embeds": r.detach().cpu()} for r in rows], params, use_tqdm=False)
        tok = self.llm.tokenizer
        # the same decode as the HF path (batch_decode with skip_special_tokens), so equal tokens give equal text
        return [(o.outputs[0].text if stop else tok.decode(list(o.outputs[0].token_ids), skip_special_tokens=True))
                .strip() for o in outs]

    def close(self) -> None:
        """Stop vLLM's engine process now (else it is killed, noisily, at interpreter exit)."""
        core = getattr(getattr(self.engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def attach(engine: Any, gpu_memory_utilization: float = 0.5, **engine_args: Any) -> VLLMGenerator:
    """Load vLLM for a `pplug.serve.batching.Engine` and route its generation through it (scoring stays on HF)."""
    if getattr(engine, "plugin", None) is not None:
        name = engine.plugin_snapshot.name
        raise VLLMUnavailable(f"--engine vllm does not run method plug-ins (--{name}); serve them with --engine hf")
    gen = VLLMGenerator(engine.snapshot.model.llm, gpu_memory_utilization=gpu_memory_utilization, **engine_args)
    engine.generator = gen
    engine.engine_info = {"name": "vllm", "generation": "vllm", "scoring": "hf", "vllm": gen.version}
    return gen


__all__ = ["INSTALL_HINT", "VLLMGenerator", "VLLMUnavailable", "attach", "model_folder", "require_vllm",
           "sampling_params"]
