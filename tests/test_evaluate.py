"""`pplug evaluate`, prompts, BM25 retrieval, methods and no-model floors (tiny random models, offline)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pplug.core.tasks import get_task
from pplug.lamp.data import Example
from pplug.methods.batches import BM25, build_batch, retrieve
from pplug.methods.prompts import compose_prompt
from pplug.methods.registry import get_method, method_config

T3 = get_task("LaMP_3")
T5 = get_task("LaMP_5")


def _ex(i: str, content: str, profile: list[dict], output: str | None = "4") -> Example:
    return Example(id=i, input=T3.make_input(content), profile=profile, output=output)


PROFILE = [
    {"id": "a", "text": "the kettle broke after a week", "score": "1"},
    {"id": "b", "text": "great headphones with deep bass", "score": "5"},
    {"id": "c", "text": "the headphones are comfortable", "score": "4"},
]


def test_compose_prompt_layout():
    p = compose_prompt(T3, "What is the score ... review: nice bass", PROFILE[1:2], persona="Loves music.")
    assert p == ('Loves music.\n5 is the score for "great headphones with deep bass". '
                 "What is the score ... review: nice bass\nScore:")
    assert compose_prompt(T3, " x ", causal=False) == "x"  # seq2seq: no answer cue
    assert compose_prompt(T5, "abstract", causal=True).endswith("\nTitle:")
    long_item = {"id": "z", "text": " ".join(["w"] * 100), "score": "3"}
    assert compose_prompt(T3, "in", [long_item], max_item_words=5, causal=False).startswith('3 is the score for "w w w w w ...". in')


def test_retrieved_items_are_fitted_to_the_prompt_budget(tiny_causal_llm_dir, tiny_seq2seq_llm_dir):
    """Retrieved text gets what the instruction + input leave, or its guaranteed share of the limit; after the
    LLM's middle cut the retrieved text, the instruction and the answer cue are all still there."""
    from pplug.methods.prompts import MIN_CONTEXT_TOKENS, PromptBudget
    from pplug.modeling.llm import FrozenLLM, truncate_middle

    llm = FrozenLLM(str(tiny_causal_llm_dir), max_input_tokens=77)
    assert llm.prompt_budget().max_tokens == 77
    assert FrozenLLM(str(tiny_seq2seq_llm_dir), max_input_tokens=77).prompt_budget().max_tokens == 76  # + EOS
    tok = llm.tokenizer

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    items = [{"id": str(i), "text": " ".join(["filler"] * 40) + f" item{i}", "score": "5"} for i in range(3)]
    inp = T3.make_input("the bass on this record is deep and warm, a fine album for long drives")
    n_alone = n_tokens(compose_prompt(T3, inp))
    for limit in (n_alone + 40, n_alone + 200):  # room left over: history fills it, the input stays whole
        p = compose_prompt(T3, inp, items, budget=PromptBudget(tok, limit, min_context_share=0.0))
        assert p.endswith(compose_prompt(T3, inp))  # instruction, input and cue intact
        assert p.startswith('5 is the score for "filler')  # the most relevant item comes first
        assert n_tokens(p) <= limit + 2  # +2: the joins re-tokenise
    assert "item2" not in compose_prompt(T3, inp, items, budget=PromptBudget(tok, n_alone + 40, min_context_share=0))
    assert "item2" in compose_prompt(T3, inp, items, budget=PromptBudget(tok, n_alone + 5000))
    # too little room left and no guaranteed share: no fragment of history at all
    tight = PromptBudget(tok, n_alone + MIN_CONTEXT_TOKENS - 2, min_context_share=0.0)
    assert compose_prompt(T3, inp, items, budget=tight) == compose_prompt(T3, inp)

    # an input longer than the whole limit: history still gets its share, the LLM cuts the input's middle
    long_inp = T3.make_input(" ".join(f"word{i}" for i in range(400)))
    limit = 400
    p = compose_prompt(T3, long_inp, items, budget=PromptBudget(tok, limit, min_context_share=0.4))
    context = p[: p.index(". What is the score")]
    assert int(0.4 * limit) - 2 <= n_tokens(context) <= int(0.4 * limit) + 2
    kept = tok.decode(truncate_middle(tok(p, add_special_tokens=False)["input_ids"], limit))
    assert kept.startswith('5 is the score for "filler') and "What is the score of the following review" in kept
    assert kept.endswith("word399\nScore:") and "word200" not in kept


