"""The real per-user LaMP-format sets in ../shared/data/real_lamp load, validate and cut queries right.

They are never part of the repository: the tests skip where the folder is absent (set PPLUG_REAL_LAMP
to point elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pplug.lamp.data import load_split

REAL = Path(os.environ.get("PPLUG_REAL_LAMP", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_lamp"))
SETS = {  # set -> (task, instruction every input starts with)
    "acl_titles": ("LaMP_5", "Generate a title for the following abstract of a paper: "),
    "enron_subjects": ("LaMP_6", "Generate a subject for the following email: "),
    "music_ratings": ("LaMP_3", "What is the score of the following review on a scale of 1 to 5? just answer with 1, "
                                "2, 3, 4, or 5 without further explanation. review: "),
}  # fmt: skip


def _folder(name: str) -> Path:
    folder = REAL / name
    if not (folder / "dev_questions.json").is_file():
        pytest.skip(f"real LaMP set {name} not found at {folder} (set PPLUG_REAL_LAMP to its parent folder)")
    return folder


@pytest.mark.parametrize("name", sorted(SETS))
def test_dev_split_loads_and_queries_cut_right(name):
    task_name, instruction = SETS[name]
    split = load_split(_folder(name), "dev")
    assert split.task.name == task_name
    assert len(split) > 100
    assert all(ex.user_id for ex in split)
    for ex in split:
        assert ex.input.startswith(instruction)
        q = split.task.query_text(ex.input)
        assert q == ex.input[len(instruction) :].strip() and q
        assert len(ex.profile) <= 32
        for item in ex.profile:
            assert split.task.history_text(item).strip()
    golds = split.golds()
    if task_name == "LaMP_3":
        assert set(golds.values()) <= set(split.task.labels)
        assert split.task.history_text(split[0].profile[0]).split(" is the score for ")[0] in split.task.labels


@pytest.mark.parametrize("name", sorted(SETS))
def test_train_split_loads(name):
    folder = _folder(name)
    train = load_split(folder, "train")
    dev = load_split(folder, "dev")
    assert len(train) > len(dev) // 2
    assert train.task.name == dev.task.name
    assert len(set(train.users()) & set(dev.users())) > 0
