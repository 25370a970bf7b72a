"""Stopping and resuming train.py (tiny random models): SIGTERM saves a checkpoint and says how to resume, the
resumed run ends where a run that was never stopped ends, and `--ckpt_path last` without a checkpoint is an error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file
from test_train import ROOT, _args, _train_module


def _run(args: list[str]) -> subprocess.CompletedProcess:
    """`python train.py args` in a subprocess (the signal and the exit code are the process's own)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def stop_resume(tiny_config, synth_dir, tmp_path_factory):
    """The same seeded 10-step run three ways: straight through; stopped by SIGTERM after step 6 (mid-epoch:
    4 batches an epoch, validations at steps 4 and 8); and resumed from that stop with `--ckpt_path last`."""
    out = tmp_path_factory.mktemp("resume")
    mod = _train_module()

    def args(run: str, *extra: str) -> list[str]:
        return _args(tiny_config, synth_dir, out, run, out / "emb.sqlite", "--trainer.max_steps", "10",
                     "--trainer.val_check_interval", "4", "--data.max_val_examples", "4", *extra)

    straight = mod.cli_main(args("straight"))
    stop = _run(args("stopped", "--trainer.callbacks",
                     '[{"class_path": "fakes.SignalAtStep", "init_args": {"step": 6}}]'))
    saved = torch.load(out / "stopped" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = mod.cli_main(args("stopped", "--ckpt_path", "last"))
    resumed["warnings"] = [str(w.message) for w in caught]
    return out, straight, stop, saved, resumed


def test_sigterm_saves_a_checkpoint_and_names_the_resume_command(stop_resume):
    out, _, stop, saved, _ = stop_resume
    assert stop.returncode == 128 + signal.SIGTERM, stop.stderr[-2000:]
    last = stop.stderr.strip().splitlines()[-1]  # one line, no traceback
    assert last.startswith("train.py: stopped by SIGTERM at step 6, saved ") and last.endswith("--ckpt_path last")
    assert "resume with: python train.py " in last and "--run stopped" in last
    assert saved["global_step"] == 6
    assert not (out / "stopped" / "final").exists() or saved["global_step"] < 10  # nothing claims to be final


def test_resume_continues_the_epoch_and_matches_an_uninterrupted_run(stop_resume):
    out, straight, _, saved, resumed = stop_resume
    # the checkpoint knows where in the epoch's order the run stopped: epoch 1, 2 of its 4 batches
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (loader["epoch"], loader["batches"]) == (1, 2)
    assert not [w for w in resumed["warnings"] if "not resumable" in w or "no last checkpoint" in w]
    last = {run: torch.load(out / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for run in ("straight", "stopped")}
    assert last["straight"]["global_step"] == last["stopped"]["global_step"] == 10
    # the weights after the last step (the data order, dropout masks and optimizer all continued), and final/
    a, b = last["straight"]["state_dict"], last["stopped"]["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    a = load_file(str(out / "straight" / "final" / "pplug.safetensors"))
    b = load_file(str(out / "stopped" / "final" / "pplug.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    assert resumed["logged"].keys() == straight["logged"].keys()
    for k, v in straight["logged"].items():
        assert resumed["logged"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert resumed["metrics"].keys() == straight["metrics"].keys()
    for row, metrics in straight["metrics"].items():
        for name, v in metrics.items():
            assert resumed["metrics"][row][name] == pytest.approx(v, rel=1e-5, abs=1e-6), (row, name)
    decoding = [json.loads((out / r / "final" / "pplug_config.json").read_text())["decoding"]
                for r in ("straight", "stopped")]
    assert decoding[0] == decoding[1]


@pytest.mark.parametrize(("signum", "every", "saved_step"), [
    (signal.SIGINT, [], 3),  # Ctrl-C: as SIGTERM, the step it came in is finished and saved; exit 130
    (signal.SIGKILL, ["--checkpoint_every_steps", "2"], 2),  # kill -9: the last periodic checkpoint is left
])
def test_ctrl_c_and_kill_leave_a_checkpoint(tiny_config, synth_dir, tmp_path, signum, every, saved_step):
    args = _args(tiny_config, synth_dir, tmp_path, "r", tmp_path / "emb.sqlite", "--trainer.max_steps", "6",
                 "--trainer.val_check_interval", "6", "--test", "false", *every, "--trainer.callbacks",
                 json.dumps([{"class_path": "fakes.SignalAtStep", "init_args": {"step": 3, "signum": int(signum)}}]))
    proc = _run(args)
    assert proc.returncode == (-signum if signum == signal.SIGKILL else 128 + signum), proc.stderr[-2000:]
    if signum == signal.SIGINT:
        assert proc.stderr.strip().splitlines()[-1].startswith("train.py: stopped by SIGINT at step 3, saved ")
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == saved_step


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tiny_config, synth_dir, tmp_path):
    mod = _train_module()
    args = _args(tiny_config, synth_dir, tmp_path, "new", tmp_path / "emb.sqlite", "--ckpt_path", "last")
    with pytest.raises(mod.TrainSetupError, match=r"--ckpt_path last: no checkpoint to resume in .*new"):
        mod.cli_main(args)
    assert not (tmp_path / "new" / "checkpoints").exists()  # nothing started from step 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tiny_config, synth_dir, tmp_path):
    """Printed by train.py as `train.py: error: <this>`, exit code 2 (as `--ckpt_path last` above)."""
    mod = _train_module()
    with pytest.raises(mod.TrainSetupError) as e:
        mod.cli_main(_args(tiny_config, synth_dir, tmp_path, "gpu", tmp_path / "emb.sqlite",
                           "--trainer.accelerator", "gpu"))
    assert str(e.value) == ("--trainer.accelerator gpu: no GPU on this machine (use --trainer.accelerator cpu, or "
                            "auto to take what there is)")


def test_training_order_is_the_one_torch_random_sampler_gave():
    """One process: the same batches, epoch after epoch, as `DataLoader(shuffle=True)` under the same seed (runs
    keep their order); resumed mid-epoch, the rest of that epoch's order."""
    from torch.utils.data import DataLoader

    from pplug.train.data import ResumableLoader, TrainSampler

    data = list(range(10))

    def epochs(loader, n=3):
        out = []
        for epoch in range(n):
            if isinstance(loader.sampler, TrainSampler):
                loader.sampler.set_epoch(epoch)  # as Lightning does
            out.append([b.tolist() for b in loader])
        return out

    torch.manual_seed(7)
    before = epochs(DataLoader(data, batch_size=4, shuffle=True))
    torch.manual_seed(7)
    loader = ResumableLoader(data, TrainSampler(data), batch_size=4)
    assert epochs(loader) == before
    assert len({str(e) for e in before}) == 3  # a new order every epoch

    torch.manual_seed(7)
    first = ResumableLoader(data, TrainSampler(data), batch_size=4)
    it = iter(first)
    next(it)
    state = first.state_dict()
    assert (state["epoch"], state["batches"]) == (0, 1)
    again = ResumableLoader(data, TrainSampler(data), batch_size=4)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == before[0][1:]

    # stopped after an epoch's last batch, resumed in a process whose generators are elsewhere: the next epoch's
    # order is the uninterrupted one (the checkpoint's generators are back before it starts)
    torch.manual_seed(7)
    first = ResumableLoader(data, TrainSampler(data), batch_size=4)
    assert [b.tolist() for b in first] == before[0]
    state = first.state_dict()
    torch.manual_seed(123)
    again = ResumableLoader(data, TrainSampler(data), batch_size=4)
    again.load_state_dict(state)
    assert list(again) == []
    again.sampler.set_epoch(1)
    assert [b.tolist() for b in again] == before[1]


def test_two_ranks_share_the_order_and_each_evaluation_row_once():
    from pplug.train.data import EvalSampler, TrainSampler

    data = list(range(7))
    shards = [list(TrainSampler(data, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4 and set(shards[0] + shards[1]) == set(data)  # one row padded
    evals = [list(EvalSampler(data, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == data and [len(EvalSampler(data, 2, r)) for r in (0, 1)] == [4, 3]
