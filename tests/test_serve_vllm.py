"""`pplug serve --engine vllm` (`pplug.serve.vllm`).

Without vLLM: the rows handed to vLLM are exactly the rows `FrozenLLM.build_inputs` builds, the CLI takes
`--engine`, a missing vLLM is a one-line error before anything loads, a model vLLM cannot read is refused,
and the engine routes generation (not scoring) through the generator it is given.

With vLLM (skipped otherwise): on the shipped default model, `--engine vllm` and `--engine hf` give the
same greedy outputs, for raw continuations and through the HTTP server.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch

PROMPTS = [
    "Paraphrase the following tweet without any explanation before or after it: good morning everyone, the sun is out",
    "Generate a headline for the following article: the city council voted on a new budget for schools",
    "",  # an empty prompt: the BOS rule
]


def _prefix(llm, rows: int, length: int = 4, seed: int = 0) -> torch.Tensor:
    """A random soft prompt at the token-embedding scale (what an untrained embedder gives)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, length, llm.token_dim, generator=g) * (llm.token_norm / llm.token_dim ** 0.5)


@pytest.fixture(scope="module")
def tiny_llm(tiny_causal_llm_dir):
    from pplug.modeling.llm import FrozenLLM

    return FrozenLLM(str(tiny_causal_llm_dir), dtype="float32", device="cpu", max_input_tokens=12)


def test_prompt_embeds_are_the_rows_build_inputs_builds(tiny_llm):
    prompts = [PROMPTS[0], "is the score", ""]  # truncated, short, empty
    prefix = _prefix(tiny_llm, len(prompts))
    rows = tiny_llm.prompt_embeds(prefix, prompts)
    batch = tiny_llm.build_inputs(prefix, prompts)
    gen = tiny_llm._generation_inputs(tiny_llm._check_prefix(prefix, len(prompts)), tiny_llm.prompt_ids(prompts))
    for i, row in enumerate(rows):
        n = int(batch["attention_mask"][i].sum())
        assert row.shape == (n, tiny_llm.token_dim)  # no padding
        assert torch.equal(row, batch["inputs_embeds"][i, :n])
        assert torch.equal(row, gen["inputs_embeds"][i][gen["attention_mask"][i].bool()])  # HF generate's rows
        assert torch.equal(row[:4], prefix[i])
    assert rows[0].shape[0] == 4 + 12 and rows[2].shape[0] == 4 + 1  # middle cut; BOS for the empty prompt
    no_prefix = tiny_llm.prompt_embeds(None, prompts)
    assert all(torch.equal(a, b[4:]) for a, b in zip(no_prefix, rows))


def test_cli_accepts_engine():
    from pplug.cli.main import build_parser

    parse = build_parser().parse_args
    assert parse(["serve", "--checkpoint", "run"]).engine == "hf"
    assert parse(["serve", "--checkpoint", "run", "--engine", "vllm"]).engine == "vllm"
    with pytest.raises(SystemExit):
        parse(["serve", "--checkpoint", "run", "--engine", "tgi"])


