"""benchmarks/: bench_real_lamp.py's seeds path (options, presets, device and jobs, GPU configs, slices, the
summary plumbing; training and evaluation replaced by stubs, the real ones are exercised by their own tests) and
the shared timing helper."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_real_lamp as bench  # noqa: E402


def test_old_command_line_is_unchanged():
    args = bench.parse_args(["--sets", "music_ratings"])
    assert not args.multi and args.seeds is None and args.config_suffix == ""
    assert (args.max_steps, args.max_train, args.max_dev, args.max_input_tokens) == (100, 1600, 150, 128)


def test_seeds_and_gpu_preset():
    args = bench.parse_args(["--seeds", "0", "1", "2"])
    assert args.multi and args.seeds == [0, 1, 2]
    assert bench.parse_args(["--slices", "cold-start"]).seeds == [0]  # slices alone: the one --seed
    gpu = bench.parse_args(["--preset", "gpu"])
    assert gpu.multi and gpu.config_suffix == ".gpu" and gpu.seeds == [0, 1, 2]
    assert (gpu.max_steps, gpu.batch_size, gpu.max_train, gpu.max_input_tokens) == (1000, 8, None, 384)
    assert (gpu.max_dev, gpu.max_new_tokens, gpu.eval_batch_size) == (None, 32, 32)
    mine = bench.parse_args(["--preset", "gpu", "--max-steps", "50", "--seeds", "4"])
    assert mine.max_steps == 50 and mine.seeds == [4]  # explicit options win
    same = bench.parse_args(["--preset", "gpu", "--max-dev", "150", "--eval-batch-size=16"])
    assert (same.max_dev, same.eval_batch_size) == (150, 16)  # also when they equal the option's default
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0", "--lrs", "1e-3", "1e-2"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sets", "synth_ratings_shift"])  # synthetic checks need the seeds path
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "tpu"])


def test_cpu_preset_trains_half_of_each_recipe(tmp_path):
    cpu = bench.parse_args(["--preset", "cpu"])
    assert cpu.multi and cpu.seeds == [0, 1, 2] and cpu.max_dev == 300 and cpu.config_suffix == ""
    assert cpu.method_args_map == {m: ("--model.max_input_tokens", "256") for m in ("retrieval", "pplug+retrieval")}
    steps = {s: bench.set_steps(s, cpu) for s in bench.SETS}
    for s in bench.SETS:  # the recipe's own steps, halved: read from configs/real, not written here again
        recipe = yaml.safe_load(bench.config_path(s).read_text())["trainer"]["max_steps"]
        assert steps[s] == round(recipe / 2)
    assert steps["acl_titles"] > steps["music_ratings"]  # cheaper steps after the prompt: more of them
    mine = bench.parse_args(["--preset", "cpu", "--max-steps", "7", "--method-args", "retrieval=--model.lr 1"])
    assert bench.set_steps("acl_titles", mine) == 7  # explicit options win
    assert mine.method_args_map["retrieval"] == ("--model.lr", "1")
    assert bench.set_steps("acl_titles", bench.parse_args([])) == 100  # no preset: --max-steps for every set
    news, acl = bench.set_args("news_headlines", cpu), bench.set_args("acl_titles", cpu)
    assert (news.slices, news.slices_only, news.time_shift_latest) == (["time-shift"], True, 4)
    assert (acl.slices, acl.slices_only) == ([], False)  # dev
    given = bench.parse_args(["--preset", "cpu", "--slices", "cold-start"])
    assert bench.set_args("news_headlines", given).slices == ["cold-start"]  # --slices on the command line wins


def test_device_args_and_jobs(monkeypatch):
    import torch

    assert bench.train_device_args("auto") == ()
    assert bench.train_device_args("cpu") == ("--trainer.accelerator", "cpu")
    assert bench.train_device_args("cuda:1") == ("--trainer.accelerator", "gpu", "--trainer.devices", "[1]")
    assert bench.default_jobs("cpu", 12) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (100 * 2**30, 140 * 2**30))
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 16)
    assert bench.default_jobs("auto", 12) == 10  # 100 GiB free / 10 GiB per training
    assert bench.default_jobs("cuda", 3) == 3
    assert bench.default_jobs("cpu", 12) == 1


def test_gpu_configs_hold_the_reference_budget():

    from pplug.modeling.config import PPlugConfig
    from pplug.train.data import LaMPDataModule
    from pplug.train.module import PPlugLitModule, lit_module

    # --model.<field>: the optimiser's flags (train.py's `lit_module`), the LitModule's own settings and, through
    # its **config, every PPlugConfig field
    model_keys = set(inspect.signature(lit_module).parameters) | set(
        inspect.signature(PPlugLitModule.__init__).parameters) | {f.name for f in dataclasses.fields(PPlugConfig)}
    data_keys = set(inspect.signature(LaMPDataModule.__init__).parameters)
    base = yaml.safe_load((bench.ROOT / "configs" / "base.yaml").read_text())

    def over_base(path):  # a recipe as train.py reads it: over configs/base.yaml
        recipe = yaml.safe_load(path.read_text())
        return {key: {**base.get(key, {}), **recipe.get(key, {})} for key in ("trainer", "model", "data")}

    for name in bench.SETS:
        path = bench.config_path(name, ".gpu")
        cfg = over_base(path)
        cpu = over_base(bench.config_path(name))
        assert cfg["trainer"]["max_steps"] == 1000 and cfg["trainer"]["limit_val_batches"] == 0
        assert cfg["model"]["max_input_tokens"] == 384 and cfg["model"]["lr"] == 0.001
        assert cfg["model"]["torch_dtype"] == "auto" and cfg["model"]["task"] == cpu["model"]["task"]
        assert cfg["data"]["batch_size"] == 8 and cfg["data"]["max_train_examples"] is None
        assert cfg["data"]["root"] == cpu["data"]["root"]
        assert set(cfg["model"]) <= model_keys, set(cfg["model"]) - model_keys
        assert set(cfg["data"]) <= data_keys, set(cfg["data"]) - data_keys


@pytest.mark.parametrize("suffix", ["", ".gpu"])
def test_every_trainable_method_trains_on_every_recipe(tmp_path, monkeypatch, suffix):
    """The command bench_real_lamp gives train.py for each set and method builds a config PPlugConfig accepts:
    a recipe's decoding-only setting that a baseline cannot read (news_categories' encoder prior) must not stop
    the baseline from training on it."""
    from pplug.modeling.config import PPlugConfig
    from pplug.methods.registry import method_config

    base = yaml.safe_load((bench.ROOT / "configs" / "base.yaml").read_text())["model"]
    fields = {f.name for f in dataclasses.fields(PPlugConfig)}
    args = bench.parse_args(["--preset", "gpu" if suffix else "cpu"])
    seen = []
    monkeypatch.setattr(bench, "run_logged", lambda cmd, log, **kw: seen.append(cmd) or 0)
    refused = 0
    for name in bench.SETS:
        recipe = yaml.safe_load(bench.config_path(name, suffix).read_text())["model"]
        for method in bench.TRAINABLE:
            seen.clear()
            bench.train_method(name, method, args, tmp_path / name, tmp_path, method, seed=0)
            cmd = seen[0]
            model = {**base, **recipe}
            model.update({k.removeprefix("--model."): yaml.safe_load(v) for k, v in zip(cmd, cmd[1:])
                          if k.startswith("--model.")})  # the last value wins, as LightningCLI reads them
            config = {k: v for k, v in model.items() if k in fields}
            method_config(PPlugConfig(**{**config, "method": "pplug"}), method)  # raises on a refused field
            try:  # the recipe alone, without the bench's override, is what a baseline would be refused
                PPlugConfig(**{**{k: v for k, v in {**base, **recipe}.items() if k in fields}, "method": method})
            except ValueError:
                refused += 1
            PPlugConfig(**config)
    assert refused >= 2  # news_categories' prompt-tuned and retrieval need the override


def test_run_seeds_summarises_what_evaluate_reports(tmp_path, monkeypatch):
    """Stubbed training and evaluation: the seeds path must pool, check and write what evaluate reported."""
    from pplug.lamp.data import load_split, subsample, write_outputs
    from pplug.lamp.metrics import score
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=30, seed=1, min_history=2, max_history=12, min_train=2, max_train=3)
    args = bench.parse_args(["--sets", "music_ratings", "--methods", "retrieval", "pplug", "--seeds", "0", "1",
                             "--slices", "cold-start", "time-shift", "--max-dev", "40", "--resamples", "200",
                             "--checkpoints", str(tmp_path / "ck")])
    trained = []

    def fake_train(s, m, a, ck, root, run, extra=(), seed=None, env=None):
        trained.append((seed, m, root, extra))
        (ck / run / "final").mkdir(parents=True)
        return 1.0

    monkeypatch.setattr(bench, "train_method", fake_train)
    for seed in (0, 1):  # train_seeds reuses runs whose final/ exists: only seed 1 pplug is "trained" here
        for run in ("retrieval", "pplug"):
            if (seed, run) != (1, "pplug"):
                (tmp_path / "ck" / "music_ratings" / f"seed{seed}" / run / "final").mkdir(parents=True)
                (tmp_path / "ck" / "music_ratings" / f"seed{seed}" / f"{run}.train_seconds").write_text("2.0\n")

    def fake_evaluate(a, checkpoints, folder, split, methods, max_examples, decodings, floors, seed, out,
                      progress, max_new_tokens):
        loaded = load_split(folder, split)
        examples = subsample(loaded.examples, max_examples, seed)
        golds = {ex.id: ex.output for ex in examples}
        files, metrics = {}, {}
        rng = random.Random(out)
        for m in methods:
            for dec in decodings:
                row = m if dec == "argmax" else f"{m} [{dec}]"
                good = m == "pplug"  # pplug answers the gold, the others guess
                preds = {i: g if good else str(rng.randint(1, 5)) for i, g in golds.items()}
                path = Path(f"{out}.{row.replace(' ', '_')}.json")
                write_outputs(path, loaded.task.name, preds)
                files[row], metrics[row] = str(path), score(loaded.task, preds, golds)
        return {"files": files, "metrics": metrics}

    monkeypatch.setattr(bench, "run_evaluate", fake_evaluate)
    import pplug.decode.evaluate  # noqa: F401  (binds the real data_floors at import: never the stub below)
    import pplug.decode.floors as floors

    fitted_on, data_floors = [], floors.data_floors
    monkeypatch.setattr(floors, "data_floors", lambda task, exs, root, seed, split: fitted_on.append(
        (Path(root).name, split)) or data_floors(task, exs, root, seed, split))
    entry = bench.run_seeds("music_ratings", args, data, tmp_path / "ck" / "music_ratings")
    assert fitted_on == [("slices", "fit")] * 3  # every slice's floors: fitted without the held-out questions
    assert [(s, m) for s, m, _, _ in trained] == [(1, "pplug")]
    assert trained[0][3][:2] == ("--data.train_split", "fit")  # time-shift: trained without the held-out questions
    assert set(entry["slices"]) == {"dev", "cold-start", "time-shift"} and entry["seeds"] == [0, 1]
    assert set(entry["slices"]["dev"]["cells"]["pplug"]["mae"]["values"]) == {"seed0", "seed1"}
    dev = entry["slices"]["dev"]
    assert dev["n"] == 40 and dev["cells"]["pplug [median]"]["mae"]["mean"] == 0.0
    assert dev["cells"]["none"]["mae"]["sd"] is None and "floor: always-5" in dev["cells"]
    assert dev["comparisons"]["pplug [median]"]["retrieval [median]"]["mae"]["leads"]
    assert dev["comparisons"]["pplug"]["floor: user mean rating"]["rmse"]["leads"]
    assert entry["slices"]["cold-start"]["note"].split(":")[0] in ("natural", "truncated")
    cold = load_split(tmp_path / "ck" / "music_ratings" / "slices", "cold_start")
    assert all(len(ex.profile) <= 4 for ex in cold)
    json.dumps(entry)  # the results file takes it as is


def test_ablation_seeds_compares_variants_with_base(tmp_path, monkeypatch, capsys):
    import bench_ablation as ablation

    from pplug.lamp.data import load_split, subsample, write_outputs
    from pplug.lamp.metrics import score
    from pplug.synth.generate import make_synthetic

    make_synthetic(tmp_path / "music_ratings", kind="ratings", n_users=20, seed=2, min_train=2, max_train=3)
    monkeypatch.setattr(ablation, "train_method", lambda *a, **k: 1.0)

    def fake_evaluate(a, checkpoints, folder, split, methods, max_examples, decodings, out, floors, seed, progress,
                      persona):
        loaded = load_split(folder, split)
        golds = {ex.id: ex.output for ex in subsample(loaded.examples, max_examples, seed)}
        good = "mean-attention" in checkpoints[0]  # this variant answers the gold, base guesses
        rng = random.Random(out)
        files, metrics = {}, {}
        for m in methods:
            for dec in decodings:
                row = m if dec == "argmax" else f"{m} [{dec}]"
                preds = {i: g if (good and m == "pplug") else str(rng.randint(1, 5)) for i, g in golds.items()}
                path = Path(f"{out}.{row.replace(' ', '_')}.json")
                write_outputs(path, loaded.task.name, preds)
                files[row], metrics[row] = str(path), score(loaded.task, preds, golds)
        return {"files": files, "metrics": metrics}

    monkeypatch.setattr(ablation, "run_evaluate", fake_evaluate)
    out = tmp_path / "abl.json"
    rc = ablation.main(["--root", str(tmp_path), "--variants", "base", "mean-attention", "--seeds", "0", "1",
                        "--max-dev", "30", "--resamples", "200", "--checkpoints", str(tmp_path / "ck"),
                        "--out", str(out)])
    assert rc == 0
    summary = json.loads(out.read_text())["summary"]
    c = summary["comparisons"]["pplug mean-attention [median]"]
    assert set(c) >= {"pplug base [median]", "none [median]"}
    assert any(r.startswith("floor: always-") for r in c)  # the synthetic train split's most common rating
    assert c["pplug base [median]"]["mae"]["leads"]
    assert set(summary["cells"]["pplug base"]["mae"]["values"]) == {"seed0", "seed1"}
    assert "leads" in capsys.readouterr().out
    # --cold-start: the same variants scored on the dev questions with histories cut to 4 items
    cold_out = tmp_path / "abl_cold.json"
    assert ablation.main(["--root", str(tmp_path), "--variants", "base", "mean-attention", "--seeds", "0", "1",
                          "--max-dev", "30", "--resamples", "200", "--checkpoints", str(tmp_path / "ck"),
                          "--out", str(cold_out), "--cold-start"]) == 0
    cold = load_split(tmp_path / "ck" / "music_ratings" / "lr1e-3" / "slices", "cold_start")
    dev = subsample(load_split(tmp_path / "music_ratings", "dev").examples, 30, 0)
    assert [ex.id for ex in cold] == [ex.id for ex in dev] and all(len(ex.profile) <= 4 for ex in cold)
    assert "cold_start (n=30)" in capsys.readouterr().out
    assert json.loads(cold_out.read_text())["summary"]["comparisons"]["pplug mean-attention [median]"]
    with pytest.raises(SystemExit):
        ablation.main(["--root", str(tmp_path), "--cold-start"])  # needs --seeds


def test_skip_train_scores_the_seeds_that_finished(tmp_path, monkeypatch):
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=10, seed=1)
    args = bench.parse_args(["--methods", "pplug", "--seeds", "0", "1", "--skip-train",
                             "--checkpoints", str(tmp_path / "ck")])
    (tmp_path / "ck" / "seed0" / "pplug" / "final").mkdir(parents=True)
    seen = []
    monkeypatch.setattr(bench, "run_evaluate", lambda a, ckpts, *x, **k: seen.append(ckpts) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # stops at the first evaluation: enough to see what it scores
        bench.run_seeds("music_ratings", args, data, tmp_path / "ck")
    assert seen == [[f"pplug={tmp_path / 'ck' / 'seed0' / 'pplug'}"]]
    (tmp_path / "ck" / "seed0" / "pplug" / "final").rmdir()
    with pytest.raises(RuntimeError, match="no seed has trained weights"):
        bench.run_seeds("music_ratings", args, data, tmp_path / "ck")


def test_train_only_writes_no_results_file(tmp_path, monkeypatch, capsys):
    """--train-only trains and stops: nothing scored, so no results file (the default --out is in the repo)."""
    from pplug.synth.generate import make_synthetic

    make_synthetic(tmp_path / "root" / "music_ratings", kind="ratings", n_users=10, seed=1)
    trained = []
    monkeypatch.setattr(bench, "train_method", lambda set_name, m, *a, **k: trained.append(m) or 1.0)
    out = tmp_path / "out.json"
    assert bench.main(["--sets", "music_ratings", "--root", str(tmp_path / "root"), "--methods", "pplug", "--seeds",
                       "0", "--train-only", "--checkpoints", str(tmp_path / "ck"), "--out", str(out)]) == 0
    assert trained == ["pplug"] and not out.exists()
    assert "no results file written" in capsys.readouterr().out


def test_reference_rows_are_pplug_and_pplug_on_retrieval():
    rows = ["none", "retrieval", "retrieval [median]", "pplug", "pplug [median]", "pplug+retrieval [expected]",
            "prompt-tuned [median]", "floor: always-5"]
    assert bench.reference_rows(rows) == ["pplug", "pplug [median]", "pplug+retrieval [expected]"]


def test_synthetic_shift_set(tmp_path):
    from pplug.lamp.data import load_split

    folder, report = bench.synth_data("synth_ratings_shift", tmp_path / "ck")
    assert report["config"]["domain_shift"] is True and report["history_blind_ceiling"]["mae"] > 0
    assert load_split(folder, "dev").task.name == "LaMP_3"
    assert bench.synth_data("synth_ratings_shift", tmp_path / "ck")[0] == folder  # generated once
    assert bench.config_path("synth_ratings_shift") == bench.ROOT / "configs" / "synth_ratings.yaml"
    assert bench.parse_args(["--sets", "synth_ratings_shift", "--seeds", "0"]).multi


def test_slices_only_scores_no_dev(tmp_path):
    from pplug.synth.generate import make_synthetic

    with pytest.raises(SystemExit):
        bench.parse_args(["--slices-only"])  # nothing to score
    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=10, seed=1)
    both = bench.parse_args(["--slices", "cold-start", "--max-dev", "20", "--checkpoints", str(tmp_path / "ck")])
    only = bench.parse_args(["--slices", "cold-start", "--slices-only", "--max-dev", "20",
                             "--checkpoints", str(tmp_path / "ck")])
    assert list(bench.build_slices(both, data, tmp_path / "ck")[0]) == ["dev", "cold-start"]
    assert list(bench.build_slices(only, data, tmp_path / "ck")[0]) == ["cold-start"]


def test_time_shift_dev_scores_later_dev_questions_without_retraining(tmp_path, capsys):
    from pplug.lamp.data import Example, load_split, write_split

    def ex(qid, user, years):
        profile = [{"id": f"{qid}-{y}", "title": f"t{y}", "abstract": "a", "date": f"{y}-01-01"} for y in years]
        return Example(id=qid, input=f"abstract {qid}", profile=profile, output=f"title {qid}", user_id=user)

    data = tmp_path / "data"
    write_split(data, "train", "LaMP_5", [ex("t1", "a", [2001, 2003]), ex("t2", "b", [2005])])
    write_split(data, "dev", "LaMP_5", [ex("d1", "a", [2001, 2003, 2004]), ex("d2", "b", [2002]),
                                        ex("d3", "c", [2009])])
    args = bench.parse_args(["--slices", "time-shift-dev", "--slices-only", "--checkpoints", str(tmp_path / "ck")])
    slices, train_root, extra = bench.build_slices(args, data, tmp_path / "ck")
    folder, split, _, note = slices["time-shift-dev"]
    assert [e.id for e in load_split(folder, split)] == ["d1"] and note.startswith("1 of 2")
    assert train_root == data and extra == ()  # the trained models are reused as they are
    undated = tmp_path / "undated"
    for split, qid in (("train", "t1"), ("dev", "d1")):
        write_split(undated, split, "LaMP_6", [Example(id=qid, input="mail", profile=[{"id": "m", "text": "x",
                                                       "title": "s"}], output="subject", user_id="a")])
    assert bench.build_slices(args, undated, tmp_path / "ck2")[0] == {}
    assert "skip time-shift-dev" in capsys.readouterr().out


def test_time_shift_keeps_every_held_out_question_beside_the_scored_subsample(tmp_path):
    """--max-dev scores a subsample of the held-out questions; `time_shift_all` holds them all, none in `fit`."""
    from pplug.lamp.data import load_split
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=10, seed=1)
    args = bench.parse_args(["--slices", "time-shift", "--slices-only", "--time-shift-latest", "2", "--max-dev", "5",
                             "--checkpoints", str(tmp_path / "ck")])
    slices, root, _ = bench.build_slices(args, data, tmp_path / "ck")
    fit, scored, every = (load_split(root, s).examples for s in ("fit", "time_shift", "time_shift_all"))
    assert len(scored) == 5 < len(every) and {e.id for e in scored} <= {e.id for e in every}
    assert len(fit) + len(every) == len(load_split(data, "train").examples)
    assert not {e.id for e in fit} & {e.id for e in every}


def test_val_holdout_trains_on_fit_and_validates_on_heldout(tmp_path, monkeypatch):
    from pplug.lamp.data import load_split
    from pplug.synth.generate import make_synthetic

    with pytest.raises(SystemExit):
        bench.parse_args(["--val-holdout", "20"])  # single-seed path: no
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0", "--val-holdout", "20", "--slices", "time-shift"])
    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=10, seed=1)
    args = bench.parse_args(["--seeds", "0", "--val-holdout", "20", "--max-steps", "40",
                             "--checkpoints", str(tmp_path / "ck")])
    slices, root, extra = bench.build_slices(args, data, tmp_path / "ck")
    assert list(slices) == ["dev"] and root == tmp_path / "ck" / "val_data"
    fit, held = load_split(root, "fit"), load_split(root, "heldout")
    assert len(held.examples) == 20 and len(fit.examples) + 20 == len(load_split(data, "train").examples)
    assert not {ex.id for ex in fit.examples} & {ex.id for ex in held.examples}
    opts = dict(zip(extra[::2], extra[1::2]))
    assert opts["--data.val_split"] == "heldout" and opts["--trainer.val_check_interval"] == "10"
    assert opts["--trainer.limit_val_batches"] == "1.0"

    seen = []  # the train.py command: the last value of an option is the one LightningCLI keeps
    monkeypatch.setattr(bench, "run_logged", lambda cmd, log, **kw: seen.append(cmd) or 0)
    bench.train_method("music_ratings", "pplug", args, tmp_path / "ck" / "seed0", root, "pplug", extra, seed=0)
    last = {}
    for key, value in zip(seen[0], seen[0][1:]):
        if key.startswith("--"):
            last[key] = value
    assert last["--trainer.limit_val_batches"] == "1.0" and last["--data.train_split"] == "fit"
    assert last["--trainer.val_check_interval"] == "10" and last["--data.root"] == str(root)


def test_selection_split_is_reused_only_for_the_same_size(tmp_path):
    from pplug.lamp.data import load_split
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="ratings", n_users=10, seed=1)
    n_train = len(load_split(data, "train").examples)
    out = bench.write_selection_split(data, tmp_path / "sel", 4, seed=0)
    held = [ex.id for ex in load_split(out, "heldout").examples]
    assert len(held) == 4 and len(load_split(out, "fit").examples) == n_train - 4
    assert bench.write_selection_split(data, tmp_path / "sel", 4, seed=0) == out  # reused as it is
    with pytest.raises(ValueError, match="holds a split with 4 held-out questions, this run asks for 5"):
        bench.write_selection_split(data, tmp_path / "sel", 5, seed=0)
    assert [ex.id for ex in load_split(out, "heldout").examples] == held  # the old split is left intact


def test_paired_times_interleaves_and_drops_the_warmup():
    from timing import paired_times

    calls: list[str] = []
    times = paired_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 interleaved rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and all(t >= 0 for v in times.values() for t in v)


def test_reuse_preds_decodes_only_what_is_missing_or_stale(tmp_path, monkeypatch):
    """--reuse-preds: a second scoring reads the first one's files; a retrained run (newer weights) is scored
    again, alone, under the file name the next --reuse-preds looks for (generation: one row per method)."""
    import os
    import time

    from pplug.decode.evaluate import prediction_path, scored_rows
    from pplug.lamp.data import load_split, subsample, write_outputs
    from pplug.lamp.metrics import score
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="titles", n_users=12, seed=3, min_train=2, max_train=3)
    ck = tmp_path / "ck"
    for seed in (0, 1):
        for run in ("retrieval", "pplug"):
            (ck / f"seed{seed}" / run / "final").mkdir(parents=True)
            (ck / f"seed{seed}" / run / "final" / "pplug.safetensors").write_text("w")
            (ck / f"seed{seed}" / f"{run}.train_seconds").write_text("1.0\n")
    calls = []

    def fake_evaluate(a, checkpoints, folder, split, methods, max_examples, decodings, floors, seed, out,
                      progress, max_new_tokens):  # writes files the way pplug.decode.evaluate.evaluate does
        calls.append((Path(out).parent.parent.name, list(methods)))
        loaded = load_split(folder, split)
        golds = {ex.id: ex.output for ex in subsample(loaded.examples, max_examples, seed)}
        rows = [r for m in methods for r in scored_rows(loaded.task, m, decodings)]
        files, metrics = {}, {}
        for row in rows:
            words = ["user", "model", "title", "study", "data"]
            preds = {i: " ".join(random.Random(f"{out}{row}{i}").choices(words, k=3)) for i in golds}
            path = prediction_path(Path(out).with_suffix(""), row) if len(rows) > 1 else Path(out)
            write_outputs(path, loaded.task.name, preds)
            files[row], metrics[row] = str(path), score(loaded.task, preds, golds)
        return {"files": files, "metrics": metrics}

    monkeypatch.setattr(bench, "run_evaluate", fake_evaluate)
    argv = ["--methods", "retrieval", "pplug", "--seeds", "0", "1", "--skip-train", "--max-dev", "20",
            "--resamples", "50", "--checkpoints", str(ck)]
    first = bench.run_seeds("acl_titles", bench.parse_args(argv), data, ck)
    assert calls == [("seed0", ["none", "retrieval", "pplug"]), ("seed1", ["retrieval", "pplug"])]

    calls.clear()
    again = bench.run_seeds("acl_titles", bench.parse_args([*argv, "--reuse-preds"]), data, ck)
    assert calls == []  # everything was scored before
    assert again["slices"]["dev"]["cells"] == first["slices"]["dev"]["cells"]

    now = time.time()  # seed 1's pplug retrained after it was scored (weights 50 s old, predictions 100 s)
    for path, age in [*((p, 100) for p in (ck / "seed1" / "eval").iterdir()),
                      (ck / "seed1" / "retrieval" / "final" / "pplug.safetensors", 200),
                      (ck / "seed1" / "pplug" / "final" / "pplug.safetensors", 50)]:
        os.utime(path, (now - age, now - age))
    bench.run_seeds("acl_titles", bench.parse_args([*argv, "--reuse-preds"]), data, ck)
    assert calls == [("seed1", ["pplug"])]
    assert prediction_path(ck / "seed1" / "eval" / "dev_preds", "pplug [argmax]").is_file()  # not dev_preds.json
    bench.run_seeds("acl_titles", bench.parse_args([*argv, "--reuse-preds"]), data, ck)
    assert calls == [("seed1", ["pplug"])]  # and found there: nothing decoded again


def test_history_mix_bench_chooses_k_on_heldout_training_questions(tmp_path, tiny_config, capsys, monkeypatch):
    """bench_history_mix.py end to end on tiny models: held-out training questions are the ones the train
    subsample left out, k comes from the grid, and the model-alone rows equal `pplug.decode.inference.predict`'s."""

    import bench_history_mix as mix

    from pplug.decode.inference import predict
    from pplug.lamp.data import load_split, subsample
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, "ratings", n_users=6, seed=0)
    n_train = len(load_split(data, "train").examples)
    ckpt = tmp_path / "ck" / "seed0" / "pplug" / "final"
    model = PPlugModel.from_config(dataclasses.replace(tiny_config, user_stats=True), cache_path=":memory:")
    model.save_pretrained(ckpt)
    out = tmp_path / "mix.json"
    monkeypatch.setattr(sys, "argv", ["bench_history_mix.py", "--checkpoints", str(tmp_path / "ck"), "--data",
                                      str(data), "--seeds", "0", "--max-train", str(n_train - 5), "--max-heldout", "5",
                                      "--max-dev", "8", "--grid", "2", "8", "--out", str(out)])
    mix.main()
    report = json.loads(out.read_text())
    assert report["chosen_k"]["pplug"] in (None, 2.0, 8.0)
    assert set(report["heldout"]["pplug"]["nll"]) == {"None", "2.0", "8.0"}
    dev = load_split(data, "dev")
    examples = subsample(dev.examples, 8, 0)
    loaded = PPlugModel.from_pretrained(ckpt, cache_path=":memory:")
    want = predict(loaded, dev.task, examples, "pplug", ["median"], max_history=loaded.config.max_history)["median"]
    golds = {ex.id: ex.output for ex in examples}
    from pplug.lamp.stats import example_scores

    mae = sum(example_scores(dev.task, want, golds)["mae"].values()) / len(golds)
    assert report["dev"]["cells"]["pplug [median]"]["mae"]["mean"] == pytest.approx(mae)
    assert "pplug+mix [median] - floor: user mean rating mae:" in capsys.readouterr().out
    assert "floor: user majority rating" in report["dev"]["comparisons"]["pplug+mix [median]"]  # every floor, paired
    # a second run reads the recorded distributions back instead of loading the model again
    monkeypatch.setattr(PPlugModel, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded again"))
    out.unlink()
    mix.main()
    assert json.loads(out.read_text())["dev"]["cells"] == report["dev"]["cells"]


def test_history_mix_bench_scores_each_history_prior_as_the_model_decodes_it(tmp_path, tiny_config, monkeypatch):
    """`--priors shares encoder attention`: each prior's parameters come from its grid, and each PPlug row is what
    the checkpoint decodes when loaded with those settings (`history_mix_prior`), so the recipe is the row."""

    import bench_history_mix as mix

    from pplug.decode.inference import predict
    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.stats import aggregate, example_scores
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, "ratings", n_users=6, seed=0)
    n_train = len(load_split(data, "train").examples)
    ckpt = tmp_path / "ck" / "seed0" / "pplug" / "final"
    PPlugModel.from_config(dataclasses.replace(tiny_config, user_stats=True), cache_path=":memory:").save_pretrained(ckpt)
    (ckpt.parents[1] / "pplug.train_seconds").write_text("12.5\n")  # what bench_real_lamp records beside a run
    out = tmp_path / "mix.json"
    monkeypatch.setattr(sys, "argv", ["bench_history_mix.py", "--checkpoints", str(tmp_path / "ck"), "--data",
                                      str(data), "--seeds", "0", "--max-train", str(n_train - 5), "--max-heldout", "5",
                                      "--max-dev", "8", "--grid", "2", "8", "--priors", "shares", "encoder",
                                      "attention", "--encoder-temperatures", "0.05", "0.5", "--model-temperatures", "1",
                                      "3", "--out", str(out)])
    mix.main()
    report = json.loads(out.read_text())
    assert report["train_seconds"] == {"pplug": {"seed0": 12.5}}  # each score beside what it cost to train
    chosen = report["chosen"]
    assert set(chosen) == {"pplug+mix", "pplug+encoder-mix", "pplug+attention-mix", mix.NO_LLM_KNN,
                           mix.attention_knn("pplug")}
    assert chosen["pplug+encoder-mix"]["temperature"] in (0.05, 0.5) and chosen["pplug+encoder-mix"]["k"] in (2, 8)
    dev = load_split(data, "dev")
    examples = subsample(dev.examples, 8, 0)
    golds = {ex.id: ex.output for ex in examples}
    for row, kind in (("pplug+encoder-mix", "encoder"), ("pplug+attention-mix", "attention")):
        c = chosen[row]
        loaded = PPlugModel.from_pretrained(ckpt, cache_path=":memory:", history_mix_items=c["k"],
                                            history_mix_prior=kind,
                                            history_mix_temperature=c["temperature"] or 0.05,
                                            history_mix_model_temperature=c["model_temperature"])
        # the expected rating, not the median: it is continuous, so any difference in the mix shows
        want = predict(loaded, dev.task, examples, "pplug", ["expected"], max_history=loaded.config.max_history)
        rmse = aggregate("rmse", list(example_scores(dev.task, want["expected"], golds)["rmse"].values()))
        assert report["dev"]["cells"][f"{row} [expected]"]["rmse"]["mean"] == pytest.approx(rmse, rel=1e-4), row
    assert f"{mix.NO_LLM_KNN} [median]" in report["dev"]["cells"]
    # the model's attention prior alone: the attention row's prior over the training split's shares, not its LLM
    alone = report["heldout_rows"][mix.attention_knn("pplug")]["nll"]
    with_llm = report["heldout_rows"]["pplug+attention-mix"]["nll"]
    assert set(alone) == {k for k in with_llm if "T=" not in k}  # no LLM: no temperature to read it at
    assert {k for k in with_llm if k.startswith("T=3.0 ")} == {"T=3.0 k=2.0", "T=3.0 k=8.0"}
    assert {k: with_llm[k] for k in alone} != alone


