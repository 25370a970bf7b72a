"""Loading and validating official LaMP files.

A split lives in one folder as `{split}_questions.json` (a list of `{"id", "input", "profile", ["user_id"]}`)
and, except for test, `{split}_outputs.json` (`{"task", "golds": [{"id", "output"}]}`); either may be
gzipped (`.json.gz`). User-based and time-based files share this shape; time-based ones add `user_id`
and items may carry a `date`. Every record is checked before anything is used, and every problem is
one line naming the file, the record id and the field:

    lamp_data/LaMP_3/dev_questions.json: record 310: field 'profile[4].score': missing

Ids may be strings or ints in the files; they are normalised to `str` everywhere.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pplug.core.io import atomic_write_bytes
from pplug.core.tasks import TaskSpec, get_task


class LaMPDataError(ValueError):
    """A malformed LaMP file; the message is one line: "<file>: record <id>: field '<field>': <problem>"."""


@dataclass
class Example:
    """One question with its user's profile (history) and, where known, the gold output."""

    id: str
    input: str
    profile: list[dict]
    """Profile items as in the file (item "id" normalised to str), most recent last where the file says so."""
    output: str | None = None
    user_id: str | None = None


@dataclass
class LaMPSplit:
    """A validated split of one task."""

    task: TaskSpec
    split: str
    examples: list[Example]
    questions_path: Path
    outputs_path: Path | None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def has_outputs(self) -> bool:
        return self.outputs_path is not None

    def golds(self) -> dict[str, str]:
        """id -> gold output (raises LaMPDataError on a split without outputs, e.g. test)."""
        if self.outputs_path is None:
            raise LaMPDataError(f"{self.questions_path}: split {self.split!r} has no outputs file (no golds)")
        return {ex.id: ex.output for ex in self.examples}  # type: ignore[misc]

    def users(self) -> dict[str, list[Example]]:
        """user id -> that user's examples in file order; without `user_id`, each example is its own user."""
        out: dict[str, list[Example]] = OrderedDict()
        for ex in self.examples:
            out.setdefault(ex.user_id if ex.user_id is not None else f"q:{ex.id}", []).append(ex)
        return out

    def to_hf_dataset(self):
        """This split as a `datasets.Dataset` with columns id, user_id, input, query, output, history, profile.

        `query` is `task.query_text(input)`, `history` the list of `task.history_text(item)`, and
        `profile` the items as a JSON string (items of different tasks or with optional fields do not
        fit one Arrow struct). Built in memory; call `.save_to_disk(...)` to cache it.
        """
        import datasets

        task = self.task
        return datasets.Dataset.from_dict(
            {
                "id": [ex.id for ex in self.examples],
                "user_id": [ex.user_id for ex in self.examples],
                "input": [ex.input for ex in self.examples],
                "query": [task.query_text(ex.input) for ex in self.examples],
                "output": [ex.output for ex in self.examples],
                "history": [[task.history_text(it) for it in ex.profile] for ex in self.examples],
                "profile": [json.dumps(ex.profile, ensure_ascii=False) for ex in self.examples],
            }
        )


def to_hf_dataset(split: LaMPSplit):
    """Function form of `LaMPSplit.to_hf_dataset`."""
    return split.to_hf_dataset()


# --- reading -----------------------------------------------------------------------------------


