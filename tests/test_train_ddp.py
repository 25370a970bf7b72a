"""Distributed evaluation: `train.py --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu` (two
gloo processes) scores every validation and test question exactly once, on all ranks' predictions together, and
saves the decoding one process would save."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_train import ROOT, _args, _train_module


@pytest.mark.slow
def test_two_processes_score_like_one(tiny_config, synth_dir, tmp_path):
    # The same seeded weights in both runs: the learning rate is too small to move a float32 weight, because DDP
    # trains on twice the rows per step and would otherwise end with other weights. Shards of unequal size (5
    # validation questions, 7 test questions, 2 a batch) are the case a padding sampler would score twice.
    common = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.max_val_examples", "5",
              "--data.max_test_examples", "7", "--data.eval_batch_size", "2", "--model.lr", "1e-12",
              "--model.encoder_lr", "1e-12", "--compare_none", "false"]
    one = _train_module().cli_main(_args(tiny_config, synth_dir, tmp_path, "one", tmp_path / "emb1.sqlite", *common))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ddp = subprocess.run(
        [sys.executable, str(ROOT / "train.py"),
         *_args(tiny_config, synth_dir, tmp_path, "two", tmp_path / "emb2.sqlite", *common),
         "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "replicates some samples" not in ddp.stderr  # no padding DistributedSampler of Lightning's
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())

    assert two["n_test"] == one["n_test"] == 7
    for stage in ("val", "test"):  # every question once: the predictions files hold each id once, all of them
        a = json.loads((tmp_path / "one" / "predictions" / f"{stage}_last.json").read_text())["golds"]
        b = json.loads((tmp_path / "two" / "predictions" / f"{stage}_last.json").read_text())["golds"]
        assert sorted(x["id"] for x in b) == sorted(x["id"] for x in a)
        assert len({x["id"] for x in b}) == len(b) == (5 if stage == "val" else 7)
    assert two["metrics"].keys() == one["metrics"].keys()
    for row, metrics in one["metrics"].items():
        for name, value in metrics.items():
            assert two["metrics"][row][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (row, name)
    # val/loss too: a mean over the rows of both ranks together, none of them twice
    val = {k: v for k, v in one["logged"].items() if k.startswith("val/")}
    assert "val/loss" in val and {k: two["logged"][k] for k in val} == pytest.approx(val, rel=1e-5, abs=1e-6)
    saved = [json.loads((tmp_path / r / "final" / "pplug_config.json").read_text())["decoding"] for r in ("one", "two")]
    assert saved[0] == saved[1]
    # the choice is made once: at most one line about it, from rank 0
    assert (ddp.stdout + ddp.stderr).count("saved with the checkpoint") <= 1