def test_history_mix_bench_scores_the_time_shift_slice_with_k_chosen_on_the_fit_split(tmp_path, tiny_config,
                                                                                     monkeypatch):
    """On bench_real_lamp's time-shift folder (`--train-split fit --split time_shift`) k is chosen on questions
    of `fit` the subsample left out, never on the held-out slice, and the report reads the file as that slice."""

    import bench_history_mix as mix
    from results_data import summaries

    from pplug.lamp.data import load_split, subsample
    from pplug.lamp.slices import time_shift_holdout, write_slice
    from pplug.modeling.model import PPlugModel
    from pplug.synth.generate import make_synthetic

    data, folder = tmp_path / "data", tmp_path / "slices"
    make_synthetic(data, "ratings", n_users=6, seed=0)
    train = load_split(data, "train")
    fit, held = time_shift_holdout(train.examples, 2)
    write_slice(folder, "fit", train.task.name, fit)
    write_slice(folder, "time_shift", train.task.name, held, train_from=data)
    ckpt = tmp_path / "ck" / "seed0" / "pplug" / "final"
    PPlugModel.from_config(dataclasses.replace(tiny_config, user_stats=True), cache_path=":memory:").save_pretrained(ckpt)
    out = tmp_path / "mix.json"
    monkeypatch.setattr(sys, "argv", ["bench_history_mix.py", "--checkpoints", str(tmp_path / "ck"), "--data",
                                      str(folder), "--train-split", "fit", "--split", "time_shift", "--seeds", "0",
                                      "--max-train", str(len(fit) - 5), "--max-heldout", "5", "--grid", "2",
                                      "--out", str(out)])
    mix.main()
    chosen_on = json.loads((ckpt.parent / "eval" / "history_mix_heldout.ids.json").read_text())
    used = {ex.id for ex in subsample(fit, len(fit) - 5, 0)}
    assert len(chosen_on) == 5 and set(chosen_on) <= {ex.id for ex in fit} - used
    report = summaries(json.loads(out.read_text()))
    assert list(report) == ["time-shift"] and report["time-shift"]["n"] == len(held)


