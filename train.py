"""Train PPlug (or a baseline) with LightningCLI, then evaluate it on dev next to the `none` baseline.

    python train.py                                   # PPlug on the synthetic default (configs/synthetic.yaml)
    python train.py --config configs/lamp3.yaml       # official LaMP_3 files under lamp_data/LaMP_3
    python train.py --config configs/real/music_ratings.yaml --trainer.max_steps 100 --data.root DIR
    python train.py --model.method prompt-tuned --run prompt-tuned   # a baseline's instruction embedding
    python train.py --run pplug --ckpt_path last      # resume an interrupted run from its last.ckpt
    python train.py --trainer.strategy ddp --trainer.devices 2        # DDP, no code change
    python train.py --print_config                    # every field, resolved

No `fit` subcommand: train.py runs fit, then test on `data.test_split` (dev by default; `--test false`
skips it), then scores the frozen LLM alone (`none`) on the same examples and prints one table (plus the
history-blind ceiling when the data is synthetic). LightningCLI is built with `run=False` so the
command line stays `python train.py [--config X] [--field value ...]`. Configs layer: `configs/base.yaml` (PPlug as
published) is always read first, then the recipe (`--config X`; `configs/synthetic.yaml` when none is named), then
any `--field value`; a recipe lists only what differs from the base.

Everything of a run lands in `<checkpoints_dir>/<run>/`: `config.yaml` (resolved config), TensorBoard
events, `checkpoints/{step-*,last}.ckpt` (trainable weights + optimizer only, for resuming), validation /
test predictions, `metrics.json` and `final/` (`pplug_config.json` + `pplug.safetensors`, the weights of
the best validation checkpoint) for `pplug evaluate` / `pplug generate`.

Stopping and resuming: `last.ckpt` is rewritten after every validation, every `--checkpoint_every_minutes`
(10) or `--checkpoint_every_steps` of training, and when SIGTERM or Ctrl-C stops the run after its current step
(exit code 128 + the signal, one line naming the resume command). `--ckpt_path last` continues from it exactly:
the step, the optimizer, the place in the epoch's data order and the random generators.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pplug.train.callbacks import LogProgress, StopAndSave
from pplug.train.data import LaMPDataModule
from pplug.train.module import PPlugLitModule, lit_module  # noqa: E402

HERE = Path(__file__).resolve().parent
BASE_CONFIG = HERE / "configs" / "base.yaml"
SYNTHETIC_CONFIG = HERE / "configs" / "synthetic.yaml"


class PPlugCLI(LightningCLI):
    """LightningCLI with a run name, resume path, and model -> data links (one source for shared fields)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run", type=str, default="pplug", help="run name: outputs go to <checkpoints_dir>/<run>/")
        parser.add_argument("--checkpoints_dir", type=str, default="checkpoints", help="root folder of all runs")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume fit from this .ckpt ('last' = the run's last.ckpt)")
        parser.add_argument("--checkpoint_every_minutes", type=float | None, default=10.0,
                            help="also rewrite last.ckpt after the training step that ends each such span (a "
                                 "killed run loses at most this much); null: only at validations and on a stop")
        parser.add_argument("--checkpoint_every_steps", type=int | None, default=None,
                            help="rewrite last.ckpt every N training steps instead of by the clock")
        parser.add_argument("--test", type=bool, default=True, help="after fit, evaluate on data.test_split")
        parser.add_argument("--compare_none", type=bool, default=True,
                            help="after fit, also score the frozen LLM alone (`none`) on the same examples")
        # fields the data module needs but the model owns: set them once, as --model.<field>
        for field in ("task", "method", "retrieval_k", "retriever", "max_history"):
            parser.link_arguments(f"model.{field}", f"data.{field}", apply_on="parse")

    def instantiate_trainer(self, **kwargs):
        """Add the run's TensorBoard logger, a ModelCheckpoint on the task's main val metric, and (without a
        terminal) progress as log lines instead of a bar."""
        from pplug.core.tasks import get_task

        cfg = self.config
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        run_dir = Path(cfg["checkpoints_dir"]) / cfg["run"]
        _check_accelerator(trainer_cfg.get("accelerator"))
        if trainer_cfg.get("strategy") == "ddp":
            # the embedder's cold-start user vector is unused in steps where every row has history, and
            # plain DDP errors on unused parameters: let DDP detect them (small cost, no code change for users)
            kwargs["strategy"] = "ddp_find_unused_parameters_true"
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = TensorBoardLogger(save_dir=cfg["checkpoints_dir"], name=cfg["run"], version="")
        callbacks = list(trainer_cfg.get("callbacks") or [])
        if trainer_cfg.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            task = get_task(cfg["model"]["task"])
            # no version counter: both callbacks (and StopAndSave) rewrite the one last.ckpt, the newest state,
            # and a run started again under its name overwrites its files instead of adding `-v1` copies
            callbacks.append(ModelCheckpoint(
                dirpath=run_dir / "checkpoints", filename="step-{step:06d}", auto_insert_metric_name=False,
                monitor=f"val/{task.main_metric}", mode="max" if task.higher_is_better else "min",
                save_top_k=1, save_last=True, enable_version_counter=False,
            ))
            steps, minutes = cfg["checkpoint_every_steps"], cfg["checkpoint_every_minutes"]
            if steps or minutes:  # between validations: bounds what a kill -9 loses
                every = {"every_n_train_steps": steps} if steps else {"train_time_interval": timedelta(minutes=minutes)}
                callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=True,
                                                 enable_version_counter=False, **every))
            callbacks.append(StopAndSave(run_dir / "checkpoints"))
        if not sys.stderr.isatty() and trainer_cfg.get("enable_progress_bar") is not False:
            # a bar redrawn with \r is one endless line in a log file: print `step N/M ... it/s` lines instead
            kwargs["enable_progress_bar"] = False
            callbacks.append(LogProgress(every_n_steps=max(1, int(trainer_cfg.get("log_every_n_steps") or 10))))
        kwargs["callbacks"] = callbacks
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as e:  # Lightning's verdict on the --trainer.* settings, in one line
            raise TrainSetupError(f"--trainer settings: {' '.join(str(e).split())}") from None


