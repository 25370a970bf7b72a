"""The LoRA hub (`pplug.hub.model`): save/load, retrieval by persona, merged and per-row adapters, training.

Tiny random Llama + tiny random BERT encoder from conftest. Fresh adapters start as the frozen LLM itself
(peft sets B = 0), so `_randomise` gives every adapter its own non-zero update before outputs are compared.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pplug.hub.config import BASE, GENERAL, HubError, LoRAHubConfig, Retrieval
from pplug.hub.model import LoRAHub

LABELS = ["1", "2", "3", "4", "5"]
PROMPTS = ["review: the movie was great and I loved the acting\nScore:", "review: terrible service\nScore:",
           "review: okay I guess\nScore:", "review: would buy again\nScore:"]


def _llm(path):
    from pplug.modeling.llm import FrozenLLM

    return FrozenLLM(str(path), dtype="float32", device="cpu", max_input_tokens=64, max_target_tokens=16)


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    from pplug.encode.history import HistoryEncoder

    return HistoryEncoder(str(tiny_encoder_dir), cache_path=":memory:", device="cpu")


def _profile(rating: int, n: int, topic: str) -> list[dict]:
    return [{"id": f"{topic}{i}", "text": f"{topic} review number {i}: it was {topic}", "score": str(rating)}
            for i in range(n)]


PROFILES = {"harsh": _profile(1, 4, "terrible"), "generous": _profile(5, 6, "wonderful"),
            "middling": _profile(3, 2, "average")}


def _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, seed: int = 0, **config) -> LoRAHub:
    llm = _llm(tiny_causal_llm_dir)
    cfg = LoRAHubConfig(task="LaMP_3", base_model_name_or_path=str(tiny_causal_llm_dir),
                        encoder_name_or_path=str(tiny_encoder_dir), r=4, **config)
    descriptions = {name: cfg.persona_text(prof) for name, prof in PROFILES.items()}
    hub = LoRAHub(llm, cfg, descriptions, encoder)
    _randomise(hub, seed)
    return hub


def _randomise(hub: LoRAHub, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hub.llm.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_hub_save_load_round_trip_gives_the_same_outputs(tiny_causal_llm_dir, tiny_encoder_dir, encoder, tmp_path):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    names = ["harsh", "generous", GENERAL, "middling"]
    before = hub.choice_logprobs(PROMPTS, LABELS, names)
    out = hub.save_pretrained(tmp_path / "hub", training={"groups": [1, 2, 3]})
    assert sorted(p.name for p in out.iterdir()) == ["adapters", "descriptions.safetensors", "hub.json"]
    assert sorted(p.name for p in (out / "adapters").iterdir()) == sorted(["general", *PROFILES])
    for folder in (out / "adapters").iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    doc = json.loads((out / "hub.json").read_text())
    assert [a["name"] for a in doc["adapters"]] == list(PROFILES) and doc["training"] == {"groups": [1, 2, 3]}

    loaded = LoRAHub.from_pretrained(out, _llm(tiny_causal_llm_dir), encoder=encoder)
    assert loaded.names == hub.names and loaded.descriptions == hub.descriptions
    torch.testing.assert_close(loaded.description_embeddings, hub.description_embeddings)
    torch.testing.assert_close(loaded.choice_logprobs(PROMPTS, LABELS, names), before)
    assert not any(p.requires_grad for p in loaded.llm.model.parameters())
    # saving over an existing hub replaces it in place
    hub.save_pretrained(out)
    assert "training" not in json.loads((out / "hub.json").read_text())


def test_retrieval_picks_the_adapter_whose_description_matches_the_persona(tiny_causal_llm_dir, tiny_encoder_dir,
                                                                            encoder):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, top_k=2, temperature=0.05)
    got = hub.retrieve_for_histories([PROFILES["generous"], PROFILES["harsh"], []])
    assert got[0].adapters[0] == "generous" and got[1].adapters[0] == "harsh"
    for r in got[:2]:
        assert len(r.adapters) == 2 and abs(sum(r.weights) - 1) < 1e-5 and r.weights[0] > r.weights[1]
        assert r.scores[0] == pytest.approx(1.0, abs=1e-3)  # the persona text is the description itself
    assert got[2].cold_start and got[2].adapters == [GENERAL] and got[2].weights == [1.0]
    hotter = hub.retrieve([hub.persona_text(PROFILES["generous"])], temperature=10.0)[0]
    assert hotter.weights[0] < got[0].weights[0]  # a higher temperature spreads the weight


def test_a_mixed_batch_equals_each_row_alone_with_its_adapter(tiny_causal_llm_dir, tiny_encoder_dir, encoder):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    mix = hub.merge(Retrieval(["harsh", "generous"], [0.7, 0.3]))
    names = ["harsh", mix, GENERAL, BASE]
    mixed = hub.choice_logprobs(PROMPTS, LABELS, names)
    multi = hub.choice_logprobs(PROMPTS, ["4 stars", "one star"], names)  # one row per choice inside
    texts = hub.generate(PROMPTS, names, max_new_tokens=4)
    beams = hub.generate(PROMPTS, names, max_new_tokens=3, num_beams=2)
    for i, name in enumerate(names):
        with hub.use(name):
            torch.testing.assert_close(hub.llm.choice_logprobs(None, PROMPTS[i:i + 1], LABELS), mixed[i:i + 1])
            torch.testing.assert_close(hub.llm.choice_logprobs(None, PROMPTS[i:i + 1], ["4 stars", "one star"]),
                                       multi[i:i + 1])
            assert hub.llm.generate(None, PROMPTS[i:i + 1], max_new_tokens=4) == texts[i:i + 1]
            assert hub.llm.generate(None, PROMPTS[i:i + 1], max_new_tokens=3, num_beams=2) == beams[i:i + 1]
    assert len({tuple(r.tolist()) for r in mixed}) == len(names)  # the adapters do differ
    with hub.use(BASE):  # "__base__" is the frozen LLM alone
        base = hub.llm.choice_logprobs(None, PROMPTS, LABELS)
    torch.testing.assert_close(base[3:], mixed[3:])
    assert not torch.allclose(base[:1], mixed[:1])


def test_cat_merge_is_the_weighted_sum_of_the_adapters_updates(tiny_causal_llm_dir, tiny_encoder_dir, encoder):
    from peft.tuners.lora import LoraLayer

    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    weights = [0.6, 0.4]
    mix = hub.merge(Retrieval(["harsh", "middling"], weights))
    assert hub.merge(Retrieval(["harsh", "middling"], weights)) == mix  # made once
    layer = next(m for m in hub.llm.model.modules() if isinstance(m, LoraLayer))

    def delta(name):
        return layer.lora_B[name].weight @ layer.lora_A[name].weight * layer.scaling[name]

    torch.testing.assert_close(delta(mix), weights[0] * delta("harsh") + weights[1] * delta("middling"))
    assert hub.merge(Retrieval(["generous"], [1.0])) == "generous"  # one adapter is used as is


def test_fast_adaptation_new_history_changes_the_retrieved_adapters(tiny_causal_llm_dir, tiny_encoder_dir, encoder):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, top_k=2)
    new_items = _profile(1, 6, "awful")
    hub.set_description("harsh", hub.persona_text(PROFILES["middling"] + new_items))  # a group that turned harsh
    history = list(PROFILES["middling"])
    before = hub.retrieve_for_histories([history])[0]
    assert before.adapters[0] == "middling"
    history += new_items  # `pplug user add-history`: no training, only a new persona text
    after = hub.retrieve_for_histories([history])[0]
    assert after.adapters[0] == "harsh" and after.adapters != before.adapters
    assert hub.persona_text(history) != hub.persona_text(PROFILES["middling"])


def test_unknown_adapter_names_give_one_clear_error(tiny_causal_llm_dir, tiny_encoder_dir, encoder):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    for call in (lambda: hub.choice_logprobs(PROMPTS[:1], LABELS, ["nope"]),
                 lambda: hub.merge(Retrieval(["harsh", "nope"], [0.5, 0.5])),
                 lambda: hub.use("nope").__enter__()):
        with pytest.raises(HubError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "'nope'" in msg and "general, harsh, generous, middling" in msg


def _corrupt(kind: str, hub_dir):
    if kind == "no hub.json":
        (hub_dir / "hub.json").unlink()
        return "hub.json: missing"
    if kind == "corrupt hub.json":
        (hub_dir / "hub.json").write_text("{not json")
        return "hub.json: corrupt JSON"
    doc = json.loads((hub_dir / "hub.json").read_text())
    if kind == "unknown config key":
        doc["config"]["rank"] = 3
        (hub_dir / "hub.json").write_text(json.dumps(doc))
        return "field 'config': unknown key 'rank'"
    if kind == "unlisted adapter":
        doc["adapters"].append({"name": "ghost", "description": "x"})
        (hub_dir / "hub.json").write_text(json.dumps(doc))
        return "adapters/ghost: adapter folder missing"
    if kind == "missing adapter folder":
        shutil.rmtree(hub_dir / "adapters" / "harsh")
        return "adapters/harsh: adapter folder missing"
    if kind == "corrupt adapter weights":
        (hub_dir / "adapters" / "generous" / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
        return "adapters/generous/adapter_model.safetensors: corrupt safetensors file"
    if kind == "corrupt adapter config":
        (hub_dir / "adapters" / "general" / "adapter_config.json").write_text("[")
        return "adapters/general/adapter_config.json: corrupt JSON"
    if kind == "wrong description shape":
        from safetensors.torch import save_file

        save_file({"description_embeddings": torch.zeros(2, 5)}, str(hub_dir / "descriptions.safetensors"))
        return "descriptions.safetensors: 'description_embeddings' must be (3, 16)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["no hub.json", "corrupt hub.json", "unknown config key", "unlisted adapter",
                                  "missing adapter folder", "corrupt adapter weights", "corrupt adapter config",
                                  "wrong description shape"])
def test_bad_hub_folders_give_one_clear_error(kind, saved_hub, tiny_causal_llm_dir, encoder, tmp_path):
    hub_dir = tmp_path / "hub"
    shutil.copytree(saved_hub, hub_dir)
    expected = _corrupt(kind, hub_dir)
    with pytest.raises(HubError) as e:
        LoRAHub.from_pretrained(hub_dir, _llm(tiny_causal_llm_dir), encoder=encoder)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_hub_for_another_base_llm_or_encoder_is_refused(saved_hub, tiny_seq2seq_llm_dir, tiny_causal_llm_dir,
                                                          encoder):
    with pytest.raises(HubError) as e:
        LoRAHub.from_pretrained(saved_hub, _llm(tiny_seq2seq_llm_dir), encoder=encoder)
    msg = str(e.value)
    assert "hub.json: field 'base_model': made for base LLM" in msg and "model_type saved='llama'" in msg
    assert "\n" not in msg
    from types import SimpleNamespace

    with pytest.raises(HubError, match=r"hub.json: field 'encoder': made with encoder .* but the given one is 'other'"):
        LoRAHub.from_pretrained(saved_hub, _llm(tiny_causal_llm_dir), encoder=SimpleNamespace(identity="other", dim=16))
    with pytest.raises(HubError, match="hub folder not found"):
        LoRAHub.from_pretrained(saved_hub.parent / "nowhere", _llm(tiny_causal_llm_dir), encoder=encoder)


@pytest.fixture(scope="module")
def saved_hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, tmp_path_factory):
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    return hub.save_pretrained(tmp_path_factory.mktemp("saved") / "hub")


def _write_data(root):
    from pplug.core.tasks import get_task
    from pplug.lamp.data import Example, write_split

    task = get_task("LaMP_3")
    examples = []
    for u in range(6):
        rating, topic = (1, "terrible") if u % 2 else (5, "wonderful")
        profile = _profile(rating, 2 + u, f"{topic}{u}")
        for q in range(2):
            examples.append(Example(f"u{u}q{q}", task.make_input(f"the product number {q} was {topic}"), profile,
                                    output=str(rating), user_id=f"u{u}"))
    examples.append(Example("new", task.make_input("a first review"), [], output="3", user_id="newcomer"))
    write_split(root, "train", "LaMP_3", examples)
    return examples


def test_pplug_hub_train_groups_users_and_trains_one_adapter_per_group(tiny_causal_llm_dir, tiny_encoder_dir,
                                                                       encoder, tmp_path, capsys):
    from peft.tuners.lora import LoraLayer

    from pplug.cli.main import main

    _write_data(tmp_path / "data")
    out = tmp_path / "hub"
    argv = ["hub", "train", "--data", str(tmp_path / "data"), "--out", str(out), "--k", "2", "--r", "4",
            "--base-model", str(tiny_causal_llm_dir), "--encoder", str(tiny_encoder_dir), "--embedding-cache",
            str(tmp_path / "cache.sqlite"), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2",
            "--device", "cpu", "--dtype", "float32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 2 group adapters + general on 13 LaMP_3 examples of 7 users" in printed
    doc = json.loads((out / "hub.json").read_text())
    adapters = doc["training"]["adapters"]
    assert sorted(adapters) == ["general", "group-00", "group-01"]
    assert adapters["group-00"]["users"] + adapters["group-01"]["users"] == 6  # the newcomer has no history
    assert adapters["general"]["users"] == 7 and adapters["general"]["examples"] == 13
    assert all(a["steps"] == 2 for a in adapters.values())

    hub = LoRAHub.from_pretrained(out, _llm(tiny_causal_llm_dir), encoder=encoder)
    layer = next(m for m in hub.llm.model.modules() if isinstance(m, LoraLayer))
    for name in hub.adapter_names:  # peft starts B at 0: every adapter has moved
        assert layer.lora_B[name].weight.abs().sum() > 0
    for name in hub.names:  # each description is one user's persona text, which retrieves its own group
        assert hub.retrieve([hub.descriptions[name]])[0].adapters[0] == name
    assert main(argv) == 2  # an existing hub is kept unless --overwrite
    assert "a hub is already there" in capsys.readouterr().err

    # `pplug hub retrieve`: the description's own history retrieves its group; no history -> general
    central = next(ex.profile for ex in _write_data(tmp_path / "again")
                   if hub.persona_text(ex.profile) == hub.descriptions["group-01"])
    (tmp_path / "h.json").write_text(json.dumps(central))
    (tmp_path / "empty.json").write_text("[]")
    retrieve = ["hub", "retrieve", "--hub", str(out), "--embedding-cache", str(tmp_path / "cache.sqlite")]
    assert main(retrieve + ["--history", str(tmp_path / "h.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"persona: {hub.descriptions['group-01']}" and lines[1].startswith("retrieved: group-01 ")
    assert "(cosine 1.000)" in lines[1]
    assert main(retrieve + ["--history", str(tmp_path / "empty.json")]) == 0
    assert capsys.readouterr().out == "no history: cold start, the general adapter\n"


def test_users_group_by_history_too_and_too_few_users_are_refused(encoder):
    import numpy as np

    from pplug.core.tasks import get_task
    from pplug.hub.train import group_users, user_embeddings

    profiles = [PROFILES["harsh"], PROFILES["harsh"][:3], PROFILES["generous"], PROFILES["generous"][1:]]
    emb = user_embeddings(encoder, get_task("LaMP_3"), profiles, [], "history", None)
    assert emb.shape == (4, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    labels, central = group_users(emb, 2, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert {int(labels[c]) for c in central} == {0, 1}  # each group's central user belongs to it
    with pytest.raises(ValueError, match="3 groups need at least 3 users with history; the data has 2"):
        group_users(emb[:2], 3)


def test_rows_of_one_prompt_through_different_adapters_are_not_shared_after_the_prompt(tiny_causal_llm_dir,
                                                                                       tiny_encoder_dir, encoder):
    """After the prompt, rows that read one prompt share its prefill, but a LoRA changes the prompt's keys:
    inside `rows` every row prefills its own prompt through its own adapter (one item for many users)."""
    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, seed=1)
    names = ["harsh", "generous", BASE]
    prompts = [PROMPTS[0]] * len(names)
    soft = torch.randn(len(names), 2, hub.llm.token_dim, generator=torch.Generator().manual_seed(2)) * 0.5
    after = {"position": "after_prompt"}
    with hub.rows(names):
        scores = hub.llm.choice_logprobs(soft, prompts, LABELS, **after)
        multi = hub.llm.choice_logprobs(soft, prompts, ["4 stars", "one star"], **after)
        texts = hub.llm.generate(soft, prompts, max_new_tokens=4, **after)
    for i, name in enumerate(names):
        with hub.use(name):
            torch.testing.assert_close(hub.llm.choice_logprobs(soft[i:i + 1], prompts[:1], LABELS, **after),
                                       scores[i:i + 1])
            torch.testing.assert_close(hub.llm.choice_logprobs(soft[i:i + 1], prompts[:1], ["4 stars", "one star"],
                                                               **after), multi[i:i + 1])
            assert hub.llm.generate(soft[i:i + 1], prompts[:1], max_new_tokens=4, **after) == texts[i:i + 1]
    assert len({tuple(r.tolist()) for r in scores}) == len(names)  # the adapters do differ