def test_bm25_ranks_matching_items_first_and_ties_by_recency():
    bm = BM25([PROFILE[0]["text"], PROFILE[1]["text"], PROFILE[2]["text"]])
    assert bm.top_k("headphones bass", 2) == [1, 2]
    assert bm.top_k("unrelated words", 2) == [2, 1]  # all zero: most recent first
    ex = _ex("1", "deep bass headphones", PROFILE)
    assert [it["id"] for it in retrieve(T3, ex, 1)] == ["b"]
    assert retrieve(T3, ex, 5, max_history=1) == [PROFILE[2]]


def test_methods_configs_and_batches(tiny_config):
    assert get_method("PPlug+Retrieval").retrieval_k == 1
    with pytest.raises(ValueError, match="unknown method"):
        get_method("lora")
    assert method_config(tiny_config, "prompt-tuned").use_user_embedding is False
    assert method_config(tiny_config, "pplug").use_user_embedding is True
    with pytest.raises(ValueError, match="no trainable parts"):
        method_config(tiny_config, "none")
    exs = [_ex("1", "deep bass headphones", PROFILE), _ex("2", "a kettle", [])]
    b = build_batch(T3, exs, "retrieval", retrieval_k=2)
    assert b.prompts[0].count("is the score for") == 2 and b.prompts[1].count("is the score for") == 0
    assert b.histories == [[], []] and b.targets == ["4", "4"]
    b = build_batch(T3, exs, "pplug", max_history=2, with_targets=False)
    assert b.histories[0] == [T3.history_text(it) for it in PROFILE[1:]] and b.targets is None
    assert b.queries == ["deep bass headphones", "a kettle"]


def test_floors():
    from pplug.decode.floors import floor_predictions

    exs = [_ex("1", "x", PROFILE), _ex("2", "y", [])]
    train = [_ex("t1", "a", [], "4"), _ex("t2", "b", [], "4"), _ex("t3", "c", [], "5")]
    f = floor_predictions(T3, exs, train)
    assert f["always-4"] == {"1": "4", "2": "4"}  # the training split's most common rating, not a fixed 5
    assert float(f["user mean rating"]["1"]) == pytest.approx(10 / 3, abs=1e-3)
    assert f["user majority rating"]["1"] == "5"  # 1, 5 and 4 once each: a tie goes to the higher rating
    assert f["user mean rating"]["2"] == f["user majority rating"]["2"] == "4"  # no history: the global majority


def test_first_words_floor_is_fitted_on_train_by_rouge():
    """N is the length whose prefix scores best on the training golds, not their median length: here every
    gold is the input's first 5 words followed by words the input does not hold."""
    from pplug.decode.floors import floor_predictions

    words = "one two three four five six seven eight nine ten".split()
    train = [Example(id=f"t{i}", input=T5.make_input(" ".join(words)), profile=[],
                     output=" ".join(words[:5] + ["x"] * 10)) for i in range(4)]
    ex5 = Example(id="9", input=T5.make_input(" ".join(words)), profile=[{"id": "p", "title": "Old", "abstract": "a"}],
                  output="t")
    f5 = floor_predictions(T5, [ex5], train)
    assert f5["first 5 words"] == {"9": "one two three four five"}
    assert f5["user's nearest past title"] == {"9": "Old"}


def test_data_floors_fit_on_the_split_the_methods_trained_on(tmp_path):
    """A slice held out of training stays out of the floors' fitting: `train` (here golds of 2 words) and `fit`
    (golds of 6) pick different N, and each call reads the split it names."""
    from pplug.decode.floors import data_floors
    from pplug.lamp.data import write_split

    words = "one two three four five six seven eight nine ten".split()

    def golds(n):
        return [Example(id=f"t{i}", input=T5.make_input(" ".join(words)), profile=[],
                        output=" ".join(words[:n] + ["x"] * 4)) for i in range(4)]

    write_split(tmp_path, "train", T5.name, golds(2))
    write_split(tmp_path, "fit", T5.name, golds(6))
    ex = Example(id="9", input=T5.make_input(" ".join(words)), profile=[], output="t")
    assert "first 2 words" in data_floors(T5, [ex], tmp_path)
    assert "first 6 words" in data_floors(T5, [ex], tmp_path, train_split="fit")


