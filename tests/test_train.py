"""End-to-end training with tiny random models: train.py -> checkpoints -> pplug evaluate; resume; what
checkpoints hold; validation metric == `pplug score`; and one learning test that can fail."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _train_module():
    spec = importlib.util.spec_from_file_location("pplug_train_script", ROOT / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(tiny_config, data: Path, out: Path, run: str, cache: Path, *extra: str) -> list[str]:
    return [
        "--run", run, "--checkpoints_dir", str(out),
        "--model.base_model_name_or_path", tiny_config.base_model_name_or_path,
        "--model.encoder_name_or_path", tiny_config.encoder_name_or_path,
        "--model.embedding_cache", str(cache),
        "--model.max_input_tokens", "64", "--model.max_encoder_tokens", "64",
        "--data.root", str(data), "--data.batch_size", "4", "--data.eval_batch_size", "8",
        "--data.max_val_examples", "6", "--data.max_test_examples", "6",
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(tiny_config, synth_dir, tmp_path_factory):
    """One tiny train.py run (3 steps, validation at step 3, test + `none` comparison)."""
    out = tmp_path_factory.mktemp("runs")
    cache = out / "emb.sqlite"
    result = _train_module().cli_main(_args(tiny_config, synth_dir, out, "tiny", cache,
                                            "--trainer.log_every_n_steps", "1", "--trainer.gradient_clip_val", "1.0"))
    return out / "tiny", result, cache


def test_train_writes_run_folder(trained_run):
    run_dir, result, _ = trained_run
    assert (run_dir / "config.yaml").is_file()  # LightningCLI's resolved config
    assert sorted(p.name for p in (run_dir / "final").iterdir()) == ["pplug.safetensors", "pplug_config.json"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard events under the run folder"
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert {"pplug (trained)", "none", "history-blind ceiling (synth, full dev)"} <= set(metrics)
    # ratings: every decoding, for the trained model and the frozen LLM alike
    saved = json.loads((run_dir / "final" / "pplug_config.json").read_text())["decoding"]  # picked on val
    others = {"argmax", "expected", "median"} - {saved}
    assert {f"{m} [{d}]" for m in ("pplug (trained)", "none") for d in others} <= set(metrics)
    assert set(metrics["pplug (trained)"]) == {"mae", "rmse"}
    # the rows without a bracket name what they are: the saved decoding, the kept weights' step
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["decoding"] == saved and doc["weights_step"] == 3
    assert (run_dir / "predictions" / "test_step-000003.json").is_file()


def test_grad_norm_is_logged_every_step(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = trained_run
    norms = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):  # fit and test may write one file each
        events = EventAccumulator(str(path)).Reload()
        if "train/grad_norm" in events.Tags()["scalars"]:
            norms += [e.value for e in events.Scalars("train/grad_norm")]
    assert len(norms) == 3  # one per optimizer step (log_every_n_steps 1)
    assert all(math.isfinite(n) and n > 0 for n in norms)  # the trainable weights got gradients


def test_ckpt_holds_only_trainable_weights(trained_run):
    from safetensors.torch import load_file

    from pplug.modeling.model import PPlugModel

    run_dir, _, cache = trained_run
    final = load_file(str(run_dir / "final" / "pplug.safetensors"))
    model = PPlugModel.from_pretrained(run_dir / "final", cache_path=cache)
    expected = {f"model.embedder.{k}" for k in model.embedder.state_dict()}
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert set(state["state_dict"]) == expected, ckpt.name
        assert not any(".llm." in k for k in state["state_dict"])
        assert state["optimizer_states"], "optimizer state kept for resuming"
    assert set(final) == {k[len("model."):] for k in expected}


def test_val_metric_equals_pplug_score(trained_run, tmp_path):
    """The val/<metric> logged at the last validation equals `pplug score` on the predictions it wrote."""
    from pplug.cli.main import main
    from pplug.lamp.data import load_outputs, load_split, write_outputs

    run_dir, result, _ = trained_run
    preds = run_dir / "predictions" / "val_last.json"
    task, p = load_outputs(preds)
    assert len(p) == 6  # --data.max_val_examples 6
    split = load_split(result["data_root"], "dev")
    golds = tmp_path / "golds.json"
    write_outputs(golds, task, {ex.id: ex.output for ex in split.examples if ex.id in p})
    assert main(["score", "--preds", str(preds), "--golds", str(golds), "--out", str(tmp_path / "m.json")]) == 0
    scored = json.loads((tmp_path / "m.json").read_text())["metrics"]
    logged = result["logged"]
    assert logged["val/mae"] == pytest.approx(scored["mae"], abs=1e-6)
    assert logged["val/rmse"] == pytest.approx(scored["rmse"], abs=1e-6)
    # ratings: the expected-value decoding is reported separately, from its own predictions file
    _, pe = load_outputs(run_dir / "predictions" / "val_last.expected.json")
    assert all(1.0 <= float(v) <= 5.0 for v in pe.values())
    assert "val/mae_expected" in logged


def test_final_serves_the_decoding_validation_picked(trained_run):
    """`final/` records the rating decoding with the best val/mae (ties keep the configured argmax)."""
    run_dir, result, _ = trained_run
    logged = result["logged"]
    val = {"argmax": logged["val/mae"], "expected": logged["val/mae_expected"], "median": logged["val/mae_median"]}
    saved = json.loads((run_dir / "final" / "pplug_config.json").read_text())["decoding"]
    assert val[saved] == min(val.values())
    assert saved == "argmax" or val[saved] < val["argmax"]


def test_evaluate_from_trained_run(trained_run, synth_dir, tmp_path, capsys):
    from pplug.cli.main import main

    run_dir, _, cache = trained_run
    out = tmp_path / "preds.json"
    rc = main(["evaluate", "--checkpoint", str(run_dir), "--data", str(synth_dir), "--split", "dev",
               "--out", str(out), "--method", "none", "pplug", "--max-examples", "5",
               "--embedding-cache", str(cache), "--decoding", "argmax", "expected"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| pplug [argmax] |" in printed and "| none [argmax] |" in printed and "pplug [expected]" in printed
    report = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert report["n"] == 5
    for row in ("none [argmax]", "pplug [argmax]", "pplug [expected]", "none [expected]"):
        task = json.loads(Path(report["files"][row]).read_text())["task"]
        assert task == "LaMP_3"
        assert set(report["metrics"][row]) == {"mae", "rmse"}


def test_resume_from_interrupted_run(tiny_config, synth_dir, tmp_path):
    """A run stopped after 2 steps continues from last.ckpt to step 4 (global step and optimizer restored)."""
    mod = _train_module()
    cache = tmp_path / "emb.sqlite"
    base = _args(tiny_config, synth_dir, tmp_path, "r", cache, "--test", "false", "--trainer.val_check_interval", "2")
    mod.cli_main(base + ["--trainer.max_steps", "2"])
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=False)
    assert first["global_step"] == 2
    mod.cli_main(base + ["--trainer.max_steps", "4", "--ckpt_path", str(last)])
    second = torch.load(last, map_location="cpu", weights_only=False)
    assert second["global_step"] == 4
    k = next(iter(first["state_dict"]))
    assert not torch.equal(first["state_dict"][k], second["state_dict"][k]) or len(first["state_dict"]) > 1


def test_unknown_method_and_task_mismatch(tiny_config, synth_dir, tmp_path):
    from pplug.train.module import PPlugLitModule

    with pytest.raises(ValueError, match="unknown method"):
        PPlugLitModule(method="bogus", base_model_name_or_path=tiny_config.base_model_name_or_path,
                       encoder_name_or_path=tiny_config.encoder_name_or_path)
    with pytest.raises(ValueError, match="nothing to train"):
        PPlugLitModule(method="none")


def test_datamodule_batches_for_methods(synth_dir):
    from pplug.train.data import LaMPDataModule

    for method, k in (("pplug", 0), ("retrieval", 2), ("pplug+retrieval", 1), ("prompt-tuned", 0)):
        dm = LaMPDataModule(root=str(synth_dir), task="LaMP_3", method=method, batch_size=3, max_history=4,
                            max_train_examples=5, seed=1)
        dm.setup("fit")
        assert len(dm.splits["train"]) == 5
        batch = next(iter(dm.train_dataloader()))
        b = batch.batch
        assert len(b.prompts) == 3 and b.targets is not None
        assert all(p.endswith("\nScore:") for p in b.prompts)
        if method.startswith("pplug"):
            assert all(0 < len(h) <= 4 for h in b.histories)
        else:
            assert all(h == [] for h in b.histories)
        n_items = [p.count(" is the score for ") - 0 for p in b.prompts]
        assert all(n == k for n in n_items), (method, n_items)
    # the same seed gives the same subsample
    a = LaMPDataModule(root=str(synth_dir), task="LaMP_3", max_train_examples=4, seed=3)
    b2 = LaMPDataModule(root=str(synth_dir), task="LaMP_3", max_train_examples=4, seed=3)
    a.setup("fit"), b2.setup("fit")
    assert [e.id for e in a.splits["train"]] == [e.id for e in b2.splits["train"]]


def test_test_questions_are_not_the_validation_questions(synth_dir):
    """The decoding is picked on validation; a test subsample of the same split leaves those questions out,
    and a validation that takes the whole split leaves the test on all of it."""
    from pplug.train.data import LaMPDataModule

    dm = LaMPDataModule(root=str(synth_dir), task="LaMP_3", max_val_examples=5, max_test_examples=None)
    dm.setup(None)
    val, test = {e.id for e in dm.splits["val"]}, {e.id for e in dm.splits["test"]}
    n_dev = len(dm._load("dev", None, 0))
    assert len(val) == 5 and not val & test and len(test) == n_dev - 5
    only_test = LaMPDataModule(root=str(synth_dir), task="LaMP_3", max_val_examples=5, max_test_examples=None)
    only_test.setup("test")  # `trainer.test` alone: the same questions, val drawn as fit draws it
    assert {e.id for e in only_test.splits["test"]} == test
    whole = LaMPDataModule(root=str(synth_dir), task="LaMP_3", max_val_examples=None, max_test_examples=None)
    whole.setup(None)
    assert len(whole.splits["test"]) == len(whole.splits["val"]) == n_dev


def test_history_dropout_keeps_order_and_drops_some(tiny_config, tmp_path):
    from pplug.core.batch import PPlugBatch
    from pplug.train.config import TrainConfig
    from pplug.train.module import PPlugLitModule

    m = PPlugLitModule(TrainConfig(history_dropout=1.0), base_model_name_or_path=tiny_config.base_model_name_or_path,
                       encoder_name_or_path=tiny_config.encoder_name_or_path,
                       embedding_cache=str(tmp_path / "c.sqlite"), input_encoder="frozen")
    hist = [[f"item {i}" for i in range(20)] for _ in range(50)]
    labels = [list(range(20)) for _ in range(50)]  # item i carries label i: the labels must follow their items
    batch = PPlugBatch(prompts=["p"] * 50, queries=["q"] * 50, histories=hist, history_labels=labels)
    out = m._drop_history(batch)
    for h, y in zip(out.histories, out.history_labels):
        assert 10 <= len(h) <= 19  # 1-50% of 20 items dropped
        assert h == sorted(h, key=lambda s: int(s.split()[1]))
        assert y == [int(s.split()[1]) for s in h]


def _responsive_tiny_llm(tokenizer_dir: Path, out: Path) -> Path:
    """A tiny Llama whose output a soft prompt can steer.

    The shared fixture's LLM has unit-variance embeddings tied to its output layer, so every position
    predicts its own token with a huge margin and no prefix can move it; HF's default init (0.02) makes the
    opposite problem (all logits ~0). A 0.3 init sits in between.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, initializer_range=0.3)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.real_model