def test_rating_shift_levers_calibrate_on_held_out_and_shift_to_the_scored_histories():
    """bench_history_mix's decode-time levers: the label offsets fitted on held-out questions move the
    distribution toward the held-out golds; the label shift moves it toward the scored users' history shares."""
    import bench_history_mix as mix
    import torch

    from pplug.core.tasks import get_task

    task = get_task("LaMP_3")
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(200, 5), dim=-1)  # a model with no preference
    gold = torch.full((200,), 4)  # but every held-out answer is "5"
    b = mix.fit_label_offsets(logp, gold)
    assert int(b.argmax()) == 4 and (logp + b).softmax(-1)[:, 4].mean() > logp.softmax(-1)[:, 4].mean() + 0.3
    # label shift: the scored users rated 5 in every history item, training golds were uniform
    stats = torch.tensor([task.history_stats([{"id": str(i), "text": "x", "score": "5"} for i in range(4)])] * 3)
    probs = torch.full((3, 5), 0.2)
    shifted = mix.label_shift(probs, stats, task, ["1", "2", "3", "4", "5"])
    assert torch.allclose(shifted.sum(-1), torch.ones(3)) and bool((shifted[:, 4] > 0.9).all())
    same = mix.label_shift(probs, stats, task, ["5"] * 5)  # training already rated like the scored users
    assert torch.allclose(same, probs, atol=1e-3)


