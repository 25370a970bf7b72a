"""Device / dtype decisions and progress reporting (pplug.core.runtime), with the CPU's capabilities mocked."""

from __future__ import annotations

import io
import types

import pytest
import torch

from pplug.core import runtime


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the CPU flags `cpu_has_native_bf16` sees (and clear its cache)."""

    monkeypatch.setattr(runtime, "_said", set())  # decisions are printed once per process: start afresh

    def set_flags(flags: set[str]) -> None:
        monkeypatch.setattr(runtime, "cpu_flags", lambda: set(flags))
        runtime.cpu_has_native_bf16.cache_clear()

    yield set_flags
    runtime.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("flags", [{"fma", "avx", "avx2"}, {"avx2", "avx512f", "avx512_bf16"},
                                   {"fp", "asimd", "bf16"}, {"avx2", "amx_bf16", "amx_tile"}])
def test_auto_dtype_on_cpu_is_float32_whatever_the_host(cpu_flags, capsys, flags):
    cpu_flags(flags)
    assert runtime.resolve_dtype("auto", "cpu") == "float32"
    assert runtime.resolve_dtype(None, "cpu") == "float32"
    assert "torch_dtype auto -> float32 on cpu" in capsys.readouterr().err


def test_explicit_dtype_always_wins_and_emulated_bf16_is_warned_about(cpu_flags, capsys):
    cpu_flags({"avx2"})
    assert runtime.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert "emulates it" in capsys.readouterr().err
    cpu_flags({"avx512_bf16"})
    assert runtime.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert "emulates" not in capsys.readouterr().err
    assert runtime.resolve_dtype("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="torch_dtype must be one of"):
        runtime.resolve_dtype("fp8", "cpu")


def test_auto_dtype_on_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert runtime.resolve_dtype("auto", "cuda") == "float16"
    assert runtime.resolve_dtype("auto", "mps") == "float32"


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto") == torch.device("cuda")
    assert runtime.default_batch_size("cuda", cpu=16, accelerator=64) == 64
    assert runtime.default_batch_size("cpu", cpu=16, accelerator=64) == 16


def test_line_progress_prints_step_rate_and_eta(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(runtime.sys, "stderr", buf)
    clock = iter([0.0, 20.0, 21.0, 40.0, 50.0])
    # a fake clock for this module only (patching time.monotonic itself would feed pytest's own timers too)
    monkeypatch.setattr(runtime, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    bar = runtime.LineProgress(total=100, desc="predict pplug", unit="ex", every_s=15)  # t0 = 0
    bar.update(40)  # t = 20: printed (>= 15 s since the last line)
    bar.update(10)  # t = 21: not printed
    bar.update(50)  # t = 40: the end is always printed
    lines = buf.getvalue().splitlines()
    assert lines == ["predict pplug: 40/100 (2.00 ex/s, ETA 30s)", "predict pplug: 100/100 (2.50 ex/s, ETA 0s)"]
    quiet = runtime.progress(10, "x", enabled=False)
    quiet.update(10)
    assert quiet.n == 10 and buf.getvalue().count("\n") == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_runs_on_cuda(tiny_config):
    from pplug.core.batch import PPlugBatch
    from pplug.modeling.model import PPlugModel

    model = PPlugModel.from_config(tiny_config, cache_path=":memory:", device="cuda")
    assert model.device.type == "cuda" and model.history_encoder.device.startswith("cuda")
    batch = PPlugBatch(prompts=["review: good\nScore:"], queries=["good"], histories=[['5 is the score for "x"']])
    assert model.choice_logprobs(batch, ["1", "5"]).shape == (1, 2)
