"""TEMPORARY (issue 44): FrozenLLM.sample before/after the split, causal and seq2seq."""
import json
import os
import shutil
from pathlib import Path


def test_sample(tiny_causal_llm_dir, tiny_seq2seq_llm_dir):
    from pplug.modeling.llm import FrozenLLM

    models = Path("/tmp/golden_sample_models")
    if not models.exists():
        shutil.copytree(tiny_causal_llm_dir, models / "causal")
        shutil.copytree(tiny_seq2seq_llm_dir, models / "s2s")
    import torch

    out = {}
    for kind in ("causal", "s2s"):
        llm = FrozenLLM(str(models / kind), dtype="float32", device="cpu")
        prompts = ["hello there", "a b c d", "x"]
        torch.manual_seed(0)
        prefix = torch.randn(3, 2, llm.token_dim)
        for first_line in (False, True):
            out[f"{kind}-{first_line}"] = llm.sample(prefix, prompts, num_samples=[2, 0, 3], temperature=[1.0, 2.0, 0.7],
                                                    top_p=[1.0, 0.9, 0.5], max_new_tokens=7, seed=[1, 2, 3],
                                                    first_line=first_line)
        out[f"{kind}-int"] = llm.sample(None, prompts, num_samples=2, max_new_tokens=5, seed=5)
        out[f"{kind}-none"] = llm.sample(None, prompts, num_samples=0)
    path = os.environ["GOLDEN"] + ".sample.json"
    if os.environ.get("GOLDEN_COMPARE"):
        assert json.loads(open(path).read()) == out
    else:
        open(path, "w").write(json.dumps(out))