def test_engine_vllm_without_vllm_is_one_line_error(monkeypatch, tmp_path, capsys):
    from pplug.cli.main import main

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    store = tmp_path / "store.sqlite"
    rc = main(["serve", "--checkpoint", str(tmp_path / "no-such-run"), "--engine", "vllm", "--admin-key", "k",
                   "--store", str(store)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0, err
    assert err.startswith("pplug serve: error: --engine vllm needs vLLM") and err.endswith("pip install pplug[vllm]")
    assert not store.exists()  # refused before the store or the checkpoint is touched


def test_a_model_vllm_cannot_load_is_refused(tiny_causal_llm_dir, tiny_seq2seq_llm_dir, tiny_llm):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pplug.modeling.llm import FrozenLLM
    from pplug.serve.vllm import VLLMUnavailable, model_folder

    assert model_folder(tiny_llm) == str(tiny_causal_llm_dir)
    tok = AutoTokenizer.from_pretrained(tiny_causal_llm_dir)
    cfg = LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=len(tok))
    in_memory = FrozenLLM("tiny-random", model=LlamaForCausalLM(cfg), tokenizer=tok, device="cpu")
    with pytest.raises(VLLMUnavailable, match="not a model folder on disk"):
        model_folder(in_memory)
    in_memory.name_or_path = str(tiny_causal_llm_dir)  # a folder, but of other weights
    with pytest.raises(VLLMUnavailable, match="another model"):
        model_folder(in_memory)
    with pytest.raises(VLLMUnavailable, match="causal LLMs only"):
        model_folder(FrozenLLM(str(tiny_seq2seq_llm_dir), dtype="float32", device="cpu"))


def test_engine_vllm_refuses_a_lora_hub():
    from types import SimpleNamespace

    from pplug.serve.vllm import VLLMUnavailable, attach

    engine = SimpleNamespace(plugin=object(), plugin_snapshot=SimpleNamespace(name="hub"), generator=None)
    with pytest.raises(VLLMUnavailable, match="--hub"):
        attach(engine)
    assert engine.generator is None


class _RecordingGenerator:
    """Stands in for VLLMGenerator: records what it is asked and answers with HF greedy generation."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def generate(self, prefix, prompts, max_new_tokens=32, position="prefix"):
        self.calls.append((prefix.clone(), list(prompts), max_new_tokens))
        return self.llm.generate(prefix, prompts, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("task", ["LaMP_7", "LaMP_3"])
def test_engine_generates_through_its_generator_and_scores_on_hf(tiny_config, tmp_path, task):
    from pplug.modeling.model import PPlugModel
    from pplug.serve.batching import Engine
    from pplug.store import open_store

    run = tmp_path / "run"
    PPlugModel.from_config(dataclasses.replace(tiny_config, task=task, max_history=4),
                           cache_path=":memory:").save_pretrained(run / "final")
    engine = Engine(run, open_store(tmp_path / "store.sqlite"), device="cpu", embedding_cache=tmp_path / "emb.sqlite")
    assert engine.generator is None and engine.engine_info["generation"] == "hf"
    rows = [engine.prepare(x, engine.cold_context(), 6) for x in ("the movie was great", "one star, boring")]
    hf = engine.run_batch(rows)
    engine.generator = stub = _RecordingGenerator(engine.snapshot.model.llm)
    routed = engine.run_batch(rows)
    assert [o["text"] for o in routed] == [o["text"] for o in hf]
    if task == "LaMP_3":  # ratings are scored on the HF model: the generator is never asked
        assert stub.calls == [] and routed[0]["label_probs"] == hf[0]["label_probs"]
    else:
        (prefix, prompts, budget), = stub.calls
        assert prompts == [r.prompt for r in rows] and budget == 6 and prefix.shape[0] == 2


# --- parity with vLLM (needs vLLM and a device it runs on) ---


def _vllm_platform_reason() -> str | None:
    try:
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001 - a broken install skips too, saying why
        return f"vLLM does not import ({type(e).__name__}: {e})"
    return "vLLM found no supported device (CUDA, ROCm, CPU build, ...)" if current_platform.is_unspecified() else None


@pytest.fixture(scope="module")
def vllm_app(tmp_path_factory, tiny_encoder_dir):
    """A `pplug serve --engine vllm` app on the shipped default LLM (float32, an untrained embedder, LaMP_7)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install pplug[vllm])")
    reason = _vllm_platform_reason()
    if reason:
        pytest.skip(reason)
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel
    from pplug.serve.app import create_app

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU build's default takes more than needed
    root = tmp_path_factory.mktemp("serve_vllm")
    cfg = PPlugConfig(base_model_name_or_path="default", encoder_name_or_path=str(tiny_encoder_dir), task="LaMP_7",
                      max_history=8, max_input_tokens=96, max_encoder_tokens=64, torch_dtype="float32")
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "run" / "final")
    from vllm.platforms import current_platform

    app = create_app(root / "run", root / "store.sqlite", admin_key="admin", max_batch=8, window_ms=50,
                     model_name="pplug-run", embedding_cache=root / "emb.sqlite",
                     vllm_args={"max_model_len": 1024, "enforce_eager": current_platform.is_cpu()},
                     llm_engine="vllm")
    yield app
    app.state.engine.generator.close()


def test_sampling_params_map_the_request_settings():
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install pplug[vllm])")
    from vllm.sampling_params import SamplingType

    from pplug.serve.vllm import sampling_params

    greedy = sampling_params(8, eos_id=2)
    assert greedy.sampling_type == SamplingType.GREEDY and greedy.max_tokens == 8 and greedy.stop_token_ids == [2]
    sampled = sampling_params(16, temperature=0.7, top_p=0.9, seed=3, stop=["\n"])
    assert sampled.sampling_type == SamplingType.RANDOM_SEED
    assert (sampled.temperature, sampled.top_p, sampled.seed, sampled.stop) == (0.7, 0.9, 3, ["\n"])


def test_vllm_greedy_continuations_equal_hf(vllm_app):
    engine = vllm_app.state.engine
    llm = engine.snapshot.model.llm
    prefix = _prefix(llm, len(PROMPTS))
    hf = llm.generate(prefix, PROMPTS, max_new_tokens=8)
    assert any(hf)  # real continuations, not only EOS
    assert engine.generator.generate(prefix, PROMPTS, max_new_tokens=8) == hf


def test_serve_engine_vllm_equals_hf_over_http(vllm_app):
    from fastapi.testclient import TestClient

    engine = vllm_app.state.engine
    with TestClient(vllm_app) as client:
        admin = {"Authorization": "Bearer admin"}
        health = client.get("/health").json()
        assert health["engine"]["generation"] == "vllm" and health["engine"]["scoring"] == "hf"
        for user, text in (("ann", "so happy the weekend is here, going hiking"), ("ben", "traffic again, late")):
            assert client.post("/v1/users", headers=admin, json={"user_id": user}).status_code == 201
            r = client.post(f"/v1/users/{user}/history", headers=admin, json={"items": [{"text": text}]})
            assert r.status_code == 200, r.text
        requests = [("ann", "my coffee machine broke this morning"), ("ben", "my coffee machine broke this morning")]

        def outputs() -> list[str]:
            out = []
            for user, prompt in requests:
                r = client.post("/v1/completions", headers=admin,
                                json={"model": "pplug-run", "user": user, "prompt": prompt, "max_tokens": 8})
                assert r.status_code == 200, r.text
                out.append(r.json()["choices"][0]["text"])
            return out

        on_vllm = outputs()
        generator, engine.generator = engine.generator, None  # the same app on the HF path
        try:
            on_hf = outputs()
        finally:
            engine.generator = generator
    assert on_vllm == on_hf and any(on_hf)
