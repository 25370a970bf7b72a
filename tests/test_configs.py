"""The configs layer as documented (configs/base.yaml under every recipe, configs/synthetic.yaml when none is
named), each recipe resolves through train.py's own parser to the settings it has always trained with, and the
one `TrainConfig` reaches the optimiser: its groups, and a learning rate equal to PPlug's formula at every step."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "base.yaml"
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p != BASE)


@pytest.fixture(scope="module")
def train_script():
    spec = importlib.util.spec_from_file_location("pplug_train_script_configs", ROOT / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def resolve(train_script, *args: str) -> dict:
    """The config train.py resolves for `args` (its `--print_config`, which parses and validates every field)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        train_script.cli_main([*args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def flat(section: dict | None, prefix: str = "") -> dict:
    out = {}
    for key, value in (section or {}).items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read(path: Path) -> dict:
    return flat(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_recipe_is_the_base_plus_what_it_lists(train_script, path):
    """A recipe's own fields win, every other field is the base's, no field repeats the base (a recipe lists only
    what differs), and the model fields make a valid PPlugConfig (a typo or a bad value fails here, not an hour
    into a benchmark)."""
    from pplug.modeling.config import PPlugConfig

    resolved, base, recipe = flat(resolve(train_script, "--config", str(path))), read(BASE), read(path)
    assert {k: resolved[k] for k in recipe} == recipe
    assert {k: resolved[k] for k in base if k not in recipe} == {k: v for k, v in base.items() if k not in recipe}
    repeated = {k for k in recipe if k in base and base[k] == recipe[k]}
    assert not repeated, f"{path.name} repeats configs/base.yaml: {sorted(repeated)}"
    fields = {f.name for f in dataclasses.fields(PPlugConfig)}
    PPlugConfig(**{k[len("model."):]: v for k, v in resolved.items() if k[len("model."):] in fields})


EXPECTED = {  # what each recipe trained with before configs/base.yaml, where a leak from another recipe would show
    "synthetic.yaml": {"run": "pplug-synthetic", "trainer.max_steps": 60, "model.temperature": 0.05,
                       "model.aggregation": "mixed", "model.label_token": True, "model.stats_init": "labels",
                       "model.warmup_ratio": 0.3, "model.rating_loss_weight": 1.0, "model.max_input_tokens": 128,
                       "data.max_val_examples": 50, "data.max_test_examples": 200},
    "synth_ratings.yaml": {"trainer.max_steps": 100, "model.temperature": 1.0, "model.aggregation": "mixed",
                           "model.label_token": False, "model.stats_init": "random", "model.warmup_ratio": 0.05,
                           "model.max_input_tokens": 128, "model.max_target_tokens": 8,
                           "data.root": "lamp_data/synthetic/ratings", "data.max_val_examples": 50},
    "lamp3.yaml": {"trainer.max_steps": 1000, "trainer.val_check_interval": 250, "model.temperature": 1.0,
                   "model.aggregation": "mixed", "model.user_stats": True, "model.label_token": False,
                   "model.history_mix_items": 16, "model.max_input_tokens": 256, "data.max_train_examples": 8000},
    "lamp5.yaml": {"model.aggregation": "input_aware", "model.user_stats": False, "model.rating_loss_weight": 0.0,
                   "model.warmup_ratio": 0.05, "model.max_history": 512, "data.max_val_examples": 200},
    "real/acl_titles.yaml": {"model.soft_prompt_position": "after_prompt", "trainer.max_steps": 358,
                             "trainer.val_check_interval": 179, "model.max_input_tokens": 128,
                             "model.max_target_tokens": 32, "data.max_train_examples": 1600},
    "real/enron_subjects.yaml": {"trainer.gradient_clip_val": 1.0, "model.max_input_tokens": 128,
                                 "model.soft_prompt_position": "after_prompt", "trainer.max_steps": 460,
                                 "model.max_encoder_tokens": 128, "model.max_history": 32,
                                 "data.max_train_examples": 1600},
    "real/music_ratings.gpu.yaml": {"trainer.max_steps": 1000, "trainer.limit_val_batches": 0, "model.lr": 0.001,
                                    "model.torch_dtype": "auto", "model.max_input_tokens": 384,
                                    "model.decoding": "median", "data.batch_size": 8, "data.eval_batch_size": 32,
                                    "data.max_train_examples": None},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipes_keep_the_settings_they_trained_with(train_script, name):
    resolved = flat(resolve(train_script, "--config", str(ROOT / "configs" / name)))
    assert {k: resolved[k] for k in EXPECTED[name]} == EXPECTED[name]


def test_no_config_trains_the_synthetic_default(train_script):
    """`python train.py` reads configs/synthetic.yaml; a flag still overrides it, and `-c`/`--config=` name a recipe."""
    synthetic = resolve(train_script, "--config", str(ROOT / "configs" / "synthetic.yaml"))
    assert resolve(train_script) == synthetic
    assert resolve(train_script, "--model.lr", "0.002")["model"] == {**synthetic["model"], "lr": 0.002}
    lamp3 = resolve(train_script, "--config", str(ROOT / "configs" / "lamp3.yaml"))
    assert resolve(train_script, "-c", str(ROOT / "configs" / "lamp3.yaml")) == lamp3
    assert resolve(train_script, f"--config={ROOT / 'configs' / 'lamp3.yaml'}") == lamp3


def test_cli_flags_are_the_train_configs_fields():
    """train.py's flat `--model.<field>` optimiser flags are TrainConfig's fields, with its defaults."""
    from pplug.train.config import OPTIMIZER_FIELDS, TrainConfig
    from pplug.train.module import lit_module

    flags = {n: p.default for n, p in inspect.signature(lit_module).parameters.items()
             if p.kind is not inspect.Parameter.VAR_KEYWORD}
    assert flags == {name: getattr(TrainConfig(), name) for name in OPTIMIZER_FIELDS}


def pplug_lr_factor(step: int, warmup: int, total: int) -> float:
    """The warm-up pplug wrote by hand before it used transformers' (train/module.py until issue 44)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize("total, ratio", [(60, 0.3), (1000, 0.05), (200, 0.05), (7, 0.0), (1, 0.3), (3, 0.5)])
def test_schedule_equals_pplugs_formula_at_every_step(total, ratio):
    from pplug.train.config import TrainConfig
    from pplug.train.module import pplug_linear_schedule

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [weight], "lr": 1e-3}], lr=1e-3)
    warmup = TrainConfig(warmup_ratio=ratio).warmup_steps(total)
    scheduler = pplug_linear_schedule(optimizer, warmup, total)
    for step in range(total):
        assert optimizer.param_groups[0]["lr"] == 1e-3 * pplug_lr_factor(step, warmup, total), step
        weight.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()


def test_optimizer_groups_follow_the_train_config(tiny_config, tmp_path):
    """The trainable input encoder's weights (exactly those) at encoder_lr, the rest at lr, both on PPlug's curve."""
    from pplug.train.config import TrainConfig
    from pplug.train.module import PPlugLitModule

    training = TrainConfig(lr=2e-3, encoder_lr=5e-4, weight_decay=0.01, warmup_ratio=0.3)
    module = PPlugLitModule.from_config(tiny_config, training, embedding_cache=str(tmp_path / "c.sqlite"))
    assert module.config.input_encoder == "trainable"
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    encoder = {id(p) for p in module.model.embedder.input_encoder.parameters()}
    rest, enc = optimizer.param_groups
    assert {id(p) for p in enc["params"]} == encoder and not encoder & {id(p) for p in rest["params"]}
    assert rest["params"] and all(p.requires_grad for p in rest["params"] + enc["params"])
    assert (rest["lr"], enc["lr"]) == (2e-3 * pplug_lr_factor(0, 3, 10), 5e-4 * pplug_lr_factor(0, 3, 10))
    assert rest["weight_decay"] == enc["weight_decay"] == 0.01
    assert module.hparams.lr == 2e-3 and module.hparams.warmup_ratio == 0.3  # flat, as config.yaml has them


def test_train_config_rejects_bad_values():
    from pplug.hub.train import HubTrainConfig
    from pplug.train.config import TrainConfig

    for bad in ({"warmup_ratio": 1.0}, {"history_dropout": 1.5}, {"lr": 0.0}, {"epochs": 0}, {"max_steps": 0},
                {"max_grad_norm": 0.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="num_adapters"):
        HubTrainConfig(num_adapters=0)
    hub = HubTrainConfig()  # LoRA's defaults over PPlug's
    assert (hub.lr, hub.weight_decay, hub.max_grad_norm, hub.encoder_lr) == (2e-4, 0.0, 1.0, None)
    assert isinstance(hub, TrainConfig) and hub.warmup_steps(100) == 5
