"""UserEmbedder: shapes, masks, cold start, attention, init scale, gradients (no LLM needed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pplug.modeling.config import PPlugConfig
from pplug.modeling.embedder import UserEmbedder

BSZ, N_HIST, D_ENC, D_LLM = 3, 5, 16, 32
TOKEN_NORM = 4.0


def _cfg(**kw) -> PPlugConfig:
    return PPlugConfig(base_model_name_or_path="x", encoder_name_or_path="y", input_encoder="frozen", **kw)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    h = F.normalize(torch.randn(BSZ, N_HIST, D_ENC, generator=g), dim=-1)  # (B, N, D)
    mask = torch.ones(BSZ, N_HIST, dtype=torch.bool)
    mask[1, 3:] = False  # row 1 has 3 items
    mask[2] = False  # row 2: cold start
    q = F.normalize(torch.randn(BSZ, D_ENC, generator=g), dim=-1)
    return h, mask, q


@pytest.mark.parametrize("num_user_tokens", [1, 3])
def test_prefix_shape(num_user_tokens):
    emb = UserEmbedder(_cfg(num_user_tokens=num_user_tokens), D_ENC, D_LLM, TOKEN_NORM)
    h, mask, q = _inputs()
    out = emb(h, mask, q)
    assert out.shape == (BSZ, 1 + num_user_tokens, D_LLM) == (BSZ, emb.num_prefix_tokens, D_LLM)
    assert torch.isfinite(out).all()


def test_prefix_parts_follow_config():
    h, mask, q = _inputs()
    only_user = UserEmbedder(_cfg(use_instruction=False, num_user_tokens=2), D_ENC, D_LLM, TOKEN_NORM)
    assert only_user(h, mask, q).shape == (BSZ, 2, D_LLM)
    prompt_tuned = UserEmbedder(_cfg(method="prompt-tuned"), D_ENC, D_LLM, TOKEN_NORM)
    out = prompt_tuned(h, mask, None)  # no query needed
    assert out.shape == (BSZ, 1, D_LLM)
    torch.testing.assert_close(out[0], out[1])  # the instruction is shared by all users
    with pytest.raises(ValueError):
        _cfg(method="prompt-tuned", use_instruction=False)


@pytest.mark.parametrize("aggregation", ["input_aware", "mean"])
def test_input_token_reads_the_input_alone(aggregation):
    """`input_token`: one more prefix vector that changes with the input and not with the history."""
    emb = UserEmbedder(_cfg(input_token=True, aggregation=aggregation), D_ENC, D_LLM, TOKEN_NORM)
    assert emb.needs_query and emb.num_prefix_tokens == 3  # instruction, user, input
    h, mask, q = _inputs()
    out = emb(h, mask, q)  # (B, 3, D)
    assert out.shape == (BSZ, 3, D_LLM) and torch.isfinite(out).all()  # row 2 is a cold start
    other_q = emb(h, mask, q.flip(0))
    assert (out[0, -1] - other_q[0, -1]).abs().max() > 1e-3  # another input, another input token
    other_h = emb(h.flip(-1), mask, q)
    torch.testing.assert_close(out[:, -1], other_h[:, -1])  # another history, the same input token
    assert out[0, -1].norm().item() == pytest.approx(TOKEN_NORM, rel=0.5)  # scaled like a token at init
    out.sum().backward()
    assert emb.input_mlp[0].weight.grad.abs().sum() > 0 and emb.query_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="queries"):
        emb(h, mask, None)
    assert not UserEmbedder(_cfg(aggregation="mean"), D_ENC, D_LLM, TOKEN_NORM).needs_query
    with pytest.raises(ValueError, match="input_token must be true or false"):
        _cfg(input_token="yes")


def test_attention_weights_sum_to_one_over_valid_items():
    emb = UserEmbedder(_cfg(), D_ENC, D_LLM, TOKEN_NORM)
    h, mask, q = _inputs()
    w = emb.attention_weights(h, mask, emb.embed_query(q))
    assert w.shape == (BSZ, N_HIST) and torch.isfinite(w).all()
    torch.testing.assert_close(w[:2].sum(-1), torch.ones(2))
    assert (w[~mask] == 0).all()  # padding gets no weight
    assert (w[2] == 0).all()  # all-masked row: zeros, not NaN
    assert (w[0] > 0).all()


def test_attention_is_input_aware_and_temperature_sharpens():
    h, mask, q = _inputs()
    emb = UserEmbedder(_cfg(), D_ENC, D_LLM, TOKEN_NORM)
    # the item equal to the query gets the largest weight
    q0 = h[:, 1].clone()
    w = emb.attention_weights(h, mask, q0)
    assert w[0].argmax().item() == 1
    sharp = UserEmbedder(_cfg(temperature=0.05), D_ENC, D_LLM, TOKEN_NORM).attention_weights(h, mask, q0)
    assert sharp[0].max() > w[0].max()
    mean = UserEmbedder(_cfg(aggregation="mean"), D_ENC, D_LLM, TOKEN_NORM).attention_weights(h, mask, q0)
    torch.testing.assert_close(mean[1, :3], torch.full((3,), 1 / 3))


def test_cold_start_uses_default_user_vector_and_never_nan():
    emb = UserEmbedder(_cfg(num_user_tokens=2), D_ENC, D_LLM, TOKEN_NORM)
    h, mask, q = _inputs()
    user = emb.user_embedding(h, mask, emb.embed_query(q))  # (B, T, D)
    torch.testing.assert_close(user[2], emb.default_user)
    assert not torch.allclose(user[0], emb.default_user)
    # every row empty, and no history at all (N = 0)
    all_masked = emb(h, torch.zeros_like(mask), q)
    empty = emb(torch.zeros(BSZ, 0, D_ENC), torch.zeros(BSZ, 0, dtype=torch.bool), q)
    assert torch.isfinite(all_masked).all() and torch.isfinite(empty).all()
    torch.testing.assert_close(all_masked, empty)
    # gradients stay finite through the masked softmax
    emb(h, mask, q).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in emb.parameters() if p.grad is not None)
    assert emb.default_user.grad is not None and emb.default_user.grad.abs().sum() > 0


def test_masked_items_do_not_change_the_output():
    emb = UserEmbedder(_cfg(), D_ENC, D_LLM, TOKEN_NORM)
    h, mask, q = _inputs()
    h2 = h.clone()
    h2[1, 3:] = torch.randn(2, D_ENC)  # change padding only
    torch.testing.assert_close(emb(h, mask, q), emb(h2, mask, q))
    h3 = h.clone()
    h3[1, 0] = -h3[1, 0]  # change a real item
    assert not torch.allclose(emb(h, mask, q)[1], emb(h3, mask, q)[1])


def test_init_scale_matches_token_norm():
    for norm in (0.5, 4.0, 30.0):
        emb = UserEmbedder(_cfg(num_user_tokens=2), D_ENC, D_LLM, norm)
        h, mask, q = _inputs()
        out = emb(h, mask, q).detach()
        ratio = out.norm(dim=-1) / norm  # (B, P)
        assert ((ratio > 0.5) & (ratio < 1.5)).all(), ratio


def test_trainable_input_encoder_gets_gradients(tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    for p in st.parameters():
        p.requires_grad_(False)
    cfg = dataclasses.replace(_cfg(), input_encoder="trainable", max_encoder_tokens=32)
    emb = UserEmbedder(cfg, st.get_embedding_dimension(), D_LLM, TOKEN_NORM, sentence_encoder=st)
    assert emb.input_encoder is not st and emb.needs_query_text
    d = st.get_embedding_dimension()
    h = F.normalize(torch.randn(2, 4, d), dim=-1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    q = emb.embed_query(["a great movie", "terrible service"])
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2))
    emb(h, mask, ["a great movie", "terrible service"]).pow(2).sum().backward()
    grads = [p.grad for p in emb.input_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(not p.requires_grad for p in st.parameters())  # the frozen history encoder stays frozen
    with pytest.raises(TypeError):
        emb.embed_query(torch.zeros(2, d))
