"""MBR / preference decoding and per-row decoding settings (pure functions and tiny random models, offline)."""

from __future__ import annotations

import pytest
import torch
from fakes import BagOfWords

from pplug.core.tasks import get_task
from pplug.decode.choose import (
    Candidates,
    DecodingSpec,
    RowContext,
    candidate_pools,
    consensus,
    decode_rows,
    mbr_select,
    preference_select,
    user_outputs,
)
from pplug.lamp.data import Example
from pplug.methods.batches import build_batch

T6 = get_task("LaMP_6")


def test_mbr_picks_the_consensus_candidate():
    # the greedy candidate (index 0) is the odd one out; "budget review meeting" shares most words with the rest
    cands = Candidates(["lunch", "budget review meeting", "budget review", "budget meeting notes", "review meeting"])
    for utility in ("rouge1", "rougeL"):
        assert cands.texts[mbr_select(cands, utility)] == "budget review meeting"
        assert len(cands.scores) == 5 and cands.scores[0] == 0.0
    # a pluggable utility: exact match only -> the most frequent text wins
    exact = Candidates(["b", "a", "b", "a", "a"])
    assert exact.texts[mbr_select(exact, lambda x, y: float(x == y))] == "a"
    # batched embedding utility through an encoder
    assert cands.texts[mbr_select(cands, "embedding", BagOfWords())] == "budget review meeting"
    # ties (here: one candidate, or all equal) go to the greedy candidate
    assert mbr_select(Candidates(["only"])) == 0
    assert mbr_select(Candidates(["x y", "z w", "q r"])) == 0
    assert consensus(["a b", "a b"]).tolist() == [1.0, 1.0]


def test_preference_moves_toward_the_users_style():
    enc = BagOfWords()
    # consensus alone prefers the generic subject (two of three candidates say "FYI meeting")
    pool = ["FYI meeting", "Q3 budget review", "FYI meeting"]
    budget_user = ["Q2 budget review", "budget forecast for Q4", "revised budget numbers", "budget review call"]
    social_user = ["lunch on friday?", "happy hour", "tourney this weekend"]
    assert pool[preference_select(Candidates(pool), budget_user, enc, weight=0.0)] == "FYI meeting"
    assert pool[preference_select(Candidates(pool), budget_user, enc, weight=0.7)] == "Q3 budget review"
    assert pool[preference_select(Candidates(pool), social_user, enc, weight=0.7)] == "FYI meeting"
    # a user without past outputs falls back to consensus whatever the weight
    assert pool[preference_select(Candidates(pool), [], enc, weight=1.0)] == "FYI meeting"


def test_user_outputs_and_spec_checks():
    profile = [{"id": "1", "text": "a", "title": "Budget"}, {"id": "2", "text": "b", "title": " "},
               {"id": "3", "text": "c", "title": "Q3 plan"}]
    assert user_outputs(T6, profile) == ["Budget", "Q3 plan"]
    assert user_outputs(T6, profile, max_history=1) == ["Q3 plan"]
    assert user_outputs(get_task("LaMP_3"), [{"id": "1", "text": "x", "score": "5"}]) == []
    for bad in ({"name": "nucleus"}, {"name": "mbr", "temperature": 0.0}, {"name": "mbr", "top_p": 1.5},
                {"name": "preference", "preference_weight": 2.0}, {"name": "mbr", "utility": "bleu"}):
        with pytest.raises(ValueError):
            DecodingSpec(**bad)


def _examples() -> list[Example]:
    prof = [{"id": f"p{k}", "text": f"the city council voted on item {k}", "title": f"council vote {k}"}
            for k in range(3)]
    texts = ["the city council voted on a new budget", "good morning everyone", "we propose a new method",
             "the movie was great and I loved the acting"]
    return [Example(id=f"r{i}", input=T6.make_input(t), profile=prof[: i + 1], output="x") for i, t in enumerate(texts)]