class TrainSetupError(Exception):
    """A setting train.py cannot run with: printed as one line, exit code 2."""


class TrainingStopped(Exception):
    """SIGTERM or Ctrl-C ended the fit after a step; `last.ckpt` holds it (see `StopAndSave`)."""

    def __init__(self, stop: StopAndSave | None, step: int) -> None:
        self.signal_name = (stop.signal_name if stop else None) or "SIGTERM"
        self.step = step
        self.path = stop.path if stop else None  # None: checkpointing is off (--trainer.enable_checkpointing false)
        super().__init__(f"stopped by {self.signal_name} at step {self.step}")

    @property
    def exit_code(self) -> int:
        import signal

        return 128 + int(getattr(signal, self.signal_name))


def _check_accelerator(accelerator) -> None:
    """--trainer.accelerator naming a device this machine lacks: one line here, not Lightning's traceback."""
    if not isinstance(accelerator, str):
        return
    import torch

    name = accelerator.lower()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    present = {"gpu": torch.cuda.is_available() or mps, "cuda": torch.cuda.is_available(), "mps": mps}
    if name in present and not present[name]:
        raise TrainSetupError(f"--trainer.accelerator {accelerator}: no {'GPU' if name == 'gpu' else name.upper()} "
                              "on this machine (use --trainer.accelerator cpu, or auto to take what there is)")


