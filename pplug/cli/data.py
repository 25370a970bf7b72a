"""The data verbs of `pplug`: `download` (the official LaMP files), `synth` (synthetic LaMP sets with a
learnable per-user signal) and `score` (the official LaMP metrics of a predictions file)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pplug.cli.commands import CLIError


def download(task: str, *, time_based: bool = False,
             split: Sequence[Literal["train", "dev", "test"]] = ("train", "dev"), root: str = "lamp_data",
             timeout: float = 10.0, overwrite: bool = False, base_url: str | None = None) -> None:
    """fetch official LaMP files into lamp_data/<task>/ (needs internet)

    Args:
        task: LaMP_1 .. LaMP_7
        time_based: the time-based split (lamp_data/time/<task>/)
        split: splits to fetch (default: train dev)
        root: data root (default: lamp_data)
        timeout: seconds per request before giving up
        overwrite: replace files already there
        base_url: a mirror of https://ciir.cs.umass.edu/downloads/LaMP
    """
    from pplug.lamp import download as lamp_download

    try:
        lamp_download.download(task, tuple(split), root=root, time_based=time_based,
                               base_url=base_url or lamp_download.BASE_URL, timeout=timeout, overwrite=overwrite)
    except lamp_download.DownloadError as e:
        raise CLIError(str(e)) from None


def synth(*, kind: Literal["ratings", "tags", "titles"] = "ratings", out: str | None = None, users: int = 150,
          seed: int = 0, noise: float | None = None, domain_shift: bool = False) -> None:
    """write synthetic LaMP data with learnable per-user signal

    Args:
        kind: ratings (LaMP_3 shape), tags (LaMP_2) or titles (LaMP_5) (default: ratings)
        out: output folder (default: lamp_data/synthetic/<kind>)
        users: number of users
        seed: the one random seed: the same arguments write identical files (default: 0)
        noise: probability a user departs from their rule
        domain_shift: dev from another item domain, same users and personal signal (ratings, titles)
    """
    from pplug.lamp.metrics import format_table
    from pplug.synth.generate import make_synthetic

    out = out or f"lamp_data/synthetic/{kind}"
    extra: dict[str, object] = {} if noise is None else {"noise": noise}
    if domain_shift:
        extra["domain_shift"] = True
    report = make_synthetic(out, kind=kind, n_users=users, seed=seed, **extra)
    print(f"wrote {out}: {report['task']} train {report['splits']['train']} / dev {report['splits']['dev']} "
          f"questions, {report['users']} users")
    rows = {k: report[k] for k in ("history_blind_ceiling", "user_mean_floor", "history_oracle") if k in report}
    print(format_table(rows, title="dev reference scores"))


def score(*, preds: str, golds: str, task: str | None = None, out: str | None = None) -> None:
    """score predictions against golds exactly as the official LaMP script

    Args:
        preds: predictions file ({'task', 'golds': [{'id', 'output'}]})
        golds: gold outputs file, e.g. lamp_data/LaMP_3/dev_outputs.json
        task: task (default: the golds file's 'task'; LaMP_2N for old news)
        out: write the metrics JSON here
    """
    from pplug.core.io import atomic_write_json
    from pplug.core.tasks import get_task
    from pplug.lamp.data import load_outputs
    from pplug.lamp.metrics import format_table
    from pplug.lamp.metrics import score as lamp_score

    gold_task, gold_outputs = load_outputs(golds)
    pred_task, pred_outputs = load_outputs(preds)
    if task is None and pred_task != gold_task:
        raise CLIError(f"{preds}: field 'task': {pred_task} but the golds are {gold_task} (pass --task to force)")
    spec = get_task(task or gold_task)
    metrics = lamp_score(spec, pred_outputs, gold_outputs)
    print(format_table({preds: metrics}, title=f"{spec.name} ({len(gold_outputs)} examples)"))
    if out:
        atomic_write_json(out, {"task": spec.name, "num_examples": len(gold_outputs), "preds": str(preds),
                                "golds": str(golds), "metrics": metrics})


__all__ = ["download", "score", "synth"]
