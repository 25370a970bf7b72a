"""The soft prompt after the prompt, and one prefill shared by every row that reads a prompt (pplug.modeling.prefill).

Every cached computation is checked against the uncached one: one forward of the frozen LLM over
[prompt; soft prompt; target], right-padded, no cache. Prompts of different lengths (left padding inside the
cache), rows sharing a prompt (packed along the sequence), and sequences split by `max_packed` all give the
uncached logits to 1e-5 in float32, and the same gradients to the soft prompts.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pplug.modeling.prefill import distinct_prompts, prefill, run_after

PROMPTS = ["What is the score of this review? the movie was great. Score:", "Five stars! Score:",
           "What is the score of this review? the movie was great. Score:", "It was boring.",
           "What is the score of this review? the movie was great. Score:"]
TARGETS = ["5", "4 stars", "5", "1", "3"]


@pytest.fixture(scope="module")
def llm(tiny_causal_llm_dir):
    from pplug.modeling.llm import FrozenLLM

    return FrozenLLM(str(tiny_causal_llm_dir), dtype="float32", max_input_tokens=64, max_target_tokens=8)


def _soft(llm, b: int, p: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, p, llm.token_dim, generator=g) * 0.5).requires_grad_(True)  # (B, P, D)


def _uncached_logits(llm, prompt_ids, pieces):
    """Per row, the logits at every position of `pieces[i]` read after its prompt, from one plain forward over
    [Emb(prompt); piece], right-padded (the computation the cache must reproduce)."""
    rows = [torch.cat([llm.embed(torch.tensor(p)), piece]) for p, piece in zip(prompt_ids, pieces)]
    length = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), length, llm.token_dim)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        embeds[i, : r.shape[0]], mask[i, : r.shape[0]] = r, 1
    logits = llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                       use_cache=False).logits
    return [logits[i, len(p): len(p) + piece.shape[0]] for i, (p, piece) in enumerate(zip(prompt_ids, pieces))]


def test_distinct_prompts_keep_first_seen_order():
    distinct, rows = distinct_prompts([[1, 2], [3], [1, 2], [4, 5, 6], [3]])
    assert distinct == [[1, 2], [3], [4, 5, 6]] and rows == [0, 1, 0, 2, 1]


@pytest.mark.parametrize("max_packed", [512, 5, 1])
def test_cached_continuations_equal_the_uncached_forward(llm, max_packed):
    p_ids = llm.prompt_ids(PROMPTS)
    g = torch.Generator().manual_seed(1)
    pieces = [torch.randn(n, llm.token_dim, generator=g).requires_grad_(True) for n in (3, 2, 4, 1, 3)]
    kv = prefill(llm.model, llm.model.get_input_embeddings(), p_ids, llm.pad_id)
    assert kv.num_prompts == 3 and kv.num_rows == 5  # three distinct prompts, each prefilled once
    got = run_after(llm.model, kv, pieces, [torch.arange(p.shape[0]) for p in pieces], max_packed=max_packed)
    want = _uncached_logits(llm, p_ids, pieces)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    # row 0's logits depend on its own piece only, not on row 2's, packed beside it after the same prompt
    grads = torch.autograd.grad(got[0].sum(), pieces, allow_unused=True, retain_graph=True)
    assert grads[0].abs().sum() > 0 and (grads[2] is None or float(grads[2].abs().sum()) == 0.0)
    g_cached = torch.autograd.grad(sum(x.square().sum() for x in got), pieces)
    g_plain = torch.autograd.grad(sum(x.square().sum() for x in want), pieces)
    for a, b in zip(g_cached, g_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_row_never_reads_its_neighbours(llm):
    """Two rows of one prompt packed side by side: changing one leaves the other's logits unchanged."""
    p_ids = llm.prompt_ids([PROMPTS[0], PROMPTS[0]])
    kv = prefill(llm.model, llm.model.get_input_embeddings(), p_ids, llm.pad_id)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, llm.token_dim, generator=g), torch.randn(3, llm.token_dim, generator=g)
    keep = [torch.arange(3)] * 2
    first = run_after(llm.model, kv, [a, b], keep)[0]
    again = run_after(llm.model, kv, [a, b * 5 + 1], keep)[0]
    torch.testing.assert_close(first, again)


