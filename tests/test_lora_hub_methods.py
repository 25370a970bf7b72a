"""The LoRA hub as methods (`lora-hub`, `pplug+lora-hub`): evaluate, generate, personalize, serve, add-history, and
its slow adaptation (versions, promote, rollback). Tiny random models; the hub helpers are test_lora_hub's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_lora_hub import LABELS, PROFILES, _hub, _llm, _profile, _randomise  # noqa: F401  (fixtures: conftest)

from pplug.core.tasks import get_task
from pplug.hub.config import GENERAL
from pplug.hub.model import LoRAHub
from pplug.lamp.data import Example

T3 = get_task("LaMP_3")
ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    from pplug.encode.history import HistoryEncoder

    return HistoryEncoder(str(tiny_encoder_dir), cache_path=":memory:", device="cpu")


@pytest.fixture(scope="module")
def hub_dir(tiny_causal_llm_dir, tiny_encoder_dir, encoder, tmp_path_factory) -> Path:
    """A saved hub of three adapters (harsh, generous, middling) + general, on the tiny causal LLM."""
    return _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder).save_pretrained(
        tmp_path_factory.mktemp("hub") / "hub")


@pytest.fixture(scope="module")
def pplug_run(tiny_config, tmp_path_factory) -> Path:
    from pplug.modeling.model import PPlugModel

    root = tmp_path_factory.mktemp("run") / "pplug"
    cfg = dataclasses.replace(tiny_config, max_history=8)
    PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(root / "final")
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from pplug.synth.generate import make_synthetic

    out = tmp_path_factory.mktemp("synth_hub")
    make_synthetic(out, kind="ratings", n_users=4, min_train=1, max_train=2, min_history=2, max_history=4)
    return out


def _examples() -> list[Example]:
    rows = [("harsh", "the kettle broke"), ("generous", "lovely headphones"), ("middling", "fine I guess"),
            ("newcomer", "a first review")]
    return [Example(f"{u}-q", T3.make_input(text), PROFILES.get(u, []), output="3", user_id=u) for u, text in rows]


def test_method_table_has_the_hub_rows(tiny_config):
    from pplug.methods.registry import get_method, method_config

    assert get_method("lora-hub").plugin == "hub" and not get_method("lora-hub").trainable
    assert get_method("pplug+lora-hub").plugin == "hub" and get_method("pplug+lora-hub").use_user_embedding
    assert get_method("pplug+lora-hub").weights_of == "pplug"
    assert not any(get_method(m).plugin for m in ("none", "prompt-tuned", "retrieval", "pplug", "pplug+retrieval"))
    from pplug.methods.registry import get_plugin

    assert get_plugin("hub").method_for("pplug").name == "pplug+lora-hub"
    with pytest.raises(ValueError, match="combines with a 'pplug' .* this one is 'prompt-tuned'"):
        get_plugin("hub").method_for("prompt-tuned")
    with pytest.raises(ValueError, match="train method 'pplug'"):
        dataclasses.replace(tiny_config, method="pplug+lora-hub")
    with pytest.raises(ValueError, match="no trainable parts"):
        method_config(tiny_config, "lora-hub")


def test_both_hub_rows_run_in_evaluate_and_leave_the_other_methods_as_they_are(pplug_run, hub_dir, synth, tmp_path,
                                                                             capsys):
    from pplug.cli.main import main

    common = ["evaluate", "--checkpoint", str(pplug_run), "--data", str(synth), "--max-examples", "6",
              "--decoding", "expected", "--embedding-cache", str(tmp_path / "c.sqlite"), "--device", "cpu"]
    assert main(common + ["--method", "none", "pplug", "--out", str(tmp_path / "plain.json")]) == 0
    assert main(common + ["--hub", str(hub_dir), "--out", str(tmp_path / "hub.json")]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for row in ("none", "pplug", "pplug+retrieval", "lora-hub", "pplug+lora-hub"):
        assert f"| {row} [expected] |" in printed
    report = json.loads((tmp_path / "hub.metrics.json").read_text())
    assert report["hub"] == str(hub_dir) and report["notes"]["pplug+lora-hub"].startswith("pplug weights + hub ")
    plain = json.loads((tmp_path / "plain.metrics.json").read_text())

    def preds(path):
        return {g["id"]: g["output"] for g in json.loads(Path(path).read_text())["golds"]}

    for m in ("none [expected]", "pplug [expected]"):  # byte-identical with a hub loaded on the same LLM
        assert preds(report["files"][m]) == preds(plain["files"][m])
    assert preds(report["files"]["lora-hub [expected]"]) != preds(plain["files"]["none [expected]"])  # adapters act
    assert preds(report["files"]["pplug+lora-hub [expected]"]) != preds(plain["files"]["pplug [expected]"])
    # a hub method without a hub: one line
    assert main(common + ["--method", "lora-hub"]) == 2
    assert "method 'lora-hub' needs a LoRA hub: pass --hub DIR" in capsys.readouterr().err


def test_lora_hub_on_a_batch_of_users_equals_each_user_alone(tiny_causal_llm_dir, tiny_encoder_dir, encoder,
                                                             pplug_run):
    from pplug.decode.inference import FrozenBaseline, personalize
    from pplug.hub.methods import load_hub
    from pplug.methods.batches import build_batch
    from pplug.methods.registry import method_rows
    from pplug.modeling.model import PPlugModel

    hub = _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder)
    exs = _examples()
    model = FrozenBaseline(hub.llm)

    def logp(rows):
        batch = build_batch(T3, rows, "lora-hub", with_targets=False, budget=hub.llm.prompt_budget())
        with method_rows(hub.llm, "lora-hub", [ex.profile for ex in rows]) as got:
            return model.choice_logprobs(batch, LABELS), got

    together, retrievals = logp(exs)
    assert [r.adapters[0] for r in retrievals] == ["harsh", "generous", "middling", GENERAL]
    for i, ex in enumerate(exs):
        torch.testing.assert_close(logp([ex])[0], together[i:i + 1])
    assert len({tuple(r.tolist()) for r in together}) == len(exs)
    batched = personalize(hub, exs, decoding="expected", batch_size=4)
    alone = [personalize(hub, [ex], decoding="expected")[0] for ex in exs]
    assert [float(x) for x in batched] == pytest.approx([float(x) for x in alone], abs=2e-4)
    from pplug.decode.inference import predict

    with pytest.raises(ValueError, match="decodes with argmax, greedy or beam"):  # sampled candidates regroup rows
        predict(model, "LaMP_5", exs, "lora-hub", ["mbr"])

    # pplug+lora-hub through the Python API: the model's prefix and the rows' adapters
    pmodel = PPlugModel.from_pretrained(pplug_run, device="cpu", cache_path=":memory:")
    phub = load_hub(_save(hub, pplug_run.parent / "phub"), pmodel.llm, pmodel.history_encoder)
    assert pmodel.llm.plugins == {"hub": phub}
    both = personalize(pmodel, exs, decoding="expected", method="pplug+lora-hub")
    assert [float(x) for x in both] == pytest.approx(
        [float(personalize(pmodel, [ex], decoding="expected", method="pplug+lora-hub")[0]) for ex in exs], abs=2e-4)
    own = personalize(pmodel, exs, decoding="expected")  # its own method: the frozen LLM's layers, no adapters
    assert own != both
    with pytest.raises(ValueError, match="does not run a 'pplug' model's weights"):
        personalize(pmodel, exs, method="lora-hub")
    bare = PPlugModel.from_pretrained(pplug_run, device="cpu", cache_path=":memory:")  # no hub on its LLM
    with pytest.raises(ValueError, match="needs a LoRA hub: pass --hub DIR"):
        personalize(bare, exs, method="pplug+lora-hub")


def _save(hub: LoRAHub, path: Path) -> Path:
    return hub.save_pretrained(path) if not (path / "hub.json").exists() else path


def test_a_hub_of_another_base_llm_is_refused_in_one_line(pplug_run, hub_dir, synth, tmp_path, capsys):
    import shutil

    from pplug.cli.main import main

    other = tmp_path / "other"
    shutil.copytree(hub_dir, other)
    doc = json.loads((other / "hub.json").read_text())
    doc["base_model"]["embedding_fingerprint"] = "0" * 16  # made on another model of the same shapes
    (other / "hub.json").write_text(json.dumps(doc))
    for cmd in (["evaluate", "--checkpoint", str(pplug_run), "--data", str(synth), "--max-examples", "2"],
                ["generate", "--checkpoint", str(pplug_run), "--questions", str(synth / "dev_questions.json")]):
        assert main(cmd + ["--hub", str(other), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading bars: one line
        assert err.startswith(f"pplug {cmd[0]}: error: {other / 'hub.json'}: field 'base_model': made for base LLM")
        assert "embedding_fingerprint saved='0000000000000000'" in err


def test_generate_runs_both_hub_methods(pplug_run, hub_dir, tmp_path, capsys):
    from pplug.cli.main import main

    (tmp_path / "h.json").write_text(json.dumps(PROFILES["harsh"]))
    base = ["generate", "--input", T3.make_input("the kettle broke"), "--history", str(tmp_path / "h.json"),
            "--device", "cpu"]
    for extra in (["--hub", str(hub_dir)], ["--hub", str(hub_dir), "--checkpoint", str(pplug_run)]):
        assert main(base + extra) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.strip() in LABELS
    assert main(base) == 2
    assert "pass --checkpoint DIR, --hub DIR" in capsys.readouterr().err


def test_add_history_reports_the_adapters_before_and_after(hub_dir, pplug_run, tiny_encoder_dir, tmp_path, capsys):
    from pplug.cli.main import main

    store = ["--store", str(tmp_path / "store.sqlite")]
    assert main(["user", "create", "ana", *store]) == 0
    for name, items in (("harsh", PROFILES["harsh"]), ("generous", _profile(5, 40, "wonderful"))):
        (tmp_path / f"{name}.json").write_text(json.dumps(items))
    add = ["user", "add-history", "ana", "--encoder", str(tiny_encoder_dir), "--embedding-cache",
           str(tmp_path / "c.sqlite"), "--device", "cpu", "--hub", str(hub_dir), *store]
    capsys.readouterr()
    assert main(add[:3] + [str(tmp_path / "harsh.json")] + add[3:]) == 0, capsys.readouterr().err
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("hub adapters: general 1.00 -> harsh ") and line.endswith("(changed)")
    assert main(add[:3] + [str(tmp_path / "generous.json")] + add[3:]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("hub adapters: harsh ") and " -> " in line
    gen = ["user", "generate", "ana", "--checkpoint", str(pplug_run), "--input", "the kettle broke", "--device", "cpu",
           *store]
    assert main(gen + ["--hub", str(hub_dir)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() in LABELS


def test_serve_with_a_hub_names_each_rows_adapters_and_history_shows_the_change(pplug_run, hub_dir, tmp_path):
    from fastapi.testclient import TestClient

    from pplug.serve.app import create_app

    app = create_app(pplug_run, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=8,
                     window_ms=50, reload_interval=3600, model_name="pplug-run",
                     embedding_cache=tmp_path / "emb.sqlite", plugins={"hub": str(hub_dir)})
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(app) as client:
        served = client.get("/v1/models", headers=auth).json()["data"][0]["pplug"]
        assert served["method"] == "pplug+lora-hub"
        assert client.post("/v1/users", json={"user_id": "bo"}, headers=auth).status_code == 201
        r = client.post("/v1/users/bo/history", json={"items": PROFILES["generous"]}, headers=auth)
        assert r.status_code == 200, r.text
        change = r.json()["adapters"]
        assert change["before"] == [GENERAL] and change["after"][0] == "generous"
        assert abs(sum(change["weights"]["after"]) - 1) < 1e-5
        for user, first in (("bo", "generous"), ("stranger", GENERAL)):
            r = client.post("/v1/completions", json={"model": "pplug-run", "prompt": "nice", "user": user},
                            headers=auth)
            assert r.status_code == 200, r.text
            (meta,) = r.json()["pplug"]["adapters"]
            assert meta["names"][0] == first and len(meta["names"]) == len(meta["weights"])


def _hub_run(hub_dir: Path, root: Path) -> Path:
    """A hub run folder serving final/ (a copy of the module's hub), as `pplug hub retrain` lays it out."""
    import shutil

    shutil.copytree(hub_dir, root / "final")
    return root


def _promote(root: Path, version: str, hub: LoRAHub | None = None, parent: str = "final") -> Path:
    """Write hub version `version` beside final/ (its report names `parent`) and point LATEST at it."""
    from pplug.core.checkpoints import set_latest

    folder = root / version
    if hub is not None:
        hub.save_pretrained(folder)
    (folder / "adapt_report.json").write_text(json.dumps({"version": version, "parent": parent}))
    set_latest(root, version)
    return folder


def _hub_server(pplug_run: Path, hub: Path, tmp_path: Path):
    from fastapi.testclient import TestClient

    from pplug.serve.app import create_app

    app = create_app(pplug_run, tmp_path / "store.sqlite", admin_key=ADMIN, device="cpu", max_batch=8,
                     window_ms=20, reload_interval=0, model_name="pplug-run",
                     embedding_cache=tmp_path / "emb.sqlite", plugins={"hub": str(hub)})
    return app, TestClient(app)


def _ask(client, **who) -> dict:
    r = client.post("/v1/completions", json={"model": "pplug-run", "prompt": "the kettle broke", **who},
                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return r.json()["pplug"]


def _peft_names(app) -> set[str]:
    return set(app.state.engine.plugin.peft.peft_config)


def test_a_promoted_hub_version_is_served_at_the_next_request_without_a_restart(
        pplug_run, hub_dir, tiny_causal_llm_dir, tiny_encoder_dir, encoder, tmp_path):
    from pplug.hub.adapt import rollback_hub

    root = _hub_run(hub_dir, tmp_path / "hubrun")
    app, client = _hub_server(pplug_run, root, tmp_path)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with client:
        assert client.post("/v1/users", json={"user_id": "bo"}, headers=auth).status_code == 201
        r = client.post("/v1/users/bo/history", json={"items": PROFILES["generous"]}, headers=auth)
        assert r.status_code == 200, r.text
        first = _ask(client, user="bo")
        assert first["hub_version"] == "final" and first["adapters"][0]["names"][0] == "generous"
        assert client.get("/health").json()["hub_version"] == "final"
        own = _peft_names(app)

        _promote(root, "v0001", _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, seed=1))  # other weights
        second = _ask(client, user="bo")
        assert second["hub_version"] == "v0001" and second["version"] == "final"  # the checkpoint did not change
        assert second["adapters"][0]["names"][0] == "generous"  # the same adapter name, its new weights:
        assert second["label_probs"][0] != pytest.approx(first["label_probs"][0], abs=1e-4)
        health = client.get("/health").json()
        assert health["hub_version"] == "v0001" and health["stats"]["hub_reloads"] == 1
        served = client.get("/v1/models", headers=auth).json()["data"][0]["pplug"]
        assert served["hub_version"] == "v0001"
        assert len(_peft_names(app)) == len(own) and _peft_names(app) != own  # the old adapters left the LLM

        assert rollback_hub(root) == "final"  # a rollback is a change of LATEST like any other
        third = _ask(client, user="bo")
        assert third["hub_version"] == "final"
        assert third["label_probs"][0] == pytest.approx(first["label_probs"][0], abs=1e-5)
        assert client.get("/health").json()["stats"]["hub_reloads"] == 2
        assert len(_peft_names(app)) == len(own)

        # a row prepared on one hub version and batched on the next retrieves again from the one serving it
        engine = app.state.engine
        row = engine.prepare("the kettle broke", engine.user_context("bo")[0])
        assert row.ctx.plugin_version == "final" and row.ctx.plugin_state.adapters[0] == "generous"
        cfg = engine.plugin.config
        renamed = LoRAHub(_llm(tiny_causal_llm_dir), cfg, {f"{n}-b": cfg.persona_text(p) for n, p in PROFILES.items()},
                          encoder)
        _randomise(renamed, 3)
        _promote(root, "v0002", renamed)
        out = engine.run_batch([row])[0]
        assert out["plugin_version"]["hub_version"] == "v0002" and out["plugin"]["adapters"]["names"][0] == "generous-b"


def test_a_broken_hub_version_keeps_the_last_good_hub_serving(pplug_run, hub_dir, tiny_causal_llm_dir,
                                                              tiny_encoder_dir, encoder, tmp_path, capfd):
    import shutil

    from safetensors.torch import load_file, save_file

    from pplug.core.checkpoints import set_latest
    from pplug.hub.config import LoRAHubConfig
    from pplug.hub.files import read_hub_json
    from pplug.serve.privacy import embed_user

    root = _hub_run(hub_dir, tmp_path / "hubrun")
    app, client = _hub_server(pplug_run, root, tmp_path)
    persona = read_hub_json(hub_dir)["config"].persona_text(PROFILES["harsh"])
    private = {"user_vector": {**embed_user(pplug_run, PROFILES["harsh"]), "persona": persona}}
    with client:
        good = _ask(client, **private)
        assert good["hub_version"] == "final" and good["adapters"][0]["names"][0] == "harsh"
        own = _peft_names(app)
        capfd.readouterr()

        missing = root / "v0001"  # a version with a missing adapter file
        shutil.copytree(root / "final", missing)
        (missing / "adapters" / "harsh" / "adapter_model.safetensors").unlink()
        other = root / "v0002"  # a version made on another base LLM of the same shapes
        shutil.copytree(root / "final", other)
        doc = json.loads((other / "hub.json").read_text())
        doc["base_model"]["embedding_fingerprint"] = "0" * 16
        (other / "hub.json").write_text(json.dumps(doc))
        unfit = root / "v0003"  # files all there, but one adapter's weights do not fit the layers (r 8, not 4)
        shutil.copytree(root / "final", unfit)
        cfg = LoRAHubConfig(task="LaMP_3", base_model_name_or_path=str(tiny_causal_llm_dir),
                            encoder_name_or_path=str(tiny_encoder_dir), r=8)
        wide = LoRAHub(_llm(tiny_causal_llm_dir), cfg, {n: n for n in PROFILES}, encoder).save_pretrained(
            tmp_path / "wide")
        save_file(load_file(str(wide / "adapters" / "middling" / "adapter_model.safetensors")),
                  str(unfit / "adapters" / "middling" / "adapter_model.safetensors"))
        for version, said in (("v0001", "adapters/harsh/adapter_model.safetensors: missing"),
                              ("v0002", "field 'base_model': made for base LLM"),
                              ("v0003", "adapter weights do not fit the LLM"),
                              ("v0009", "names 'v0009', which is not a checkpoint folder")):
            if version == "v0009":  # LATEST names a folder that is not there
                set_latest(root, version)
            else:
                _promote(root, version)
            got = _ask(client, **private)
            assert got["hub_version"] == "final", version  # the last good hub serves on, unchanged
            assert got["label_probs"][0] == pytest.approx(good["label_probs"][0], abs=1e-5)
            err = capfd.readouterr().err
            assert "pplug serve: keeping hub final: cannot load" in err and said in err, (version, err)
            assert _peft_names(app) == own  # nothing of the broken version stays in the LLM
        assert client.get("/health").json()["stats"]["hub_reloads"] == 0
        _promote(root, "v0004", _hub(tiny_causal_llm_dir, tiny_encoder_dir, encoder, seed=2))  # a good one again
        assert _ask(client, **private)["hub_version"] == "v0004"


def test_a_private_request_retrieves_adapters_from_its_persona_text(pplug_run, hub_dir, tmp_path):
    from pplug.encode.cache import text_key
    from pplug.serve.privacy import embed_user

    app, client = _hub_server(pplug_run, hub_dir, tmp_path)
    engine = app.state.engine
    doc = embed_user(pplug_run, PROFILES["generous"])
    with client:
        persona = engine.plugin.persona_text(PROFILES["harsh"])  # the text a stored harsh user's history tells
        assert persona
        with_persona = _ask(client, user_vector={**doc, "persona": persona})
        assert with_persona["private"] is True and with_persona["hub_version"] == "hub"
        (meta,) = with_persona["adapters"]
        # privacy mode keeps nothing: the persona text was embedded without the embedding cache
        assert not engine.encoder.cache.get_many(engine.encoder.identity, [text_key(persona)])
        assert text_key(persona) not in engine.encoder._memory
        stored = engine.plugin.retrieve_for_histories([PROFILES["harsh"]])[0]  # the stored users' rule
        assert meta["names"] == stored.adapters and meta["names"][0] == "harsh" != GENERAL
        assert meta["weights"] == pytest.approx(stored.weights, abs=1e-5)
        for cold in ({**doc, "persona": None}, {**doc, "persona": "  "}, doc):  # no persona text: general
            (meta,) = _ask(client, user_vector=cold)["adapters"]
            assert meta == {"names": [GENERAL], "weights": [1.0]}


def test_hub_retrain_makes_a_new_version_and_keeps_the_old_one_serving_until_promoted(hub_dir, tiny_encoder_dir,
                                                                                    tmp_path, capsys):
    import shutil

    from pplug.cli.main import main
    from pplug.core.checkpoints import serving_version, versions
    from pplug.hub.adapt import retrain_hub
    from pplug.hub.config import HUB_CONFIG_NAME
    from pplug.hub.train import HubTrainConfig
    from pplug.store.sqlite import UserStore

    root = tmp_path / "hubrun"
    shutil.copytree(hub_dir, root / "final")
    store = UserStore(tmp_path / "store.sqlite")
    for user, items in (("a", _profile(1, 6, "terrible")), ("b", _profile(5, 6, "wonderful"))):
        store.create_user(user, task="LaMP_3")
        store.add_interactions(user, items, task="LaMP_3")
    serving_seen = []
    figures = iter([{"mae": 1.0}, {"mae": 1.5}, {"mae": 1.0}, {"mae": 0.5}])

    def evaluate_fn(hub, examples):
        serving_seen.append(serving_version(root, HUB_CONFIG_NAME))
        return next(figures)

    train = HubTrainConfig(max_steps=1, batch_size=4, lr=1e-2)
    kw = dict(min_new=4, train_config=train, device="cpu", dtype="float32", embedding_cache=tmp_path / "c.sqlite",
              evaluate_fn=evaluate_fn, log=lambda m: None)
    res = retrain_hub(store, root, **kw)
    assert res.status == "refused" and versions(root) == [] and serving_version(root, HUB_CONFIG_NAME) == "final"
    assert retrain_hub(store, root, **kw).status == "noop"  # nothing new since that attempt
    store.add_interactions("a", _profile(2, 4, "awful"), task="LaMP_3")
    res = retrain_hub(store, root, **kw)
    assert res.status == "promoted" and res.version == "v0001" and versions(root) == ["v0001"]
    assert serving_seen == ["final"] * 4  # the old version served while the candidate trained and was scored
    assert (root / "LATEST").read_text().strip() == "v0001" and (root / "final" / "hub.json").is_file()
    report = json.loads((root / "v0001" / "adapt_report.json").read_text())
    assert report["parent"] == "final" and report["validation"]["candidate"] == {"mae": 0.5}
    assert report["train"]["adapters"]["general"]["steps"] == 1

    new = LoRAHub.from_pretrained(root, _tiny_llm(hub_dir))  # the run folder: its serving version
    old = LoRAHub.from_pretrained(root / "final", _tiny_llm(hub_dir))
    prompts = ["review: fine\nScore:"]
    assert not torch.allclose(new.choice_logprobs(prompts, LABELS, [GENERAL]),
                              old.choice_logprobs(prompts, LABELS, [GENERAL]))
    store.add_interactions("b", _profile(4, 4, "lovely"), task="LaMP_3")
    capsys.readouterr()
    assert main(["hub", "retrain", "--hub", str(root), "--store", str(tmp_path / "store.sqlite"), "--min-new", "4",
                 "--max-steps", "1", "--batch-size", "4", "--device", "cpu", "--dtype", "float32",
                 "--embedding-cache", str(tmp_path / "c.sqlite")]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out.strip()
    assert said.startswith(("promoted hub v0002 (parent v0001): mae ", "refused hub candidate (parent v0001 stays): mae "))
    if said.startswith("promoted"):  # the task's own metric decided; either way the parent is still there
        assert serving_version(root, HUB_CONFIG_NAME) == "v0002"
        assert main(["hub", "retrain", "--hub", str(root), "--rollback"]) == 0
        capsys.readouterr()
    assert main(["hub", "retrain", "--hub", str(root), "--rollback"]) == 0
    assert capsys.readouterr().out.strip() == f"rolled back hub {root}: serving final (was v0001)"
    assert serving_version(root, HUB_CONFIG_NAME) == "final" and versions(root)[0] == "v0001"  # every version kept


def _tiny_llm(hub_dir: Path):
    doc = json.loads((hub_dir / "hub.json").read_text())
    return _llm(doc["config"]["base_model_name_or_path"])


def test_the_cost_benchmark_runs_on_a_tiny_model(tiny_causal_llm_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cost.json"
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_lora_hub_cost.py"), "--model",
                          str(tiny_causal_llm_dir), "--batches", "1", "4", "--repeats", "2", "--new-tokens", "3",
                          "--adapters", "3", "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    for kind in ("scoring", "generation"):
        assert set(doc["seconds_per_row"][kind]) == {"none", "shared", "mixed"}
        assert set(doc["seconds_per_row"][kind]["mixed"]) == {"1", "4"}
    assert len(doc["adapter_bytes"]) == 4 and doc["adapter_bytes"]["general"] > 0 and doc["rss_bytes"]["peak"] > 0
    assert set(doc["meta"]) == {"command", "code_version", "host", "device", "dtype"}


def test_erasing_a_stored_user_leaves_no_vector_of_their_persona_text_in_the_embedding_cache(pplug_run, hub_dir,
                                                                                               tmp_path):
    import sqlite3

    from pplug.cli.hub_option import folder_retrieval
    from pplug.encode.cache import text_key

    app, client = _hub_server(pplug_run, hub_dir, tmp_path)
    engine = app.state.engine
    auth = {"Authorization": f"Bearer {ADMIN}"}
    items = _profile(5, 5, "zebracorn")  # a history (and so a persona text) only this user has
    with client:
        assert client.post("/v1/users", json={"user_id": "eve"}, headers=auth).status_code == 201
        r = client.post("/v1/users/eve/history", json={"items": items}, headers=auth)  # retrieves before/after
        assert r.status_code == 200, r.text
        stored = engine.store.history_items("eve", task=T3.name)
        persona = engine.plugin.persona_text(stored)
        assert persona and "zebracorn" in persona
        (meta,) = _ask(client, user="eve")["adapters"]  # the user's context: retrieval through the persona text
        assert meta["names"][0] != GENERAL
        folder_retrieval(str(hub_dir), stored, engine.encoder)  # the CLI's path (`pplug user add-history --hub`)
        mine = {text_key(T3.history_text(it)) for it in stored}
        assert mine <= set(engine.encoder.cache.get_many(engine.encoder.identity, sorted(mine)))  # cached, to erase
        r = client.delete("/v1/users/eve", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["removed"]["embedding_cache_rows"] == len(mine)
        gone = mine | {text_key(persona)}
        db = sqlite3.connect(tmp_path / "emb.sqlite")  # the cache file, read with a separate connection
        keys = {bytes(k) for (k,) in db.execute("SELECT key FROM embeddings")}
        db.close()
        assert not keys & gone, "a vector of the erased user's history or persona text survived erasure"
        assert not set(engine.encoder._memory) & gone  # nor in the in-process LRU
