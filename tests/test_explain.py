"""`pplug.explain` on tiny random models: the weights are the embedder's own (they sum to 1 and rebuild the user
vector the model prepends), the counterfactual rows are what decoding gives with and without the history, and
flipping one history item's label moves the label statistics by exactly that item and leaves the cold start alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pplug.lamp.data import Example

REVIEW = "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 " \
         "without further explanation. review: {}"


def _items(scores: str) -> list[dict]:
    texts = ["the movie was great and I loved the acting", "terrible service, not worth the money",
             "works well, would buy again", "It was boring. One star.", "I really enjoyed this book.",
             "Average at best, okay I guess."]
    return [{"id": f"i{j}", "text": texts[j % len(texts)] + f" {j}", "score": s} for j, s in enumerate(scores)]


@pytest.fixture(scope="module")
def model(tiny_config):
    from pplug.modeling.model import PPlugModel

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, aggregation="mixed", temperature=0.2, user_stats=True, stats_init="labels",
                              label_token=True, history_mix_items=4.0, decoding="expected")
    m = PPlugModel.from_config(cfg, cache_path=":memory:").eval()
    with torch.no_grad():
        m.embedder.mix_logit.fill_(0.7)  # a gate away from 1/2, so a mix-up of the two parts would show
    return m


def _examples() -> list[Example]:
    return [Example("a", REVIEW.format("the acting was great"), _items("55425")),
            Example("b", REVIEW.format("boring service"), _items("112131")),
            Example("c", REVIEW.format("okay I guess"), [])]


def test_weights_are_the_embedders_own_and_rebuild_the_user_vector(model):
    from pplug.core.tasks import get_task
    from pplug.decode.explain import explain
    from pplug.methods.batches import build_batch

    examples = _examples()
    out = explain(model, examples)
    task = get_task("LaMP_3")
    batch = build_batch(task, examples, "pplug", max_history=model.config.max_history, with_targets=False)
    emb, mask = model.history_tensors(batch.histories)
    with torch.no_grad():
        q = model.embedder.embed_query(batch.queries)
        own = model.embedder.attention_weights(emb, mask, q)  # (B, N)
        proj = model.embedder.projector(emb)  # (B, N, T * D)
        prefix = model.prefix(batch)  # [I; P_u; S_u; A_u]
    for i, e in enumerate(out[:2]):
        w = torch.tensor([it["weight"] for it in e["items"]])
        assert len(w) == len(examples[i].profile) and abs(float(w.sum()) - 1.0) < 1e-5
        assert torch.allclose(w, own[i, : len(w)], atol=1e-6)
        user = (w[:, None] * proj[i, : len(w)]).sum(0)  # sum_j w_j Proj(h_j): the model's user token
        assert torch.allclose(user, prefix[i, 1], atol=1e-4)
        g = e["attention"]["gate"]
        assert g == pytest.approx(float(torch.sigmoid(torch.tensor(0.7))), abs=1e-6)
        alone = torch.tensor([it["input_aware"] for it in e["items"]])
        assert torch.allclose(g * alone + (1 - g) / len(w), w, atol=1e-5)  # the gate mixes exactly these
        assert 1.0 <= e["effective_items"]["inverse_simpson"] <= e["effective_items"]["exp_entropy"] + 1e-6
        assert e["effective_items"]["exp_entropy"] <= len(w) + 1e-6
        assert [t["weight"] for t in e["top"]] == sorted((t["weight"] for t in e["items"]), reverse=True)[:5]
        # the label token reads the attended share of each label: the weights summed per label
        for lab, share in e["label_token"].items():
            assert share == pytest.approx(sum(it["weight"] for it in e["items"] if it["label"] == lab), abs=1e-5)
    cold = out[2]
    assert cold["items"] == [] and cold["effective_items"] == {"exp_entropy": 0.0, "inverse_simpson": 0.0}
    assert out[0]["statistics"]["label_shares"] == pytest.approx({"1": 0, "2": 0.2, "3": 0, "4": 0.2, "5": 0.6})
    assert out[0]["statistics"]["history_items"] == 5


def test_counterfactual_rows_are_what_decoding_gives(model):
    from pplug.decode.explain import explain
    from pplug.decode.inference import personalize

    examples = _examples()
    out = explain(model, examples)
    assert [e["counterfactual"]["history"]["output"] for e in out] == personalize(model, examples)
    cold = [Example(ex.id, ex.input, []) for ex in examples]
    assert [e["counterfactual"]["cold_start"]["output"] for e in out] == personalize(model, cold)
    for e in out:
        for row in e["counterfactual"].values():
            assert sum(row["label_probs"].values()) == pytest.approx(1.0, abs=1e-5)
            assert row["expected_rating"] == pytest.approx(float(row["output"]), abs=1e-3)  # decoding "expected"
    # the user with no history: all three rows read no history, the persona the history tells is empty
    assert out[2]["counterfactual"]["history"] == out[2]["counterfactual"]["cold_start"]
    assert out[2]["counterfactual"]["persona_only"]["persona"] is None
    assert out[0]["counterfactual"]["persona_only"]["persona"]  # derived from the history when none is given
    persona = "A generous reviewer."
    given = explain(model, examples[:1], personas=[persona])[0]
    assert given["counterfactual"]["persona_only"]["persona"] == persona
    assert given["counterfactual"]["history"]["output"] == personalize(model, examples[:1], personas=[persona])[0]


def test_flipping_one_items_label_moves_only_what_it_should(model):
    from pplug.decode.explain import explain

    base = Example("a", REVIEW.format("the acting was great"), _items("55425"))
    flipped_items = [dict(it) for it in base.profile]
    flipped_items[1]["score"] = "1"  # item 1: 5 -> 1; its text is the same
    flipped = Example("a", base.input, flipped_items)
    persona = ["A reviewer."]  # the same persona both times: the persona row must not move either
    a, b = explain(model, [base], personas=persona)[0], explain(model, [flipped], personas=persona)[0]
    # the statistics move by exactly one item (1/5) from "5" to "1", nothing else
    sa, sb = a["statistics"]["label_shares"], b["statistics"]["label_shares"]
    assert sb["5"] == pytest.approx(sa["5"] - 0.2) and sb["1"] == pytest.approx(sa["1"] + 0.2)
    assert {k: sa[k] for k in "234"} == {k: sb[k] for k in "234"}
    assert a["statistics"]["history_items"] == b["statistics"]["history_items"]
    assert [it["label"] for it in b["items"]] == ["5", "1", "4", "2", "5"]
    # LaMP_3 embeds "<score> is the score for ..." so the flipped item's attention score changes; the other
    # items' input-aware weights keep their ratios (a softmax renormalises, it does not reorder)
    ra = [a["items"][j]["input_aware"] / a["items"][0]["input_aware"] for j in (2, 3, 4)]
    rb = [b["items"][j]["input_aware"] / b["items"][0]["input_aware"] for j in (2, 3, 4)]
    assert ra == pytest.approx(rb, rel=1e-4)
    assert a["counterfactual"]["cold_start"] == b["counterfactual"]["cold_start"]
    assert a["counterfactual"]["persona_only"] == b["counterfactual"]["persona_only"]
    assert a["counterfactual"]["history"]["label_probs"] != b["counterfactual"]["history"]["label_probs"]


def test_mean_aggregation_reads_every_item_alike(tiny_config):
    from pplug.decode.explain import explain
    from pplug.modeling.model import PPlugModel

    m = PPlugModel.from_config(dataclasses.replace(tiny_config, aggregation="mean"), cache_path=":memory:").eval()
    e = explain(m, _examples()[:1])[0]
    assert all(it["weight"] == pytest.approx(0.2) for it in e["items"])
    assert e["effective_items"]["exp_entropy"] == pytest.approx(5) and e["effective_items"]["inverse_simpson"] == \
        pytest.approx(5)
    assert e["attention"]["gate"] is None and e["statistics"] is None and e["label_token"] is None


def test_generation_task_and_refusals(gen_model, tiny_config):
    from pplug.decode.explain import explain, format_explanation
    from pplug.modeling.model import PPlugModel

    items = [{"id": "t1", "text": "good morning everyone", "title": "hello"},
             {"id": "t2", "text": "the city council voted", "title": "budget"}]
    ex = Example("g", "Generate a subject for the following email: the council meets at noon", items)
    e = explain(gen_model, [ex])[0]
    assert e["decoding"] == "greedy" and "label_probs" not in e["counterfactual"]["history"]
    assert isinstance(e["counterfactual"]["cold_start"]["output"], str)
    assert "label" not in e["items"][0]
    assert "cold_start" in format_explanation(e)
    none = PPlugModel.from_config(dataclasses.replace(tiny_config, method="prompt-tuned"), cache_path=":memory:")
    with pytest.raises(ValueError, match="has no user embedding"):
        explain(none, [ex])


def test_cli_explains_one_input_and_refuses_a_method_without_user_embedding(model, tiny_config, tmp_path, capsys):
    import json

    from pplug.cli.main import main
    from pplug.modeling.model import PPlugModel

    model.save_pretrained(tmp_path / "ck")
    (tmp_path / "h.json").write_text(json.dumps(_items("55425")))
    out = tmp_path / "why.json"
    assert main(["explain", "--checkpoint", str(tmp_path / "ck"), "--input", REVIEW.format("great acting"),
                 "--history", str(tmp_path / "h.json"), "--device", "cpu", "--top", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    (e,) = doc["explanations"]
    assert len(e["items"]) == 5 and len(e["top"]) == 2 and set(e["counterfactual"]) == {
        "history", "cold_start", "persona_only"}
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(tmp_path / "ck"), "--input", "x", "--history",
                 str(tmp_path / "h.json"), "--device", "cpu"]) == 0
    assert "cold_start" in capsys.readouterr().out
    PPlugModel.from_config(dataclasses.replace(tiny_config, method="prompt-tuned"),
                           cache_path=":memory:").save_pretrained(tmp_path / "pt")
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(tmp_path / "pt"), "--input", "x", "--history",
                 str(tmp_path / "h.json")]) == 2
    err = capsys.readouterr().err.strip()  # refused before any model is loaded: one line
    assert err.count("\n") == 0 and err.startswith("pplug explain: error:") and "has no user embedding" in err