def test_after_prompt_loss_and_gradients_equal_the_uncached_ones(llm):
    soft = _soft(llm, len(PROMPTS))
    p_ids, t_ids = llm.prompt_ids(PROMPTS), llm.target_ids(TARGETS)
    loss = llm(soft, PROMPTS, TARGETS, position="after_prompt")
    # uncached: [prompt; soft; target] and the cross-entropy of every target token
    pieces = [torch.cat([soft[i], llm.embed(torch.tensor(t[:-1]))]) for i, t in enumerate(t_ids)]
    logits = _uncached_logits(llm, p_ids, pieces)
    p = soft.shape[1]
    want = F.cross_entropy(torch.cat([lg[p - 1:] for lg in logits]), torch.tensor([x for t in t_ids for x in t]))
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    (g_cached,) = torch.autograd.grad(loss, soft)
    (g_plain,) = torch.autograd.grad(want, soft)
    torch.testing.assert_close(g_cached, g_plain, atol=1e-5, rtol=1e-4)
    prefix_loss = llm(soft, PROMPTS, TARGETS)  # the same soft vectors in front read differently
    assert abs(prefix_loss.item() - loss.item()) > 1e-4


def test_after_prompt_choices_equal_the_uncached_scores(llm):
    soft = _soft(llm, len(PROMPTS)).detach()
    p_ids = llm.prompt_ids(PROMPTS)
    for choices in (["1", "2", "3", "4", "5"], ["4 stars", "one star", "5"]):
        got = llm.choice_logprobs(soft, PROMPTS, choices, position="after_prompt")  # (B, C)
        c_ids = llm._tokenize(choices)
        want = torch.zeros(len(PROMPTS), len(choices))
        for j, t in enumerate(c_ids):
            pieces = [torch.cat([soft[i], llm.embed(torch.tensor(t[:-1], dtype=torch.long))])
                      for i in range(len(PROMPTS))]
            for i, lg in enumerate(_uncached_logits(llm, p_ids, pieces)):
                lp = torch.log_softmax(lg[soft.shape[1] - 1:], dim=-1)
                want[i, j] = lp[torch.arange(len(t)), torch.tensor(t)].sum()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the loss pass returns the answer position's scores too, equal to choice_logprobs
    _, lp = llm(soft, PROMPTS, ["5"] * len(PROMPTS), choices=["1", "2", "3", "4", "5"], position="after_prompt")
    torch.testing.assert_close(lp, llm.choice_logprobs(soft, PROMPTS, ["1", "2", "3", "4", "5"],
                                                       position="after_prompt"), atol=1e-5, rtol=1e-5)


