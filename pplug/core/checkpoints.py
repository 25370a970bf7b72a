"""Where saved models live and which one a command serves: the one answer every command uses.

    checkpoints/<run>/             a run folder (train.py writes it)
        final/                     the trained model: pplug_config.json + pplug.safetensors
        v0001/  v0002/ ...         versions promoted by slow adaptation (+ adapt_report.json)
        LATEST                     one line naming the serving version ("v0002"); replaced atomically
        adapt_state.json           every adaptation attempt (promoted or refused) and rollbacks
        .adapt.lock                held while an adaptation run is in progress

`resolve(path)` turns what a user passes into the folder to load: a checkpoint folder itself, or a run
folder's serving version (LATEST -> vNNNN, else final/). `pplug generate`, `pplug evaluate`,
`pplug user generate`, `pplug serve` and `PPlugModel.from_pretrained` all call it, so after `pplug adapt`
promotes v0001 every command serves v0001, and after `pplug adapt --rollback` every command serves its
parent. `LATEST` is a plain file rather than a symlink: it works the same on every OS and filesystem, and
`os.replace` swaps it atomically, so a killed run leaves the last good version serving. A LoRA hub's versions
follow the same layout and rules, with `hub.json` as the file that marks a version (`marker=`;
`pplug.hub.adapt`).

A checkpoint folder describes itself (peft's rule): `pplug_config.json` records the method, retrieval_k,
retriever and decoding beside the architecture. Folders written before those fields existed are read with
the method from the train.py `config.yaml` next to them (`legacy_run_settings`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from .io import atomic_write_json, atomic_write_text

CONFIG_NAME = "pplug_config.json"
WEIGHTS_NAME = "pplug.safetensors"
LATEST_FILE = "LATEST"
STATE_FILE = "adapt_state.json"
REPORT_FILE = "adapt_report.json"
LOCK_FILE = ".adapt.lock"
BASE_VERSION = "final"
VERSION_RE = re.compile(r"^v(\d{4,})$")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not fit the given base LLM / encoder (one line)."""


class RunBusyError(CheckpointError):
    """Another process holds a run folder's lock."""