def test_bench_floors_scores_every_floor_on_the_subsample_and_refuses_bad_sizes(tmp_path, capsys):
    import bench_floors

    from pplug.synth.generate import make_synthetic

    make_synthetic(tmp_path / "music_ratings", kind="ratings", n_users=12, seed=4, min_train=2, max_train=3)
    out = tmp_path / "floors.json"
    assert bench_floors.main(["--root", str(tmp_path), "--sets", "music_ratings", "acl_titles", "--max-dev",
                              "music_ratings=7", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    e = d["sets"]["music_ratings"]
    assert set(d["sets"]) == {"music_ratings"} and "skip acl_titles" in capsys.readouterr().out  # absent: skipped
    assert e["n"] == 7 and {"floor: user mean rating", "floor: user majority rating"} <= set(e["metrics"])
    assert all(0.0 <= m["mae"] <= 4.0 for m in e["metrics"].values())
    with pytest.raises(SystemExit):
        bench_floors.main(["--root", str(tmp_path), "--max-dev", "music_ratings=x", "--out", str(out)])


def test_reuse_preds_reads_a_lone_rows_file_where_evaluate_wrote_it(tmp_path):
    """A variant scored alone with one decoding (generated text): `evaluate` wrote `<stem>.json` itself, not
    `<stem>.<row>.json`; --reuse-preds reads it instead of decoding again."""
    import os
    import time

    from pplug.lamp.data import write_outputs

    weights = tmp_path / "run" / "final"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"")
    old = time.time() - 60
    os.utime(weights / "model.safetensors", (old, old))
    stem = tmp_path / "eval" / "after-prompt"
    stem.parent.mkdir()
    write_outputs(Path(f"{stem}.json"), "LaMP_6", {"q1": "hello", "q2": "world"})
    got = bench.earlier_predictions(stem, ["pplug [argmax]"], weights, {"q1": "a", "q2": "b"})
    assert got == {"pplug [argmax]": {"q1": "hello", "q2": "world"}}
    assert bench.earlier_predictions(stem, ["none [argmax]", "pplug [argmax]"], weights, {"q1": "a"}) is None
    os.utime(Path(f"{stem}.json"), (old - 30, old - 30))  # predictions older than the weights: decode again
    assert bench.earlier_predictions(stem, ["pplug [argmax]"], weights, {"q1": "a", "q2": "b"}) is None


def test_run_seeds_scores_each_generation_decoding_and_reuses_each_alone(tmp_path, monkeypatch):
    """--decodings argmax beam: a generation task decodes once per decoding, every row names its decoding, and
    --reuse-preds then reuses each decoding's files on their own (a beam row added later does not decode argmax
    again)."""
    from pplug.decode.evaluate import prediction_path, prediction_row
    from pplug.lamp.data import load_split, subsample, write_outputs
    from pplug.lamp.metrics import score
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, kind="titles", n_users=12, seed=3)
    ck = tmp_path / "ck" / "acl_titles"
    (ck / "seed0" / "pplug" / "final").mkdir(parents=True)
    (ck / "seed0" / "pplug" / "final" / "model.safetensors").write_bytes(b"")  # --reuse-preds: older than preds
    (ck / "seed0" / "pplug.train_seconds").write_text("2.0\n")
    calls = []

    def fake_evaluate(a, checkpoints, folder, split, methods, max_examples, decodings, floors, seed, out,
                      progress, max_new_tokens):
        calls.append((tuple(methods), tuple(decodings)))
        loaded = load_split(folder, split)
        golds = {ex.id: ex.output for ex in subsample(loaded.examples, max_examples, seed)}
        rows = [prediction_row(m, d) for m in methods for d in decodings]
        files, metrics = {}, {}
        for row in rows:  # pplug [beam] answers the gold; every other row answers one fixed word
            preds = {i: g if row == "pplug [beam]" else "model" for i, g in golds.items()}
            path = Path(out) if len(rows) == 1 else prediction_path(Path(out).with_suffix(""), row)
            write_outputs(path, loaded.task.name, preds)
            files[row], metrics[row] = str(path), score(loaded.task, preds, golds)
        return {"files": files, "metrics": metrics}

    monkeypatch.setattr(bench, "run_evaluate", fake_evaluate)
    argv = ["--sets", "acl_titles", "--methods", "pplug", "--seeds", "0", "--max-dev", "20", "--resamples", "100",
            "--checkpoints", str(tmp_path / "ck"), "--reuse-preds"]
    bench.run_seeds("acl_titles", bench.parse_args(argv), data, ck)  # the default: argmax alone
    assert calls == [(("none", "pplug"), ("argmax",))]
    entry = bench.run_seeds("acl_titles", bench.parse_args(argv + ["--decodings", "argmax", "beam"]), data, ck)
    assert calls[1:] == [(("none", "pplug"), ("beam",))]  # argmax reused, beam decoded once for both methods
    dev = entry["slices"]["dev"]
    assert {"pplug [argmax]", "pplug [beam]", "none [argmax]", "none [beam]"} <= set(dev["cells"])
    assert dev["cells"]["pplug [beam]"]["rouge1"]["mean"] == 1.0
    assert dev["comparisons"]["pplug [beam]"]["none [beam]"]["rouge1"]["leads"]
    assert not dev["comparisons"]["pplug [argmax]"]["none [argmax]"]["rouge1"]["leads"]
    bench.run_seeds("acl_titles", bench.parse_args(argv + ["--decodings", "argmax", "beam"]), data, ck)
    assert len(calls) == 2  # both decodings reused


def test_attention_alone_bench_keeps_the_snapshot_with_the_lowest_heldout_nll(tmp_path):
    """bench_attention_alone.py end to end on a small synthetic label set: each snapshot is scored on the held-out
    slice, the kept one is the snapshot with the lowest held-out NLL, and it is compared with the frozen encoder's
    prior and the floors on the same questions."""
    import bench_attention_alone as alone

    from pplug.synth.generate import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, "tags", n_users=6, seed=0)
    out = tmp_path / "alone.json"
    result = alone.main(["--data", str(data), "--seeds", "0", "--snapshots", "1", "2", "--max-train", "12",
                         "--max-scored", "10", "--time-shift-latest", "1", "--out", str(out)])
    assert json.loads(out.read_text())["dev"] == result["dev"]
    cells, chosen = result["dev"]["cells"], result["chosen"]["seed0"]
    kept = min(chosen["heldout_nll"], key=chosen["heldout_nll"].get)
    assert chosen["steps"] == int(kept)
    assert cells["attention alone, chosen steps"] == cells[f"attention alone, {kept} steps"]
    assert {"encoder kNN, no LLM", "floor: user majority label"} <= set(result["dev"]["comparisons"][
        "attention alone, chosen steps"])
