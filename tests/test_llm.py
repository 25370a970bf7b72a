"""FrozenLLM: prefix prepending, masks, labels, frozen weights, generation and choice scoring (tiny models)."""

from __future__ import annotations

import pytest
import torch

from pplug.modeling.llm import FrozenLLM, truncate_middle

PROMPTS = ["What is the score of the following review: the movie was great", "review: bad"]
TARGETS = ["5", "one star"]
P = 2  # prefix tokens


@pytest.fixture(scope="module")
def causal(tiny_causal_llm_dir):
    return FrozenLLM(str(tiny_causal_llm_dir), max_input_tokens=64, max_target_tokens=8)


@pytest.fixture(scope="module")
def seq2seq(tiny_seq2seq_llm_dir):
    return FrozenLLM(str(tiny_seq2seq_llm_dir), max_input_tokens=64, max_target_tokens=8)


def _prefix(llm, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, P, llm.token_dim, generator=g) * llm.token_norm / llm.token_dim**0.5


def test_truncate_middle_keeps_head_and_tail():
    ids = list(range(100))
    out = truncate_middle(ids, 20)
    assert out == list(range(15)) + list(range(95, 100))
    assert truncate_middle(ids[:10], 20) == ids[:10]


def test_causal_inputs_masks_and_exact_label_placement(causal):
    inputs = causal.build_inputs(_prefix(causal), PROMPTS, TARGETS)
    p_ids, t_ids = causal.prompt_ids(PROMPTS), causal.target_ids(TARGETS)
    length = max(len(p) + len(t) for p, t in zip(p_ids, t_ids))
    assert inputs["inputs_embeds"].shape == (2, P + length, causal.token_dim)
    assert inputs["attention_mask"].shape == inputs["labels"].shape == (2, P + length)
    for i in range(2):
        n_real = P + len(p_ids[i]) + len(t_ids[i])
        assert inputs["attention_mask"][i, :n_real].eq(1).all() and inputs["attention_mask"][i, n_real:].eq(0).all()
        labels = inputs["labels"][i]
        start = P + len(p_ids[i])
        assert labels[:start].eq(-100).all()  # prefix and prompt
        assert labels[start:n_real].tolist() == t_ids[i]  # target + EOS exactly
        assert t_ids[i][-1] == causal.eos_id
        assert labels[n_real:].eq(-100).all()  # padding
        # prompt token embeddings sit right after the prefix
        torch.testing.assert_close(inputs["inputs_embeds"][i, P : P + len(p_ids[i])],
                                   causal.embed(torch.tensor(p_ids[i])))
    torch.testing.assert_close(inputs["inputs_embeds"][:, :P], _prefix(causal))