def now() -> str:
    """UTC time, ISO format to the second (what reports and state files record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_checkpoint(path: str | Path, marker: str = CONFIG_NAME) -> bool:
    """Whether `path` is a saved model folder (holds `pplug_config.json`; a LoRA hub's: `marker="hub.json"`)."""
    return (Path(path) / marker).is_file()


def versions(root: str | Path) -> list[str]:
    """Version folders under a run folder ("v0001", ...), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if VERSION_RE.match(p.name) and p.is_dir()), key=lambda n: int(n[1:]))


def next_version(root: str | Path) -> str:
    """The name the next promoted version gets ("v0001" for the first)."""
    return f"v{max((int(v[1:]) for v in versions(root)), default=0) + 1:04d}"


def serving_version(root: str | Path, marker: str = CONFIG_NAME) -> str:
    """Name of the version a run folder serves: LATEST's content, else "final" (or "." when `root` is itself
    a checkpoint folder). `marker`: the file that makes a folder a version (a hub run's: "hub.json").

    Raises:
        CheckpointError: LATEST names a missing folder, or `root` holds no checkpoint at all.
    """
    root = Path(root)
    latest = root / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if not is_checkpoint(root / name, marker):
            raise CheckpointError(f"{latest}: names {name!r}, which is not a checkpoint folder under {root}")
        return name
    if is_checkpoint(root / BASE_VERSION, marker):
        return BASE_VERSION
    if is_checkpoint(root, marker):
        return "."
    raise CheckpointError(f"{root}: no checkpoint here (expected {LATEST_FILE}, {BASE_VERSION}/ or {marker})")


def resolve(path: str | os.PathLike, marker: str = CONFIG_NAME) -> Path:
    """The folder to load for `path`: a checkpoint folder itself, or a run folder's serving version.

    Raises:
        CheckpointError: `path` does not exist or holds no checkpoint (names what was expected).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder not found")
    if is_checkpoint(path, marker) and not (path / LATEST_FILE).is_file():
        return path
    version = serving_version(path, marker)
    return path if version == "." else path / version


def run_root(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint folder belongs to (its parent for final/ and vNNNN/, else itself)."""
    checkpoint = Path(checkpoint)
    if checkpoint.name == BASE_VERSION or VERSION_RE.match(checkpoint.name):
        return checkpoint.parent
    return checkpoint


def legacy_run_settings(folder: str | Path) -> dict:
    """method / retrieval_k / retriever of a checkpoint written before `pplug_config.json` recorded them: the
    `model` section of the train.py `config.yaml` beside the folder ({} when absent or unreadable)."""
    import yaml

    folder = Path(folder)
    for cand in (folder.parent / "config.yaml", folder / "config.yaml"):
        if not cand.is_file():
            continue
        try:
            cfg = yaml.safe_load(cand.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            return {}
        model = cfg.get("model") or {} if isinstance(cfg, dict) else {}
        if isinstance(model, dict) and "init_args" in model:
            model = model["init_args"] or {}
        if not isinstance(model, dict):
            return {}
        return {k: model[k] for k in ("method", "retrieval_k", "retriever") if model.get(k) is not None}
    return {}


# --- versions of a run: reports, state, lock, rollback ---------------------------------------------


def read_report(root: str | Path, version: str) -> dict | None:
    """The `adapt_report.json` of a version (None for the base, which slow adaptation did not make)."""
    p = Path(root) / version / REPORT_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def read_state(root: str | Path) -> dict:
    """`adapt_state.json` of a run folder: {"attempts": [...], "rollbacks": [...], ...}."""
    p = Path(root) / STATE_FILE
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {"attempts": [], "rollbacks": []}


def write_state(root: str | Path, state: dict) -> None:
    atomic_write_json(Path(root) / STATE_FILE, state)


def record_attempt(root: str | Path, state: dict, report: dict, watermark: int, kept: bool) -> None:
    """Add one retraining attempt to the run's state and write it: the interaction id it read up to (so the
    next attempt waits for newer ones), its figures, and the version it made if that was kept."""
    state["last_attempt_watermark"] = watermark
    keys = ("created_at", "parent", "metric", "validation", "promoted", "watermark", "n_interactions")
    attempt = {k: report[k] for k in keys} | {"version": report["version"] if kept else None}
    state.setdefault("attempts", []).append(attempt)
    write_state(root, state)


def set_latest(root: str | Path, version: str) -> None:
    """Serve `version` from now on (LATEST replaced atomically)."""
    atomic_write_text(Path(root) / LATEST_FILE, version + "\n")


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `root/.adapt.lock`; a second holder gets RunBusyError at once.

    POSIX: fcntl.flock; Windows: msvcrt.locking. The OS drops the lock when the process dies, so a
    killed run never leaves a stale lock behind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    f = open(path, "a+")
    try:
        try:
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - Windows
                import msvcrt

                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunBusyError(f"another adapt run is in progress on {root} ({holder}); exiting") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {now()}")
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


def rollback(root: str | Path, marker: str = CONFIG_NAME) -> str:
    """Point LATEST back at the serving version's parent; returns the version now served."""
    root = Path(root)
    with run_lock(root):
        current = serving_version(root, marker)
        report = read_report(root, current)
        if report is None or not report.get("parent"):
            raise CheckpointError(f"{root}: serving {current!r}, which has no parent version to roll back to")
        parent = report["parent"]
        if not is_checkpoint(root / parent, marker):
            raise CheckpointError(f"{root}: parent version {parent!r} of {current!r} is missing")
        set_latest(root, parent)
        state = read_state(root)
        state.setdefault("rollbacks", []).append({"at": now(), "from": current, "to": parent})
        write_state(root, state)
        return parent


__all__ = ["BASE_VERSION", "CONFIG_NAME", "CheckpointError", "LATEST_FILE", "LOCK_FILE", "REPORT_FILE",
           "RunBusyError", "STATE_FILE", "WEIGHTS_NAME", "is_checkpoint", "legacy_run_settings", "next_version",
           "now", "read_report", "read_state", "record_attempt", "resolve", "rollback", "run_lock", "run_root",
           "serving_version", "set_latest", "versions", "write_state"]