def test_nearest_past_output_picks_the_most_similar_item():
    from pplug.decode.floors import nearest_past_output

    profile = [{"id": "a", "abstract": "graph neural networks for molecules", "title": "Graphs"},
               {"id": "b", "abstract": "speech recognition with transformers", "title": "Speech"}]
    ex = Example(id="1", input=T5.make_input("a transformer for speech recognition"), profile=profile, output="t")
    assert nearest_past_output(T5, ex) == "Speech"
    assert nearest_past_output(T5, Example(id="2", input=ex.input, profile=[], output="t")) == ""


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from pplug.synth.generate import make_synthetic

    out = tmp_path_factory.mktemp("synth_eval")
    make_synthetic(out, kind="ratings", n_users=4, min_train=1, max_train=2, min_history=2, max_history=4)
    return out


@pytest.fixture(scope="module")
def runs(tiny_config, tmp_path_factory) -> Path:
    """A folder of runs with one final/ per method, as benchmarks/bench_real_lamp.py lays them out."""
    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.model import PPlugModel

    root = tmp_path_factory.mktemp("runs")
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    for method in ("pplug", "prompt-tuned"):
        cfg = method_config(tiny_config, method)
        PPlugModel.from_config(cfg, history_encoder=enc).save_pretrained(root / method / "final")
    return root