def _resume_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from; `last` with none to resume is an error, not a silent start from step 1."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        folder = run_dir / "checkpoints"
        if not any(folder.glob("last*.ckpt")):
            raise TrainSetupError(f"--ckpt_path last: no checkpoint to resume in {folder} (check --run and "
                                  "--checkpoints_dir, or leave --ckpt_path out to start the run)")
        return "last"  # Lightning takes the newest last*.ckpt of the run's checkpoint callbacks
    if not Path(ckpt_path).is_file():
        raise TrainSetupError(f"--ckpt_path {ckpt_path}: no such file")
    return ckpt_path


def cli_main(args: list[str] | None = None) -> dict:
    """Parse, fit, test and compare; returns {"metrics": {row: {metric: value}}, "run_dir", "seconds"}."""
    t0 = time.monotonic()
    cli = PPlugCLI(
        lit_module,  # PPlugLitModule with its TrainConfig's fields as flat --model.<field> flags
        LaMPDataModule,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},  # a resumed run rewrites its config.yaml
        parser_kwargs={"default_config_files": config_layers(sys.argv[1:] if args is None else args)},
    )
    cfg, trainer, model, dm = cli.config, cli.trainer, cli.model, cli.datamodule
    ckpt_path = _resume_path(cfg["ckpt_path"], Path(cfg["checkpoints_dir"]) / cfg["run"])
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    except SIGTERMException:  # Lightning's way out of a fit that a signal stopped (StopAndSave saved last.ckpt)
        stop = next((c for c in trainer.callbacks if isinstance(c, StopAndSave)), None)
        raise TrainingStopped(stop, trainer.global_step) from None
    result: dict = {
        "run_dir": str(_run_dir(trainer)),
        "data_root": cfg["data"]["root"],
        "metrics": {},
        # what fit logged last (val/<metric> of the last validation, train/loss): tests compare it with `pplug score`
        "logged": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "seconds": {"fit": round(time.monotonic() - t0, 1)},
    }
    if not cfg["test"] or trainer.fast_dev_run:
        return result
    trainer.test(model, datamodule=dm, verbose=False)
    stage_metrics = model.last_metrics.get("test", {})
    task = model.task_spec
    rows: dict[str, dict[str, float]] = {}
    trained = f"{model.method.name} (trained)"
    for dec, metrics in stage_metrics.items():
        rows[trained + ("" if dec == model.config.decoding else f" [{dec}]")] = metrics
    if trainer.is_global_zero:
        if cfg["compare_none"]:
            rows.update(_score_none(model, dm))
        rows.update(_synth_reference(cfg["data"]["root"]))
        result["metrics"] = rows
        result["verdict"] = personalization_verdict(rows, trained, task.main_metric, task.higher_is_better)
        result["seconds"]["total"] = round(time.monotonic() - t0, 1)
        result["n_test"] = len(dm.splits["test"])
        # what the "(trained)" and "none" rows without a bracket mean: the decoding the checkpoint saved (chosen on
        # validation) and the step of the kept weights
        result["decoding"], result["weights_step"] = model.config.decoding, model.weights_step
        from pplug.core.io import atomic_write_json
        from pplug.lamp.metrics import format_table

        atomic_write_json(Path(result["run_dir"]) / "metrics.json", result)
        title = (f"{task.name} {dm.hparams.test_split} (n={len(dm.splits['test'])}, {cfg['data']['root']}; "
                 f"rows without a bracket: the saved decoding, {model.config.decoding}, weights of step "
                 f"{model.weights_step})")
        print()
        print(format_table(rows, title=title))
        if result["verdict"]:
            print(f"\n{result['verdict']}")
        print(f"\nrun folder: {result['run_dir']}  (final weights: {result['run_dir']}/final)  "
              f"total {result['seconds']['total']:.0f} s")
    return result


def resume_command(argv: list[str]) -> str:
    """The command line that resumes the run `argv` started: the same arguments with `--ckpt_path last`."""
    import shlex

    args, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a == "--ckpt_path":
            skip = True
        elif not a.startswith("--ckpt_path="):
            args.append(a)
    return shlex.join(["python", Path(argv[0]).name, *args, "--ckpt_path", "last"])


