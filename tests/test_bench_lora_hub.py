"""benchmarks/bench_lora_hub.py on tiny random models and a tiny synthetic rating set: a reused PPlug run, a hub
trained per seed, OPPU adapters per user, the rows, intervals and slices in the JSON, and its report renderer."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
import bench_lora_hub as bench  # noqa: E402


def test_bench_lora_hub_core_on_tiny_models(tiny_config, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from benchmarks import report
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import make_synthetic

    root = tmp_path / "data"
    make_synthetic(root / "music_ratings", kind="ratings", n_users=6, min_train=1, max_train=2, min_history=3,
                   max_history=5)
    pp = tmp_path / "pplug_runs"
    cfg = dataclasses.replace(tiny_config, max_history=8, max_target_tokens=4)
    for seed in (0, 1):  # bench_ablation's layout: DIR/seed<s>/<run>/final
        torch.manual_seed(seed)
        PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(pp / f"seed{seed}" / "base" / "final")
    out = tmp_path / "results" / "lora_hub_music_ratings.json"
    argv = ["--set", "music_ratings", "--root", str(root), "--seeds", "0", "1", "--k", "2", "--hub-steps", "1",
            "--max-train", "12", "--max-dev", "6", "--oppu-users", "2", "--oppu-steps", "2", "--oppu-lr", "1e-2",
            "--slices", "cold-start", "--cold-start-min", "1", "--pplug-checkpoints", str(pp),
            "--checkpoints", str(tmp_path / "ck"), "--out", str(out), "--device", "cpu", "--resamples", "50",
            "--embedding-cache", str(tmp_path / "cache.sqlite"), "--eval-batch-size", "8", "--batch-size", "4"]
    assert bench.main(argv) == 0, capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["benchmark"] == "bench_lora_hub" and set(d["meta"]) >= {"command", "code_version", "device"}
    e = d["sets"]["music_ratings"]
    dev = e["slices"]["dev"]
    always = next(r for r in dev["cells"] if r.startswith("floor: always-"))  # the train split's majority
    for row in ("none [argmax]", "pplug [argmax]", "lora-hub [argmax]", "pplug+lora-hub [argmax]",
                "lora-hub [median]", "pplug+lora-hub [expected]", "floor: user mean rating",
                "floor: user majority rating"):
        assert row in dev["cells"], row
    assert set(dev["cells"]["lora-hub [argmax]"]["mae"]["values"]) == {"seed0", "seed1"}  # one value per seed
    assert set(dev["cells"]["none [argmax]"]["mae"]["values"]) == {"seed0"}  # the frozen LLM does not depend on the seed
    for ref in ("pplug+lora-hub [argmax]", "lora-hub [argmax]"):
        assert {"pplug [argmax]", "none [argmax]", always, "floor: user mean rating"} <= set(dev["comparisons"][ref])
    assert {"none [argmax]", always} <= set(dev["comparisons"]["pplug [argmax]"])
    assert "cold-start" in e["slices"] and e["slices"]["cold-start"]["comparisons"]["lora-hub [argmax]"]["none [argmax]"]
    assert set(e["train_seconds"]["hub"]) == {"seed0", "seed1"} and set(e["train_seconds"]["oppu"]) == {"seed0",
                                                                                                     "seed1"}
    assert set(e["hub_training"]["seed0"]) == {"general", "group-00", "group-01"}
    # OPPU: its users' questions, every other row restricted to them, intervals of OPPU minus each
    o = e["slices"]["oppu"]
    assert len(o["users"]) == 2 and o["n"] == sum(u["questions"] for u in o["users"].values())
    argmax = {f"{m} [argmax]" for m in ("none", "pplug", "lora-hub", "pplug+lora-hub")}
    assert {"oppu [argmax]", "oppu [median]", *argmax} <= set(o["cells"])
    assert argmax <= set(o["comparisons"]["oppu [argmax]"])
    assert all(t["steps"] >= 1 for t in o["training"]["seed0"].values())
    # each user got a LoRA of their own: trained (B != 0) and different from the other user's
    adapters = tmp_path / "ck" / "music_ratings" / "seed0" / "oppu" / "adapters"
    a, b = (load_file(adapters / n / "adapter_model.safetensors") for n in ("user-000", "user-001"))
    lora_b = [k for k in a if "lora_B" in k]
    assert lora_b and all(a[k].abs().sum() > 0 for k in lora_b)
    assert any(not (a[k] == b[k]).all() for k in lora_b)

    # a second call resumes: nothing is trained again, the predictions are read back, the figures are the same
    before = json.loads(out.read_text())
    capsys.readouterr()
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert ": training" not in printed and "reusing the predictions" in printed
    again = json.loads(out.read_text())["sets"]["music_ratings"]
    assert again["slices"]["dev"]["cells"] == before["sets"]["music_ratings"]["slices"]["dev"]["cells"]

    # the renderer (not in RENDERERS until a document shows it)
    text = report.lora_hub(out.parent)
    assert "| **lora-hub** |" in text and "| pplug+lora-hub minus pplug |" in text
    assert "OPPU users' dev questions" in text and "cold-start MAE" in text and "Training per seed" in text
    assert "lora_hub_music_ratings.json" in text
    assert report.lora_hub(tmp_path).startswith("_no results file yet")
    summary = report.lora_hub_summary(out.parent)  # one row per results file, the main metric and three intervals
    (row,) = [line for line in summary.splitlines() if line.startswith("| music_ratings (n=6, 2 seeds), MAE")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10 and all(cells) and cells[2].count("±") == 1
    assert cells[5].startswith("always-5 ") and "; user mean rating " in cells[5]  # the no-model floors
    assert all(c.split(" ")[-1] in ("leads", "behind", "tie") for c in cells[6:9])
    slice_name, n, lora_hub, slash, stacked = cells[9].split(" ")  # each hub row minus pplug on the shift slice
    assert (slice_name, n, slash) == ("cold-start", f"(n={e['slices']['cold-start']['n']})", "/")
    assert {lora_hub, stacked} <= {"leads", "behind", "tie"}
    assert report.lora_hub_summary(tmp_path).startswith("_no results file yet")


def test_time_shift_trains_pplug_and_the_hub_on_the_fit_split(tiny_config, tmp_path, monkeypatch, capsys):
    import pytest

    from benchmarks import report
    from pplug.hub.files import read_hub_json
    from pplug.lamp.data import load_split
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import make_synthetic

    root = tmp_path / "data"
    make_synthetic(root / "music_ratings", kind="ratings", n_users=5, min_train=2, max_train=3, min_history=3,
                   max_history=5)
    calls = []

    def fake_train(set_name, method, args, ck, data, run, extra=(), seed=None, env=None):  # train.py's place
        calls.append((Path(data), run, tuple(extra), seed))
        cfg = dataclasses.replace(tiny_config, max_history=8, max_target_tokens=4)
        PPlugModel.from_config(cfg, cache_path=":memory:").save_pretrained(ck / run / "final")
        return 1.0

    monkeypatch.setattr(bench, "train_method", fake_train)
    out = tmp_path / "results" / "lora_hub_music_ratings_time_shift.json"
    argv = ["--set", "music_ratings", "--root", str(root), "--seeds", "3", "--k", "2", "--hub-steps", "1",
            "--max-train", "10", "--max-dev", "4", "--oppu-users", "0", "--slices", "time-shift",
            "--checkpoints", str(tmp_path / "ck"), "--out", str(out), "--device", "cpu", "--resamples", "20",
            "--embedding-cache", str(tmp_path / "cache.sqlite")]
    assert bench.main(argv) == 0, capsys.readouterr().out
    ((data, run, extra, seed),) = calls
    assert run == "pplug" and seed == 3 and extra[:2] == ("--data.train_split", "fit") and data.name == "slices"
    e = json.loads(out.read_text())["sets"]["music_ratings"]
    assert set(e["slices"]) == {"dev", "time-shift"} and "lora-hub [argmax]" in e["slices"]["time-shift"]["cells"]
    hub = tmp_path / "ck" / "music_ratings" / "seed3_fit" / "hub"
    fit_users = {ex.user_id for ex in load_split(data, "fit").examples}
    assert read_hub_json(hub)["training"]["users"] <= len(fit_users)
    assert json.loads((hub.parent / "hub.settings.json").read_text())["train"].endswith(":fit")
    with pytest.raises(SystemExit):  # reused PPlug runs trained on the whole train split
        bench.parse_args(["--slices", "time-shift", "--pplug-checkpoints", str(tmp_path)])
    # the renderers say which models the retrained file scored, and the summary shows its time-shift verdicts
    assert "1 seed, PPlug and the hub trained on the fit split |" in report.lora_hub(out.parent)
    (row,) = [line for line in report.lora_hub_summary(out.parent).splitlines() if line.startswith("| music")]
    assert f"| time-shift (n={e['slices']['time-shift']['n']}) " in row