def test_a_shared_prefill_store_gives_the_same_scores_and_reads_each_prompt_once(llm):
    """Passes under `shared_prefill` (the methods of one evaluation) read the prompts an earlier pass prefilled,
    with the scores of passes that prefill alone, the frozen LLM alone (no soft prompt) included; a prompt
    seen again in another batch (another order, other neighbours and padding) is not prefilled again."""
    from pplug.modeling.prefill import shared_prefill

    labels, words = ["1", "2", "3", "4", "5"], ["4 stars", "one star", "5"]
    soft_a, soft_b = _soft(llm, len(PROMPTS), seed=1).detach(), _soft(llm, len(PROMPTS), seed=2).detach()
    empty = soft_a[:, :0]
    want = {(name, tuple(c)): llm.choice_logprobs(s, PROMPTS, c, position="after_prompt" if s.shape[1] else "prefix")
            for name, s in (("a", soft_a), ("b", soft_b), ("none", empty)) for c in (labels, words)}
    with shared_prefill(llm) as store:
        first = llm.choice_logprobs(empty, PROMPTS, labels)  # the frozen LLM alone fills the store
        assert (store.misses, store.hits) == (len(set(PROMPTS)), 0)
        got = {(name, tuple(c)): llm.choice_logprobs(s, PROMPTS, c, position="after_prompt")
               for name, s in (("a", soft_a), ("b", soft_b)) for c in (labels, words)}
        order = [3, 1, 0]  # the prompts in other rows and other padding
        again = llm.choice_logprobs(soft_b[order], [PROMPTS[i] for i in order], labels, position="after_prompt")
        assert store.misses == len(set(PROMPTS)), "a stored prompt was prefilled again"
        assert store.hits > 0
    assert llm.prefill_store is None  # the store ends with the block
    torch.testing.assert_close(first, want[("none", tuple(labels))], atol=1e-5, rtol=1e-5)
    for key, value in got.items():
        torch.testing.assert_close(value, want[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, want[("b", tuple(labels))][order], atol=1e-5, rtol=1e-5)


def test_a_prompt_read_from_the_store_serves_its_call_even_if_the_calls_new_prompts_evict_it(llm):
    """A store with room for one prompt: a call that reads the stored prompt and prefills a new one evicts the
    stored one while it runs, and still scores both rows as an unstored call does."""
    from pplug.modeling.prefill import shared_prefill

    labels, prompts = ["1", "2", "3", "4", "5"], [PROMPTS[0], PROMPTS[1]]
    soft = _soft(llm, 2, seed=3).detach()
    want = llm.choice_logprobs(soft, prompts, labels, position="after_prompt")
    with shared_prefill(llm) as store:
        llm.choice_logprobs(soft[:1], prompts[:1], labels, position="after_prompt")
        store.max_bytes = store.bytes * 3 // 2  # room for the first prompt's entry, not for both
        got = llm.choice_logprobs(soft, prompts, labels, position="after_prompt")
        assert (store.hits, store.misses) == (1, 2) and list(store.entries) == [tuple(llm.prompt_ids(prompts)[1])]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_prefill_store_stays_within_its_bytes():
    from pplug.modeling.prefill import PrefillStore

    def entry(n):  # one layer, 2 heads, n positions, 4 dims; logits of 8
        return [(torch.zeros(2, n, 4), torch.zeros(2, n, 4))], torch.zeros(8)

    one = 2 * 2 * 10 * 4 * 4 + 8 * 4  # the bytes of entry(10)
    store = PrefillStore(max_bytes=2 * one)
    for i in range(3):
        store.put((i,), *entry(10))
    assert list(store.entries) == [(1,), (2,)] and store.bytes == 2 * one  # the oldest went first
    store.get((1,))  # read: now the newest
    store.put((3,), *entry(10))
    assert list(store.entries) == [(1,), (3,)]
    store.put((4,), *entry(100))  # larger than the whole store: not kept, nothing evicted for it
    assert list(store.entries) == [(1,), (3,)]


def test_generation_after_the_prompt_is_the_same_alone_and_batched(llm):
    soft = _soft(llm, 2).detach()
    prompts = [PROMPTS[0], PROMPTS[1]]  # different lengths: left padding
    both = llm.generate(soft, prompts, max_new_tokens=4, position="after_prompt")
    alone = [llm.generate(soft[i: i + 1], [prompts[i]], max_new_tokens=4, position="after_prompt")[0]
             for i in range(2)]
    assert both == alone
    rows = llm.prompt_embeds(soft, prompts, position="after_prompt")
    assert [r.shape[0] for r in rows] == [len(ids) + 3 for ids in llm.prompt_ids(prompts)]
    torch.testing.assert_close(rows[0][-3:], soft[0])  # the soft prompt comes last


def _hf_generate_ids(llm, soft, prompts, max_new_tokens, after=True):
    """The uncached reference: HF generate over [pad; prompt; soft prompt] (or [pad; soft prompt; prompt])."""
    inputs = llm._generation_inputs(soft, llm.prompt_ids(prompts), "after_prompt" if after else "prefix")
    return llm.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                              pad_token_id=llm.pad_id, eos_token_id=llm.eos_id)