def find_split_file(root: str | Path, split: str, kind: str) -> Path | None:
    """`root/{split}_{kind}.json` or `.json.gz`, whichever exists (plain JSON first); None if neither."""
    root = Path(root)
    for name in (f"{split}_{kind}.json", f"{split}_{kind}.json.gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_json(path: str | Path) -> Any:
    """Parse a `.json` or `.json.gz` file; any failure is a one-line LaMPDataError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LaMPDataError(f"{path}: file not found") from None
    except OSError as e:
        raise LaMPDataError(f"{path}: cannot read: {e.strerror or e}") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise LaMPDataError(f"{path}: not a valid gzip file: {e}") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise LaMPDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise LaMPDataError(f"{path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def read_items(source: str, max_bytes: int | None = None) -> list[dict]:
    """History items from a file or "-" (stdin): a JSON list, a JSON object with "profile", or JSON lines.

    `max_bytes` bounds what is read (a larger input is an error before it is read whole); any problem is a
    one-line LaMPDataError naming the file (or a FileNotFoundError).
    """
    if source == "-":
        raw, name = sys.stdin.buffer.read(-1 if max_bytes is None else max_bytes + 1), "<stdin>"
    else:
        path = Path(source)
        name = str(path)
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise LaMPDataError(f"{name}: {path.stat().st_size} bytes, over the limit of {max_bytes}")
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: history file not found") from None
        except IsADirectoryError:
            raise LaMPDataError(f"{name}: a folder, not a history file") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise LaMPDataError(f"{name}: over the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise LaMPDataError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LaMPDataError(f"{name}: line {n}: not JSON ({e.msg}); expected a JSON list or JSON lines") from None
    if isinstance(data, dict) and isinstance(data.get("profile"), list):
        data = data["profile"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LaMPDataError(f"{name}: expected a JSON list of profile items, got {type(data).__name__}")
    for i, it in enumerate(data):
        if not isinstance(it, dict):
            raise LaMPDataError(f"{name}: item {i}: expected a JSON object, got {type(it).__name__}")
    return data


def _record_id(rec: Any, path: Any, position: str, seen: Any) -> tuple[str, str]:
    """Check that a record is an object with a usable, unseen id; returns (id, "<file>: record <id>")."""
    where = f"{path}: {position}"
    if not isinstance(rec, dict):
        raise LaMPDataError(f"{where}: must be an object, got {type(rec).__name__}")
    if "id" not in rec:
        raise LaMPDataError(f"{where}: field 'id': missing")
    rid = _str_id(rec["id"])
    if rid is None:
        raise LaMPDataError(f"{where}: field 'id': must be a non-empty string or int, got {rec['id']!r}")
    where = f"{path}: record {rid}"
    if rid in seen:
        raise LaMPDataError(f"{where}: field 'id': duplicate id")
    return rid, where


def _str_id(value: Any) -> str | None:
    """Ids may be str or int in LaMP files (bool is not an id)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _is_scalar_text(value: Any) -> bool:
    # item fields are text; a few files store LaMP_3 scores as numbers, which format fine
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_task_for(path: Path, task: TaskSpec | str) -> TaskSpec:
    try:
        return get_task(task)
    except ValueError as e:
        raise LaMPDataError(f"{path}: field 'task': {e}") from None


def parse_questions(obj: Any, path: Path, task: TaskSpec) -> list[Example]:
    """Validate the parsed questions JSON of `task`; returns examples (ids normalised to str)."""
    if not isinstance(obj, list):
        raise LaMPDataError(
            f"{path}: top level must be a list of questions, got {type(obj).__name__}"
            + (" (is this an outputs file?)" if isinstance(obj, dict) and "golds" in obj else "")
        )
    fields = task.profile_fields
    seen: set[str] = set()
    examples: list[Example] = []
    for i, rec in enumerate(obj):
        qid, where = _record_id(rec, path, f"record #{i}", seen)
        seen.add(qid)
        if "input" not in rec:
            raise LaMPDataError(f"{where}: field 'input': missing")
        if not isinstance(rec["input"], str):
            raise LaMPDataError(f"{where}: field 'input': must be a string, got {type(rec['input']).__name__}")
        if "profile" not in rec:
            raise LaMPDataError(f"{where}: field 'profile': missing")
        profile = rec["profile"]
        if not isinstance(profile, list):
            raise LaMPDataError(f"{where}: field 'profile': must be a list, got {type(profile).__name__}")
        user_id = None
        if rec.get("user_id") is not None:
            user_id = _str_id(rec["user_id"])
            if user_id is None:
                raise LaMPDataError(f"{where}: field 'user_id': must be a string or int, got {rec['user_id']!r}")
        items: list[dict] = []
        for j, item in enumerate(profile):
            if not isinstance(item, dict):
                raise LaMPDataError(f"{where}: field 'profile[{j}]': must be an object, got {type(item).__name__}")
            if "id" not in item:
                raise LaMPDataError(f"{where}: field 'profile[{j}].id': missing")
            iid = _str_id(item["id"])
            if iid is None:
                raise LaMPDataError(f"{where}: field 'profile[{j}].id': must be a string or int, got {item['id']!r}")
            for f in fields:
                if f not in item:
                    hint = _other_task_hint(task, item)
                    raise LaMPDataError(f"{where}: field 'profile[{j}].{f}': missing for task {task.name}{hint}")
                if not _is_scalar_text(item[f]):
                    raise LaMPDataError(
                        f"{where}: field 'profile[{j}].{f}': must be text, got {type(item[f]).__name__}"
                    )
            if iid is not item["id"]:
                item = {**item, "id": iid}
            items.append(item)
        examples.append(Example(id=qid, input=rec["input"], profile=items, user_id=user_id))
    return examples


def parse_outputs(obj: Any, path: Path) -> tuple[str, dict[str, str]]:
    """Validate a parsed outputs JSON (`{"task", "golds": [{"id", "output"}]}`); returns (task name, id -> output)."""
    if not isinstance(obj, dict):
        raise LaMPDataError(
            f"{path}: top level must be an object with 'task' and 'golds', got {type(obj).__name__}"
            + (" (is this a questions file?)" if isinstance(obj, list) else "")
        )
    if "task" not in obj:
        raise LaMPDataError(f"{path}: field 'task': missing")
    if not isinstance(obj["task"], str):
        raise LaMPDataError(f"{path}: field 'task': must be a string, got {obj['task']!r}")
    task_name = _check_task_for(path, obj["task"]).name
    golds = obj.get("golds")
    if golds is None:
        raise LaMPDataError(f"{path}: field 'golds': missing")
    if not isinstance(golds, list):
        raise LaMPDataError(f"{path}: field 'golds': must be a list, got {type(golds).__name__}")
    out: dict[str, str] = {}
    for i, rec in enumerate(golds):
        oid, where = _record_id(rec, path, f"golds #{i}", out)
        if "output" not in rec:
            raise LaMPDataError(f"{where}: field 'output': missing")
        value = rec["output"]
        if not _is_scalar_text(value):
            raise LaMPDataError(f"{where}: field 'output': must be a string, got {type(value).__name__}")
        out[oid] = value if isinstance(value, str) else str(value)
    return task_name, out


def load_outputs(path: str | Path) -> tuple[str, dict[str, str]]:
    """Read an outputs / predictions file (`.json` or `.json.gz`).

    Returns:
        (canonical task name, {id: output}) in file order.
    """
    path = Path(path)
    return parse_outputs(read_json(path), path)


def check_same_ids(expected: dict | set | list, got: dict | set | list, where: str, what: str = "outputs") -> None:
    """Raise a one-line LaMPDataError unless the two id collections are equal (names a few offenders)."""
    a, b = set(expected), set(got)
    if a == b:
        return
    missing, extra = sorted(a - b), sorted(b - a)
    parts = []
    if missing:
        parts.append(f"{len(missing)} id(s) missing (e.g. {', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} unexpected id(s) (e.g. {', '.join(extra[:3])})")
    first = (missing or extra)[0]
    raise LaMPDataError(f"{where}: record {first}: field 'id': {what} ids do not match: {'; '.join(parts)}")


def _other_task_hint(task: TaskSpec, item: dict) -> str:
    """" (these items fit task X)" when another task's profile fields are all in `item` (e.g. news items
    given to the movie task LaMP_2 fit LaMP_2N), else ""."""
    from pplug.core.tasks import TASKS

    fits = [t for t in TASKS.values() if t.name != task.name and all(f in item for f in t.profile_fields)]
    best = max(fits, key=lambda t: len(t.profile_fields), default=None)  # the most specific fit
    return f" (these items fit task {best.name})" if best is not None else ""


def load_split(root: str | Path, split: str, task: str | TaskSpec | None = None) -> LaMPSplit:
    """Load and validate one split from `root` (`{split}_questions.json[.gz]`, optional `{split}_outputs.json[.gz]`).

    Args:
        root: folder holding the split files, e.g. `lamp_data/LaMP_3` or `lamp_data/time/LaMP_3`.
        split: "train", "dev", "test" or any name the files carry.
        task: task name or spec; if None, taken from the outputs file's "task" (an explicit task
            wins, e.g. "LaMP_2N" for the older news files whose outputs say "LaMP_2").

    Raises:
        LaMPDataError: any malformed file, one line naming file, record id and field.
    """
    root = Path(root)
    q_path = find_split_file(root, split, "questions")
    if q_path is None:
        raise LaMPDataError(f"{root / f'{split}_questions.json'}: file not found (nor .json.gz)")
    o_path = find_split_file(root, split, "outputs")
    outputs: dict[str, str] | None = None
    file_task: str | None = None
    if o_path is not None:
        file_task, outputs = load_outputs(o_path)
    if task is not None:
        spec = _check_task_for(q_path, task)
    elif file_task is not None:
        spec = get_task(file_task)
    else:
        raise LaMPDataError(f"{q_path}: field 'task': unknown (no outputs file to read it from); pass task=")
    examples = parse_questions(read_json(q_path), q_path, spec)
    if outputs is not None:
        check_same_ids([ex.id for ex in examples], outputs, str(o_path), what="outputs vs questions")
        for ex in examples:
            ex.output = outputs[ex.id]
    return LaMPSplit(task=spec, split=split, examples=examples, questions_path=q_path, outputs_path=o_path)


# --- writing -----------------------------------------------------------------------------------


def outputs_json(task_name: str, outputs: dict[str, str]) -> dict:
    """The official outputs shape for `{id: output}`."""
    return {"task": task_name, "golds": [{"id": str(k), "output": v} for k, v in outputs.items()]}


def write_outputs(path: str | Path, task_name: str, outputs: dict[str, str]) -> Path:
    """Write predictions or golds in the official shape, atomically (gzipped if the name ends in .gz)."""
    data = json.dumps(outputs_json(task_name, outputs), ensure_ascii=False, indent=1).encode("utf-8")
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def write_questions(path: str | Path, examples: list[Example]) -> Path:
    """Write questions in the official shape, atomically (`user_id` only where set)."""
    recs = []
    for ex in examples:
        rec: dict[str, Any] = {"id": ex.id, "input": ex.input, "profile": ex.profile}
        if ex.user_id is not None:
            rec["user_id"] = ex.user_id
        recs.append(rec)
    data = json.dumps(recs, ensure_ascii=False).encode("utf-8")
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def write_split(root: str | Path, split: str, task_name: str, examples: list[Example]) -> tuple[Path, Path | None]:
    """Write `{split}_questions.json` and, if every example has an output, `{split}_outputs.json`."""
    root = Path(root)
    q = write_questions(root / f"{split}_questions.json", examples)
    o = None
    if examples and all(ex.output is not None for ex in examples):
        o = write_outputs(root / f"{split}_outputs.json", task_name, {ex.id: ex.output for ex in examples})
    return q, o


def subsample(examples: list, n: int | None, seed: int) -> list:
    """A seeded random subset of `n` examples in file order (all of them when n is None or larger)."""
    if n is None or n >= len(examples):
        return list(examples)
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]