def config_layers(args: list[str]) -> list[str]:
    """The config files read under `args`, in order: the base, and the synthetic recipe when `args` name no recipe
    (`python train.py` trains the synthetic default). A missing file is skipped."""
    names_a_recipe = any(a in ("-c", "--config") or a.startswith("--config=") for a in args)
    return [str(BASE_CONFIG)] + ([] if names_a_recipe else [str(SYNTHETIC_CONFIG)])


CEILING_ROW = "history-blind ceiling (synth, full dev)"


def personalization_verdict(rows: dict[str, dict[str, float]], trained: str, metric: str,
                            higher_is_better: bool) -> str | None:
    """One line after the table: the trained method's main metric against the frozen LLM alone (`none`) and,
    on synthetic data, the history-blind ceiling, with a plain word when it does not beat the ceiling.

    Why: beating the frozen LLM only shows that training works; personalization is shown only by beating the
    best predictor that never reads a history (what `synth_report.json` calls the ceiling)."""
    value = rows.get(trained, {}).get(metric)
    if value is None:
        return None

    def gain(ref: float) -> float:  # > 0: better than ref
        return value - ref if higher_is_better else ref - value

    parts = [f"verdict: {trained} {metric} {value:.3f}"]
    none = rows.get("none", {}).get(metric)
    if none is not None:
        parts.append(f"{gain(none):+.3f} against the frozen LLM alone ({none:.3f})")
    ceiling = rows.get(CEILING_ROW, {}).get(metric)
    if ceiling is None:
        return "; ".join(parts)
    g = gain(ceiling)
    share = f" ({100 * g / abs(ceiling):+.1f}%)" if ceiling else ""
    parts.append(f"{g:+.3f}{share} against the history-blind ceiling ({ceiling:.3f})")
    word = ("it personalizes: it beats every predictor that ignores the history" if g > 0 else
            "NOT personalized: no better than a predictor that ignores the history")
    return "; ".join(parts) + f" -> {word}"


def _run_dir(trainer) -> Path:
    from pplug.train.module import run_dir

    return run_dir(trainer)


def _score_none(model: PPlugLitModule, dm: LaMPDataModule) -> dict[str, dict[str, float]]:
    """The frozen LLM with no prefix on the test examples (same prompts, same decoding)."""
    from pplug.decode.inference import FrozenBaseline, predict, task_decodings
    from pplug.lamp.metrics import score

    examples = dm.splits["test"]
    main = model.config.decoding
    preds = predict(FrozenBaseline(model.model.llm), model.task_spec, examples, "none",
                    task_decodings(model.task_spec, main), batch_size=dm.hparams.eval_batch_size or 2 * dm.hparams.batch_size)
    golds = {ex.id: ex.output for ex in examples}
    return {("none" if dec == main else f"none [{dec}]"): score(model.task_spec, p, golds) for dec, p in preds.items()}


def _synth_reference(root: str) -> dict[str, dict[str, float]]:
    """Reference rows from a synthetic set's synth_report.json (history-blind ceiling, oracle)."""
    path = Path(root) / "synth_report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    rows = {}
    if isinstance(report.get("history_blind_ceiling"), dict):
        rows[CEILING_ROW] = report["history_blind_ceiling"]
    if isinstance(report.get("history_oracle"), dict):
        rows["history oracle (synth, full dev)"] = report["history_oracle"]
    return rows


if __name__ == "__main__":
    from pplug.lamp.data import LaMPDataError

    try:
        cli_main()
    except LaMPDataError as e:  # bad or missing data files: one line, no traceback
        print(f"train.py: error: {e} (official files: `pplug download <task>`, see lamp_data/README.md)",
              file=sys.stderr)
        sys.exit(2)
    except TrainSetupError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as e:
        if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
            then = (f"saved {e.path}; resume with: {resume_command(sys.argv)}" if e.path else
                    "nothing saved (checkpointing is off)")
            print(f"train.py: {e}, {then}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(0)