def test_greedy_generation_after_one_shared_prefill_equals_hf_generate(llm):
    from pplug.modeling.prefill import after_prompt_sequences

    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[3], PROMPTS[0]]  # one item for three users, left padding
    soft = _soft(llm, len(prompts), seed=3).detach()
    for p in (3, 0):  # with soft prompts, and the frozen LLM alone (the prompt's own last logits)
        ids = after_prompt_sequences(llm, soft[:, :p], llm.prompt_ids(prompts), range(len(prompts)), None, 6, None)
        assert torch.equal(ids, _hf_generate_ids(llm, soft[:, :p], prompts, 6))
    assert len(set(llm.generate(soft, prompts, max_new_tokens=6, position="after_prompt"))) > 1  # users differ


def test_generation_and_sampling_read_each_prompt_once_and_keep_it_for_the_other_methods(llm):
    from pplug.modeling.prefill import shared_prefill

    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    soft = _soft(llm, len(prompts), seed=4).detach()
    plain = llm.generate(soft, prompts, max_new_tokens=5, position="after_prompt")
    alone = llm.generate(None, prompts, max_new_tokens=5)  # the frozen LLM alone, its own uncached pass
    sampled = llm.sample(soft, prompts, num_samples=3, max_new_tokens=5, seed=7, position="after_prompt")
    with shared_prefill(llm) as store:
        assert llm.generate(soft, prompts, max_new_tokens=5, position="after_prompt") == plain
        assert (store.misses, store.hits) == (2, 0)  # 4 rows, 2 distinct prompts: 2 prefills
        assert llm.generate(None, prompts, max_new_tokens=5) == alone  # no soft prompt: reads the stored prompts
        assert llm.sample(soft, prompts, num_samples=3, max_new_tokens=5, seed=7, position="after_prompt") == sampled
        assert (store.misses, store.hits) == (2, 4)
    assert llm.prefill_store is None


def test_sampling_after_the_prompt_draws_what_the_uncached_loop_draws(llm):
    from pplug.modeling.sampling import row_sampler, sample_ids

    prompts = [PROMPTS[1], PROMPTS[0], PROMPTS[1]]
    soft = _soft(llm, len(prompts), seed=5).detach()
    owner, sampler = row_sampler(len(prompts), 2, 1.0, 1.0, 11)
    inputs = llm._generation_inputs(soft, llm.prompt_ids(prompts), "after_prompt")
    ids = sample_ids(llm.model, inputs, owner, sampler, 5, None, llm.pad_id, llm.eos_id, False, llm._keep_arg)
    expected = [[t.strip() for t in llm.tokenizer.batch_decode(ids[2 * i: 2 * i + 2], skip_special_tokens=True)]
                for i in range(len(prompts))]
    assert llm.sample(soft, prompts, num_samples=2, max_new_tokens=5, seed=11, position="after_prompt") == expected


def test_positions_are_checked_in_one_line(tiny_config, tiny_seq2seq_llm_dir):
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.llm import FrozenLLM
    from pplug.modeling.model import PPlugModel

    with pytest.raises(ValueError, match="soft_prompt_position must be one of"):
        dataclasses.replace(tiny_config, soft_prompt_position="middle")
    t5 = FrozenLLM(str(tiny_seq2seq_llm_dir), max_input_tokens=64)
    with pytest.raises(ValueError, match="needs a causal LLM"):
        t5.choice_logprobs(torch.zeros(1, 1, t5.token_dim), ["x"], ["1", "2"], position="after_prompt")
    cfg = dataclasses.replace(tiny_config, base_model_name_or_path=str(tiny_seq2seq_llm_dir),
                              soft_prompt_position="after_prompt")
    with pytest.raises(ValueError, match="needs a causal LLM"):
        PPlugModel.from_config(cfg, cache_path=":memory:")
    assert PPlugConfig().soft_prompt_position == "prefix"  # PPlug as published stays the default