def test_loss_and_scores_read_only_the_logits_they_need(causal):
    """`logits_to_keep` skips the vocabulary projection over leading prompt positions; nothing may change."""
    import torch.nn.functional as F

    assert causal._keep_arg == "logits_to_keep"
    prompts = [PROMPTS[0], PROMPTS[1], "review: fine, nothing more to say about it"]
    prefix = _prefix(causal, b=3).requires_grad_(True)
    inputs = causal.build_inputs(prefix, prompts, ["5", "one star", "3"])
    labels = inputs.pop("labels")
    full = causal.model(**inputs, use_cache=False).logits.float()  # every position: the reference
    expected = F.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss = causal(prefix, prompts, ["5", "one star", "3"])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, prefix)
    (ref,) = torch.autograd.grad(expected, prefix)
    torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)
    # scores: single-token choices (one pass, last position) and multi-token choices (one row per choice)
    with torch.no_grad():
        embeds = causal.build_inputs(prefix, prompts)
        logits = causal.model(**embeds, use_cache=False).logits.float()
        last = embeds["attention_mask"].sum(-1) - 1
        lp = torch.log_softmax(logits[torch.arange(3), last], dim=-1)
        ids = [causal._tokenize([c])[0][0] for c in "15"]
        torch.testing.assert_close(causal.choice_logprobs(prefix, prompts, ["1", "5"]), lp[:, ids])
        multi = causal.choice_logprobs(prefix, prompts, ["one star", "5"])
        for i, prompt in enumerate(prompts):  # each row alone, every position computed, as the reference
            alone = causal.build_inputs(prefix[i:i + 1], [prompt], ["one star"])
            lab = alone.pop("labels")
            lg = torch.log_softmax(causal.model(**alone, use_cache=False).logits.float()[:, :-1], dim=-1)
            tok = lg.gather(-1, lab[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1) * (lab[:, 1:] != -100)
            # targets end with EOS in training; choices are scored without it
            torch.testing.assert_close(multi[i, 0], tok.sum() - tok[0, (lab[0, 1:] != -100).nonzero()[-1]].sum(),
                                       rtol=1e-4, atol=1e-5)


def test_seq2seq_prefix_goes_to_the_encoder_only(seq2seq):
    inputs = seq2seq.build_inputs(_prefix(seq2seq), PROMPTS, TARGETS)
    p_ids, t_ids = seq2seq.prompt_ids(PROMPTS), seq2seq.target_ids(TARGETS)
    assert all(p[-1] == seq2seq.eos_id for p in p_ids)  # T5 encoder inputs end with EOS
    assert inputs["inputs_embeds"].shape == (2, P + max(map(len, p_ids)), seq2seq.token_dim)
    assert inputs["attention_mask"][:, :P].eq(1).all()
    labels = inputs["labels"]
    assert labels.shape == (2, max(map(len, t_ids)))  # no prefix positions in the labels
    for i in range(2):
        assert labels[i, : len(t_ids[i])].tolist() == t_ids[i]
        assert labels[i, len(t_ids[i]) :].eq(-100).all()
    loss = seq2seq(_prefix(seq2seq), PROMPTS, TARGETS)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_llm_frozen_after_optimizer_step(which, request):
    llm = request.getfixturevalue(which)
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    prefix = torch.nn.Parameter(_prefix(llm))
    opt = torch.optim.AdamW([prefix, *llm.parameters()], lr=1e-1)  # even if handed to the optimizer
    llm.train()
    assert not llm.training and not llm.model.training  # eval mode always
    loss = llm(prefix, PROMPTS, TARGETS)
    loss.backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.parameters())
    opt.step()
    for k, v in llm.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_inputs_embeds_with_empty_prefix_equals_input_ids(causal):
    ids = torch.tensor([causal.prompt_ids(PROMPTS[:1])[0]])
    ref = causal.model(input_ids=ids).logits
    inputs = causal.build_inputs(None, PROMPTS[:1])
    got = causal.model(**inputs).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_loss_matches_manual_cross_entropy(causal):
    prefix = _prefix(causal)
    loss = causal(prefix, PROMPTS, TARGETS)
    # score each row's target tokens by hand from the logits of the full sequence, one row at a time
    total, count = 0.0, 0
    for i in range(2):
        p, t = causal.prompt_ids([PROMPTS[i]])[0], causal.target_ids([TARGETS[i]])[0]
        emb = torch.cat([prefix[i : i + 1], causal.embed(torch.tensor([p + t]))], dim=1)
        lp = torch.log_softmax(causal.model(inputs_embeds=emb).logits[0].float(), -1)
        for j, tok in enumerate(t):
            total -= lp[P + len(p) + j - 1, tok].item()
            count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-4)


def test_batched_generation_left_pads(causal):
    prefix = _prefix(causal)
    both = causal.generate(prefix, PROMPTS, max_new_tokens=6)
    alone = [causal.generate(prefix[i : i + 1], [PROMPTS[i]], max_new_tokens=6)[0] for i in range(2)]
    assert both == alone
    assert all(isinstance(s, str) and s for s in both)
    beams = causal.generate(prefix, PROMPTS, max_new_tokens=4, num_beams=3)
    assert len(beams) == 2


def test_seq2seq_generation(seq2seq):
    prefix = _prefix(seq2seq)
    both = seq2seq.generate(prefix, PROMPTS, max_new_tokens=5)
    alone = [seq2seq.generate(prefix[i : i + 1], [PROMPTS[i]], max_new_tokens=5)[0] for i in range(2)]
    assert both == alone