def test_sampling_is_reproducible_and_seeded(gen_model):
    llm = gen_model.llm
    prompts = ["Generate a subject for the following email: good morning", "the quick brown fox"]
    a = llm.sample(None, prompts, num_samples=4, temperature=5.0, max_new_tokens=6, seed=3)
    b = llm.sample(None, prompts, num_samples=4, temperature=5.0, max_new_tokens=6, seed=3)
    c = llm.sample(None, prompts, num_samples=4, temperature=5.0, max_new_tokens=6, seed=4)
    assert a == b and a != c
    assert [len(r) for r in a] == [4, 4] and len(set(a[0])) > 1  # distinct samples at a high temperature
    # the global RNG is neither used nor disturbed
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    llm.sample(None, prompts, num_samples=2, max_new_tokens=3, seed=0)
    assert torch.equal(torch.rand(1), before)
    # a nucleus so small that only the top token survives equals greedy decoding
    greedy = llm.generate(None, prompts, max_new_tokens=6)
    tiny_p = llm.sample(None, prompts, num_samples=2, top_p=1e-6, max_new_tokens=6, seed=9)
    assert all(s == [g, g] for s, g in zip(tiny_p, greedy))


def test_per_row_settings_in_one_batch_match_rows_alone(gen_model):
    exs = _examples()
    batch = build_batch(T6, exs, "pplug", with_targets=False, max_history=8)
    specs = [DecodingSpec("greedy"),
             DecodingSpec("mbr", num_samples=3, temperature=4.0, seed=1),
             DecodingSpec("preference", num_samples=5, temperature=6.0, top_p=0.9, preference_weight=0.6, seed=2),
             DecodingSpec("beam", num_beams=2)]
    ctx = RowContext(keys=[ex.id for ex in exs], user_outputs=[user_outputs(T6, ex.profile) for ex in exs])
    stats: dict = {}
    together = decode_rows(gen_model, batch, specs, 8, ctx, stats=stats)
    alone = []
    for i, ex in enumerate(exs):
        one = build_batch(T6, [ex], "pplug", with_targets=False, max_history=8)
        alone += decode_rows(gen_model, one, [specs[i]], 8,
                             RowContext(keys=[ex.id], user_outputs=[user_outputs(T6, ex.profile)]))
    assert together == alone
    pools = candidate_pools(gen_model, batch, specs, 8, ctx.keys)  # the comparison is not between constant pools
    assert pools[0] is None and pools[3] is None
    assert len(set(pools[1].texts)) > 1 and len(set(pools[2].texts)) > 1 and len(pools[2].texts) == 6
    assert stats["rows"] == 4 and stats["candidates"] == 1 + 4 + 6 + 1 and stats["seconds"] > 0
    # the same rows in another order and batch split give the same outputs (seeds follow the row keys)
    order = [2, 0, 3, 1]
    shuffled = build_batch(T6, [exs[i] for i in order], "pplug", with_targets=False, max_history=8)
    ctx2 = RowContext(keys=[exs[i].id for i in order], user_outputs=[ctx.user_outputs[i] for i in order])
    assert decode_rows(gen_model, shuffled, [specs[i] for i in order], 8, ctx2) == [together[i] for i in order]


def test_decode_dispatch_keeps_argmax_and_rejects_generation_decodings_for_ratings(gen_model):
    from pplug.decode.inference import decode

    exs = _examples()[:2]
    batch = build_batch(T6, exs, "pplug", with_targets=False, max_history=8)
    out = decode(gen_model, T6, batch, decoding=["argmax", "greedy", "mbr"], max_new_tokens=6,
                 options=DecodingSpec(num_samples=2))
    assert out["argmax"] == out["greedy"]  # "argmax" keeps meaning greedy for generation tasks
    assert len(out["mbr"]) == 2
    with pytest.raises(ValueError, match="generation tasks"):
        decode(gen_model, get_task("LaMP_3"), batch, decoding="mbr")