def test_a_model_after_the_prompt_trains_saves_and_loads(tiny_config, tmp_path):
    from pplug.core.batch import PPlugBatch
    from pplug.modeling.model import PPlugModel

    cfg = dataclasses.replace(tiny_config, soft_prompt_position="after_prompt")
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, cache_path=":memory:")
    batch = PPlugBatch(PROMPTS[:2], ["the movie was great", "five stars"], [["good film", "bad film"], []],
                       targets=["5", "4"])
    loss = model(batch)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())
    model.save_pretrained(tmp_path / "ck")
    loaded = PPlugModel.from_pretrained(tmp_path / "ck", cache_path=":memory:", device="cpu")
    assert loaded.config.soft_prompt_position == "after_prompt"
    torch.testing.assert_close(loaded.choice_logprobs(batch, ["1", "2", "3", "4", "5"]),
                               model.choice_logprobs(batch, ["1", "2", "3", "4", "5"]))


def test_history_drop_copies_follow_the_official_rule_and_the_seed():
    import random

    from pplug.lamp.data import Example
    from pplug.train.augment import drop_history, history_copies

    profile = [{"id": str(i), "text": f"review {i}", "score": "3"} for i in range(10)]
    for seed in range(50):
        kept = drop_history(profile, random.Random(seed))
        assert 4 <= len(kept) <= 9 and kept == sorted(kept, key=lambda it: int(it["id"]))  # 1..5 dropped, in order
    exs = [Example("q1", "in", profile), Example("q2", "in", profile[:2]), Example("q3", "in", profile[:3])]
    rows = history_copies(exs, 4, seed=7)
    assert [ex.id for ex in rows] == ["q1"] * 4 + ["q2"] + ["q3"] * 4  # copies next to their question
    assert rows[0].profile == profile and all(len(r.profile) < 10 for r in rows[1:4])
    assert [r.profile for r in rows] == [r.profile for r in history_copies(exs, 4, seed=7)]  # same seed, same draw
    assert [r.profile for r in rows] != [r.profile for r in history_copies(exs, 4, seed=8)]
    assert [r.profile for r in history_copies(exs, 4, seed=7, epoch=1)] != [r.profile for r in rows]
    assert history_copies(exs, 1) == exs