def test_choice_logprobs_single_and_multi_token_agree(causal):
    prefix = _prefix(causal)
    single = ["1", "2", "3", "4", "5"]
    assert all(len(causal._tokenize([c])[0]) == 1 for c in single)
    fast = causal.choice_logprobs(prefix, PROMPTS, single)  # one pass over B rows
    multi = causal.choice_logprobs(prefix, PROMPTS, single + ["one star"])  # B*C rows
    assert fast.shape == (2, 5) and multi.shape == (2, 6)
    torch.testing.assert_close(multi[:, :5], fast, atol=1e-4, rtol=1e-4)
    assert (multi <= 0).all()
    # a multi-token choice's log-prob equals minus its summed token loss (without EOS)
    t = causal._tokenize(["one star"])[0]
    emb = torch.cat([prefix[:1], causal.embed(torch.tensor([causal.prompt_ids(PROMPTS[:1])[0] + t]))], dim=1)
    lp = torch.log_softmax(causal.model(inputs_embeds=emb).logits[0].float(), -1)
    start = P + len(causal.prompt_ids(PROMPTS[:1])[0])
    manual = sum(lp[start + j - 1, tok].item() for j, tok in enumerate(t))
    assert multi[0, 5].item() == pytest.approx(manual, abs=1e-3)


def test_seq2seq_choice_logprobs(seq2seq):
    prefix = _prefix(seq2seq)
    lp = seq2seq.choice_logprobs(prefix, PROMPTS, ["1", "2", "one star"])
    assert lp.shape == (2, 3) and (lp <= 0).all()
    # equals minus the summed token cross-entropy of the same target (no EOS) through forward
    seq2seq_loss_free = []
    for c in ["1", "2", "one star"]:
        t = seq2seq._tokenize([c])[0]
        inputs = seq2seq.build_inputs(prefix[:1], PROMPTS[:1])
        labels = torch.tensor([t])
        out = seq2seq.model(**inputs, labels=labels)
        seq2seq_loss_free.append(-out.loss.item() * len(t))
    torch.testing.assert_close(lp[0], torch.tensor(seq2seq_loss_free), atol=1e-4, rtol=1e-4)


def test_prompt_truncation_and_prefix_checks(causal):
    long_prompt = "review: " + "the movie was great " * 100
    ids = causal.prompt_ids([long_prompt])[0]
    assert len(ids) == causal.max_input_tokens
    full = causal._tokenize([long_prompt])[0]
    assert ids[:10] == full[:10] and ids[-5:] == full[-5:]  # head and tail kept
    with pytest.raises(ValueError, match="prefix must be"):
        causal.build_inputs(torch.zeros(3, 1, causal.token_dim), PROMPTS)


def test_bfloat16_llm_takes_float32_prefix(tiny_causal_llm_dir):
    llm = FrozenLLM(str(tiny_causal_llm_dir), dtype="bfloat16", max_input_tokens=64)
    assert llm.dtype == torch.bfloat16
    prefix = torch.nn.Parameter(_prefix(llm).float())
    loss = llm(prefix, PROMPTS, TARGETS)
    loss.backward()
    assert torch.isfinite(loss) and prefix.grad.dtype == torch.float32
    assert len(llm.generate(prefix.detach(), PROMPTS, max_new_tokens=3)) == 2


@pytest.mark.parametrize("which", ["causal", "seq2seq"])
def test_forward_with_choices_scores_the_answer_position_in_the_same_pass(which, request):
    llm = request.getfixturevalue(which)
    prefix = _prefix(llm).requires_grad_()
    loss, logp = llm(prefix, PROMPTS, TARGETS, choices=["1", "5"])
    torch.testing.assert_close(loss, llm(prefix, PROMPTS, TARGETS))
    # the position predicting the target's first token is where choice_logprobs scores the answer
    torch.testing.assert_close(logp, llm.choice_logprobs(prefix, PROMPTS, ["1", "5"]), rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(logp[:, 1].sum(), prefix)  # the choice scores carry gradients to the prefix
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="single-token choices"):
        llm(prefix, PROMPTS, TARGETS, choices=["one star", "5"])