def test_resolve_checkpoint_forms(runs, tmp_path):
    from pplug.decode.evaluate import resolve_checkpoints

    r = resolve_checkpoints([str(runs)])
    assert set(r) == {"pplug", "prompt-tuned"}
    assert r["pplug"].checkpoint == runs / "pplug" / "final"
    r = resolve_checkpoints([f"retrieval={runs / 'prompt-tuned'}", str(runs / "pplug" / "final")])
    assert set(r) == {"retrieval", "pplug"}
    # a saved folder names its own method and retrieval settings...
    r = resolve_checkpoints([str(runs / "prompt-tuned")])
    assert set(r) == {"prompt-tuned"} and r["prompt-tuned"].checkpoint == runs / "prompt-tuned" / "final"
    # ...and a folder saved before pplug_config.json recorded them (format 1) takes them from the train.py
    # config.yaml beside it
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(runs / "prompt-tuned", old)
    doc = json.loads((old / "final" / "pplug_config.json").read_text())
    for key in ("method", "retrieval_k", "retriever", "decoding"):
        doc.pop(key)
    doc["format_version"] = 1
    (old / "final" / "pplug_config.json").write_text(json.dumps(doc))
    (old / "config.yaml").write_text("model:\n  method: retrieval\n  retrieval_k: 3\n")
    r = resolve_checkpoints([str(old)])
    assert set(r) == {"retrieval"} and r["retrieval"].retrieval_k == 3
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoints([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no pplug_config.json"):
        resolve_checkpoints([str(tmp_path / "empty")])


def test_evaluate_all_methods_side_by_side(runs, synth, tmp_path, capsys):
    from pplug.cli.main import main

    out = tmp_path / "preds.json"
    rc = main(["evaluate", "--checkpoint", str(runs), "--data", str(synth), "--split", "dev", "--out", str(out),
               "--method", "none", "prompt-tuned", "pplug", "pplug+retrieval", "--max-examples", "5", "--floors",
               "--embedding-cache", str(tmp_path / "c.sqlite")])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for row in ("none [argmax]", "prompt-tuned [argmax]", "pplug [argmax]", "pplug+retrieval [argmax]",
                "floor: user mean rating", "floor: user majority rating"):
        assert f"| {row} |" in printed
    report = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert report["notes"]["pplug+retrieval"].startswith("pplug weights")
    ids = None
    for row, path in report["files"].items():
        doc = json.loads(Path(path).read_text())
        assert doc["task"] == "LaMP_3"
        got = sorted(g["id"] for g in doc["golds"])
        assert ids is None or got == ids  # the same examples for every method
        ids = got
        assert all(g["output"] in {"1", "2", "3", "4", "5"} for g in doc["golds"])
    assert len(ids) == 5
    # the metrics file re-scores to the same numbers (`pplug score` code path)
    from pplug.lamp.data import load_outputs, load_split
    from pplug.lamp.metrics import score

    golds = {ex.id: ex.output for ex in load_split(synth, "dev").examples if ex.id in set(ids)}
    _, p = load_outputs(report["files"]["pplug [argmax]"])
    assert score("LaMP_3", p, golds) == pytest.approx(report["metrics"]["pplug [argmax]"])


def test_evaluate_defaults_to_each_checkpoints_saved_decoding(tiny_config, synth, tmp_path):
    """What a user gets is what is scored: with no --decoding, a checkpoint saved with `median` is scored with
    median, and the row says so."""
    import dataclasses

    from pplug.decode.evaluate import evaluate
    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.model import PPlugModel

    cfg = dataclasses.replace(method_config(tiny_config, "pplug"), decoding="median")
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    PPlugModel.from_config(cfg, history_encoder=enc).save_pretrained(tmp_path / "median")
    report = evaluate([f"pplug={tmp_path / 'median'}"], str(synth), methods=["none", "pplug"], max_examples=3,
                      out=str(tmp_path / "p.json"), progress=False)
    assert set(report["metrics"]) == {"none [median]", "pplug [median]"}
    report = evaluate([f"pplug={tmp_path / 'median'}"], str(synth), methods=["pplug"], max_examples=3,
                      decodings=["argmax"], out=str(tmp_path / "q.json"), progress=False)
    assert set(report["metrics"]) == {"pplug [argmax]"}


def test_evaluate_none_alone_and_errors(tiny_config, synth, tmp_path, capsys):
    from pplug.cli.main import main

    out = tmp_path / "dev_preds.none.json"  # one row goes to exactly this file, dots in its name and all
    assert main(["evaluate", "--data", str(synth), "--method", "none", "--base-model",
                 tiny_config.base_model_name_or_path, "--out", str(out), "--max-examples", "3",
                 "--decoding", "expected"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev_preds.none.json", "dev_preds.none.metrics.json"]
    doc = json.loads(out.read_text())
    assert len(doc["golds"]) == 3 and all(1.0 <= float(g["output"]) <= 5.0 for g in doc["golds"])
    rc = main(["evaluate", "--data", str(synth), "--method", "pplug", "--base-model",
               tiny_config.base_model_name_or_path])
    assert rc == 2
    assert "needs trained weights" in capsys.readouterr().err


def test_evaluate_seq2seq_generation_task(tiny_config, tiny_seq2seq_llm_dir, tmp_path):
    """A generation task on a seq2seq LLM: prompts without the cue, first line of greedy output kept."""
    from pplug.decode.evaluate import evaluate
    from pplug.lamp.data import write_split

    exs = [Example(id=str(i), input=T5.make_input(f"we propose method {i}"), output="A title",
                   profile=[{"id": "p", "title": "Old title", "abstract": "old abstract"}]) for i in range(3)]
    write_split(tmp_path / "d", "dev", "LaMP_5", exs)
    report = evaluate([], str(tmp_path / "d"), methods=["none"], base_model=str(tiny_seq2seq_llm_dir),
                      out=str(tmp_path / "p.json"), floors=True, progress=False)
    assert set(report["metrics"]) == {"none [argmax]", "floor: first 2 words", "floor: user's nearest past title"}
    assert set(report["metrics"]["none [argmax]"]) == {"rouge1", "rougeL"}
    doc = json.loads((tmp_path / "p.json").read_text())
    assert all("\n" not in g["output"] for g in doc["golds"])
    # a generation budget cuts every output short: greedy, so each is a prefix of the task-budget output
    evaluate([], str(tmp_path / "d"), methods=["none"], base_model=str(tiny_seq2seq_llm_dir),
             out=str(tmp_path / "short.json"), progress=False, max_new_tokens=2)
    short = {g["id"]: g["output"] for g in json.loads((tmp_path / "short.json").read_text())["golds"]}
    full = {g["id"]: g["output"] for g in doc["golds"]}
    assert all(full[i].startswith(short[i]) for i in full)
    assert sum(map(len, short.values())) < sum(map(len, full.values()))


def test_dataclass_replace_keeps_other_fields(tiny_config):
    cfg = method_config(dataclasses.replace(tiny_config, temperature=0.5), "pplug")
    assert cfg.temperature == 0.5 and cfg.base_model_name_or_path == tiny_config.base_model_name_or_path


def test_benchmarks_scored_decodings_apply_to_every_task():
    """The benchmarks pass SCORED_DECODINGS for every set: `evaluate` must accept them for any task (a list
    with generation-only decodings once made every rating benchmark fail after training)."""
    from pplug.core.tasks import TASKS
    from pplug.decode.inference import SCORED_DECODINGS

    for task in TASKS.values() if isinstance(TASKS, dict) else TASKS:
        assert all(d in task.decodings or d in ("expected", "median") for d in SCORED_DECODINGS), task.name


def test_methods_after_the_prompt_share_each_questions_prefill(tiny_config, synth, tmp_path):
    """With the soft prompt after the prompt, the frozen LLM alone prefills each question once and the methods
    with soft prompts read that prefill: the same scores as methods that prefill for themselves."""
    from pplug.decode.evaluate import evaluate
    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.model import PPlugModel

    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    for method in ("pplug", "prompt-tuned"):
        cfg = dataclasses.replace(method_config(tiny_config, method), soft_prompt_position="after_prompt")
        PPlugModel.from_config(cfg, history_encoder=enc).save_pretrained(tmp_path / method)
    checkpoints = [f"{m}={tmp_path / m}" for m in ("pplug", "prompt-tuned")]
    runs = {share: evaluate(checkpoints, str(synth), methods=["none", "prompt-tuned", "pplug"], max_examples=6,
                            decodings=["argmax", "expected", "median"], out=str(tmp_path / f"{share}.json"),
                            progress=False, share_prefill=share) for share in (True, False)}
    shared, alone = runs[True], runs[False]
    prefilled = shared["prefill"]["prompts_prefilled"]  # the distinct prompts (two questions may read alike)
    assert 0 < prefilled <= shared["n"] and shared["prefill"]["prompts_reused"] == 2 * prefilled
    assert "prefill" not in alone
    assert set(shared["metrics"]) == set(alone["metrics"]) and len(shared["metrics"]) == 9
    for row, metrics in alone["metrics"].items():
        assert shared["metrics"][row] == pytest.approx(metrics, abs=1e-6), row


def test_generation_after_the_prompt_shares_each_questions_prefill_between_methods(tiny_config, tmp_path):
    """A generation task: the frozen LLM alone, prompt-tuned and PPlug generate after one prefill per question,
    with the outputs of methods that prefill for themselves."""
    from pplug.decode.evaluate import evaluate
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import write_split
    from pplug.modeling.model import PPlugModel

    exs = [Example(id=str(i), input=T5.make_input(f"we propose method {i} for parsing"), output="A parsing title",
                   profile=[{"id": f"p{i}{j}", "title": f"Old title {j}", "abstract": f"old abstract {i} {j}"}
                            for j in range(2)]) for i in range(4)]
    write_split(tmp_path / "d", "dev", "LaMP_5", exs)
    enc = HistoryEncoder(tiny_config.encoder_name_or_path, cache_path=":memory:")
    for method in ("pplug", "prompt-tuned"):
        cfg = dataclasses.replace(method_config(tiny_config, method), task="LaMP_5", soft_prompt_position="after_prompt")
        PPlugModel.from_config(cfg, history_encoder=enc).save_pretrained(tmp_path / method)
    checkpoints = [f"{m}={tmp_path / m}" for m in ("pplug", "prompt-tuned")]
    runs = {share: evaluate(checkpoints, str(tmp_path / "d"), methods=["none", "prompt-tuned", "pplug"],
                            out=str(tmp_path / f"{share}.json"), progress=False, share_prefill=share,
                            max_new_tokens=6) for share in (True, False)}
    shared, alone = runs[True], runs[False]
    assert shared["prefill"] == {"prompts_prefilled": 4, "prompts_reused": 8} and "prefill" not in alone
    assert set(shared["metrics"]) == set(alone["metrics"]) and len(shared["metrics"]) == 3
    for row, metrics in alone["metrics"].items():
        assert shared["metrics"][row] == pytest.approx(metrics, abs=1e-6), row
    for name in ("none", "prompt-tuned", "pplug"):  # the same generated text, method by method
        texts = [json.loads((tmp_path / f"{share}.{name}.argmax.json").read_text())["golds"] for share in (True, False)]
        assert texts[0] == texts[1] and len(texts[0]) == 4, name