def test_copies_of_a_question_share_one_prefill_and_one_input_encoding(tiny_config):
    """A step over k copies: the same loss as the copies' losses computed one row at a time (the packed rows
    do not read each other), with one prefill and one input-encoder pass per question."""
    from unittest import mock

    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.modeling import prefill as prefill_module
    from pplug.modeling.model import PPlugModel
    from pplug.train.augment import history_copies

    cfg = dataclasses.replace(tiny_config, soft_prompt_position="after_prompt")
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, cache_path=":memory:").eval()
    task = get_task("LaMP_3")
    profile = [{"id": str(i), "text": t, "score": s} for i, (t, s) in
               enumerate(zip(["great film", "boring", "okay I guess", "five stars", "one star"], "51353"))]
    exs = [Example("q1", task.make_input("the movie was great"), profile, output="5"),
           Example("q2", task.make_input("it was boring"), profile[:4], output="1")]
    rows = history_copies(exs, 3, seed=0)
    batch = build_batch(task, rows, "pplug", causal=True, max_history=32, with_targets=True,
                        budget=model.llm.prompt_budget())
    with mock.patch.object(prefill_module, "prefill", wraps=prefill_module.prefill) as spy, \
            mock.patch.object(model.embedder.input_encoder, "forward",
                              wraps=model.embedder.input_encoder.forward) as enc:
        loss = model(batch)
    assert spy.call_args.args[2] and len({tuple(p) for p in spy.call_args.args[2]}) == 2  # 6 rows, 2 prompts
    assert enc.call_count == 1 and enc.call_args.args[0]["input_ids"].shape[0] == 2  # 2 distinct inputs
    alone = []
    for r in rows:
        one = build_batch(task, [r], "pplug", causal=True, max_history=32, with_targets=True,
                          budget=model.llm.prompt_budget())
        alone.append((model(one), len(model.llm.target_ids(one.targets)[0])))
    want = sum(l * n for l, n in alone) / sum(n for _, n in alone)  # the mean over every target token
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_prefill_benchmark_runs_end_to_end_on_tiny_models(tiny_causal_llm_dir, tiny_encoder_dir, tmp_path,
                                                              monkeypatch):
    """benchmarks/bench_prefill.py on a tiny LLM: every setting runs, the JSON holds the ratios the docs render."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from pplug.synth.generate import make_synthetic

    make_synthetic(tmp_path / "data", kind="ratings", n_users=12, seed=0)
    root = Path(__file__).resolve().parents[1]
    tiny = json.dumps({"base_model_name_or_path": str(tiny_causal_llm_dir),
                       "encoder_name_or_path": str(tiny_encoder_dir), "max_encoder_tokens": 64})
    out = tmp_path / "prefill.json"
    env = {**__import__("os").environ, "PPLUG_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, str(root / "benchmarks" / "bench_prefill.py"), "--data", str(tmp_path / "data"),
           "--tiny", tiny, "--copies", "3", "--prefix-copies", "1", "--users", "4", "--repeats", "1",
           "--batch", "2", "--threads", "1", "--max-input-tokens", "48", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    train = res["train"]["float32"]
    assert set(train) == {"prefix k=1", "after_prompt k=3"}  # each setting a process of its own: few settings
    assert train["prefix k=1"]["cheaper_per_example_than_prefix"] == 1.0 and train["after_prompt k=3"]["rows"] > 2
    assert set(res["score"]["float32"]) == {"4 users"} and res["meta"]["command"]
    from benchmarks import report

    text = report.prefill_cost(out.parent, out.stem)
    assert "| after_prompt k=3 |" in text and "| 4 |" in text


@pytest.mark.parametrize("p", [0, 3])
def test_multi_token_choices_in_front_read_one_prefill_per_row_and_equal_the_full_forwards(llm, p):
    """Soft prompt in front (and none: the frozen LLM), a multi-token choice set: each row's prompt is prefilled
    once and its choices continue from it; the scores equal one full forward per row and choice."""
    soft = _soft(llm, len(PROMPTS), p=p).detach() if p else None
    got = llm.choice_logprobs(soft, PROMPTS, ["4 stars", "one star", "5"])
    prefix = soft if p else torch.zeros(len(PROMPTS), 0, llm.token_dim)
    p_ids, c_ids = llm.prompt_ids(PROMPTS), llm._tokenize(["4 stars", "one star", "5"])
    want = torch.zeros(len(PROMPTS), len(c_ids))
    for i, ids in enumerate(p_ids):
        for j, t in enumerate(c_ids):
            x = torch.cat([prefix[i], llm.embed(torch.tensor(ids + t[:-1], dtype=torch.long))])[None]
            lg = llm.model(inputs_embeds=x).logits[0].float()
            lp = torch.log_softmax(lg[prefix.shape[1] + len(ids) - 1:], dim=-1)
            want[i, j] = lp[torch.arange(len(t)), torch.tensor(t)].sum()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_evaluation_prefill_benchmark_runs_end_to_end_on_tiny_models(tiny_causal_llm_dir, tiny_encoder_dir,
                                                                          tmp_path):
    """benchmarks/bench_eval_prefill.py on a tiny LLM: three settings timed, the shared prefill's metrics equal to
    the unshared ones, the JSON holds what the docs render."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pplug.synth.generate import make_synthetic

    make_synthetic(tmp_path / "data", kind="ratings", n_users=6, seed=0)
    root = Path(__file__).resolve().parents[1]
    tiny = json.dumps({"base_model_name_or_path": str(tiny_causal_llm_dir),
                       "encoder_name_or_path": str(tiny_encoder_dir), "max_encoder_tokens": 64})
    out = tmp_path / "eval_prefill.json"
    cmd = [sys.executable, str(root / "benchmarks" / "bench_eval_prefill.py"), "--data", str(tmp_path / "data"),
           "--tiny", tiny, "--questions", "6", "--repeats", "1", "--max-input-tokens", "48", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600,
                         env={**os.environ, "PPLUG_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["seconds"]) == {"prefix", "after_prompt, each method prefills", "after_prompt, shared prefill"}
    assert res["max_metric_diff_shared_vs_unshared"] < 1e-6
    assert res["prefill"]["prompts_reused"] == 2 * res["prefill"]["prompts_prefilled"] > 0
    from benchmarks import report

    text = report.eval_prefill(out.parent, out.stem)
    assert "| after_prompt, shared prefill |" in text