def test_pplug_learns_user_signal_beyond_history_blind_ceiling(tiny_causal_llm_dir, tmp_path):
    """Users whose ratings are set by a personal bias (+-4): only the history tells a 1-user from a 5-user.

    A short PPlug run (tiny LLM, the real all-MiniLM-L6-v2 history encoder: the tiny random encoder does not
    separate "1 is the score for ..." from "5 is the score for ...") must beat synth's history-blind ceiling on
    dev MAE by a wide margin.
    """
    from pplug.synth.generate import make_synthetic

    data = tmp_path / "strong"
    report = make_synthetic(data, kind="ratings", n_users=40, biases=(-4, 4), noise=0.0, min_train=4, max_train=6,
                            min_history=6, max_history=10)
    ceiling = report["history_blind_ceiling"]["mae"]
    llm = _responsive_tiny_llm(tiny_causal_llm_dir, tmp_path / "llm")
    result = _train_module().cli_main([
        "--run", "learn", "--checkpoints_dir", str(tmp_path),
        "--model.base_model_name_or_path", str(llm), "--model.encoder_name_or_path", "default",
        "--model.embedding_cache", str(tmp_path / "c.sqlite"), "--model.max_input_tokens", "64",
        "--model.input_encoder", "frozen", "--model.lr", "0.01", "--model.warmup_ratio", "0.0",
        "--data.root", str(data), "--data.batch_size", "8", "--data.eval_batch_size", "40",
        "--data.max_val_examples", "40", "--trainer.max_steps", "200", "--trainer.val_check_interval", "100",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--compare_none", "false",
    ])
    mae = result["metrics"]["pplug (trained)"]["mae"]
    assert mae < ceiling - 0.5, (mae, ceiling)