def test_personalize_and_evaluate_take_generation_decodings(gen_model, tmp_path):
    import json

    import pplug
    from pplug.cli.main import main
    from pplug.lamp.data import write_split

    exs = _examples()
    specs = [DecodingSpec("mbr", num_samples=2, temperature=4.0), DecodingSpec("greedy")] * 2
    per_row = pplug.personalize(gen_model, exs, decoding=specs, batch_size=3, max_new_tokens=6)
    one_by_one = [pplug.personalize(gen_model, [ex], decoding=[s], max_new_tokens=6)[0] for ex, s in zip(exs, specs)]
    assert per_row == one_by_one
    assert pplug.personalize(gen_model, exs[:2], decoding="argmax", max_new_tokens=6) == \
        pplug.personalize(gen_model, exs[:2], decoding="greedy", max_new_tokens=6)

    gen_model.save_pretrained(tmp_path / "run" / "final")
    write_split(tmp_path / "data", "dev", "LaMP_6", exs)
    out = tmp_path / "eval" / "preds.json"
    rc = main(["evaluate", "--checkpoint", f"pplug={tmp_path / 'run' / 'final'}", "--data", str(tmp_path / "data"),
               "--method", "pplug", "--decoding", "argmax", "mbr", "preference", "--num-samples", "2",
               "--temperature", "4", "--max-new-tokens", "6", "--out", str(out),
               "--embedding-cache", str(tmp_path / "emb.sqlite")])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "preds.metrics.json").read_text())
    assert set(report["metrics"]) == {"pplug [argmax]", "pplug [mbr]", "pplug [preference]"}
    assert report["cost"]["pplug [argmax]"]["candidates_per_row"] == 1.0
    assert report["cost"]["pplug [mbr]"]["candidates_per_row"] == 3.0
    assert report["cost"]["pplug [preference]"]["seconds_per_row"] > 0


def test_first_line_stop_ends_sequences_after_their_first_non_empty_line(gen_model):
    from pplug.decode.inference import clean_generation

    llm = gen_model.llm
    for text in ("budget review\nmore text", "\n\n  budget\nx", "no newline at all", "\n \n"):
        ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"]
        stop, done_at = llm.first_line_stop(), None
        for t in range(len(ids)):
            if bool(stop(torch.tensor([ids[: t + 1]]))[0]) and done_at is None:
                done_at = t + 1
        kept = llm.tokenizer.decode(ids[:done_at] if done_at else ids)
        assert clean_generation(kept) == clean_generation(text)
        if "\nx" in text or "more" in text:
            assert done_at is not None and done_at < len(ids)  # stopped before the rest


def test_a_beam_search_line_stop_reads_each_candidate_afresh(gen_model):
    """Beam search re-ranks its candidates every step, so the beams' stop reads each row's own tokens: the same
    row gets the same answer in any order and after any earlier call (a stateful stop would carry one row's
    "text seen" to another)."""
    llm = gen_model.llm
    tok = lambda text: llm.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ended, blank, open_ = tok("budget review\n"), tok("\n\n"), tok("budget review")
    width = max(map(len, (ended, blank, open_)))
    pad = tok(" ")[0]  # whitespace: no text, no newline
    rows = [[pad] * (width - len(r)) + r for r in (ended, blank, open_)]
    want = [True, False, False]  # a line that has ended; no text yet; text whose line goes on
    stop = llm.first_line_stop(per_candidate=True)
    assert stop(torch.tensor(rows)).tolist() == want
    order = [1, 2, 0]  # the same rows, re-ranked: a blank line now where a finished line was
    assert stop(torch.tensor([rows[i] for i in order])).tolist() == [want[i] for i in order]
    assert stop(torch.tensor([rows[1]])).tolist() == [False]
    beams = llm.generate(None, ["Write a subject line:"] * 2, max_new_tokens=12, num_beams=3, first_line=True)
    assert all("\n" not in b for b in beams)
