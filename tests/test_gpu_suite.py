"""benchmarks/gpu_suite.py as a GPU run would use it, on tiny models on a CPU: every part runs and writes its JSON
with its meta, so that the GPU's minutes go to measuring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_suite_runs_every_part_on_tiny_models(tmp_path):
    from benchmarks.meta import META_KEYS

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PPLUG_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--device", "cpu", "--tiny", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.startswith("gpu_suite: GPU ")  # what it found comes first
    suite = json.loads((out / "suite.json").read_text())
    parts = {p["part"]: p for p in suite["parts"]}
    assert list(parts) == ["make_train", "prefill_b8", "prefill_b64", "server", "lora_hub_cost"]
    for name, part in parts.items():
        assert part["status"] == "done" and part["file"] == f"{name}.json", part
        doc = json.loads((out / part["file"]).read_text())
        assert set(META_KEYS) <= set(doc["meta"]) and doc["meta"]["device"] == "cpu", (name, doc["meta"])
        assert doc["meta"]["dtype"] == "float32" and doc["weights"].startswith("tiny random models"), name
    assert "verdict" not in json.loads((out / "make_train.json").read_text())  # random weights: no quality
    assert (out / "logs.txt").is_file() and len(list(out.iterdir())) <= 8  # what a device run returns