class _FixedLogprobs:
    """Stands in for a model: `choice_logprobs` returns fixed distributions over the labels."""

    def __init__(self, probs: list[list[float]]) -> None:
        self.logp = torch.tensor(probs).log()

    def choice_logprobs(self, batch, labels):
        return self.logp


def test_rating_decodings_argmax_expected_median():
    """argmax = mode, expected = mean, median = the first rating whose cumulative probability reaches 1/2."""
    from pplug.core.tasks import get_task
    from pplug.decode.inference import decode

    probs = [[0.40, 0.05, 0.10, 0.05, 0.40],  # bimodal: mode is a tie (first wins), median is 3
             [0.00, 0.00, 0.10, 0.35, 0.55],  # skewed high: median 5, mean 4.45
             [0.50, 0.00, 0.00, 0.00, 0.50]]  # cdf reaches exactly 1/2 at "1"
    out = decode(_FixedLogprobs(probs), get_task("LaMP_3"), batch=None, decoding=["argmax", "expected", "median"])
    assert out["argmax"] == ["1", "5", "1"]
    assert out["median"] == ["3", "5", "1"]
    assert [round(float(x), 2) for x in out["expected"]] == [3.0, 4.45, 3.0]


def test_verdict_names_the_gain_over_the_frozen_llm_and_the_ceiling(trained_run):
    _, result, _ = trained_run
    # the tiny run is on synthetic data, so its metrics.json holds the verdict next to the ceiling it used
    saved = json.loads((Path(result["run_dir"]) / "metrics.json").read_text(encoding="utf-8"))
    assert saved["verdict"] == result["verdict"] and result["verdict"].startswith("verdict: pplug (trained) mae ")

    verdict = _train_module().personalization_verdict
    ceiling = "history-blind ceiling (synth, full dev)"
    rows = {"pplug (trained)": {"mae": 0.70}, "none": {"mae": 1.90}, ceiling: {"mae": 0.933}}
    line = verdict(rows, "pplug (trained)", "mae", higher_is_better=False)
    assert "+1.200 against the frozen LLM alone (1.900)" in line
    assert "+0.233 (+25.0%) against the history-blind ceiling (0.933)" in line and "it personalizes" in line
    rows["pplug (trained)"]["mae"] = 1.0  # worse than the ceiling: the plain word, not a gain
    line = verdict(rows, "pplug (trained)", "mae", higher_is_better=False)
    assert "-0.067" in line and "NOT personalized" in line
    # higher-is-better metrics (accuracy) and data without a ceiling (real LaMP files)
    line = verdict({"pplug (trained)": {"accuracy": 0.6}, "none": {"accuracy": 0.5}}, "pplug (trained)",
                   "accuracy", higher_is_better=True)
    assert line.endswith("+0.100 against the frozen LLM alone (0.500)") and "ceiling" not in line
    assert verdict({}, "pplug (trained)", "mae", higher_is_better=False) is None
