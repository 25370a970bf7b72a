"""The docs are true: tables rendered from the results JSON, the README's Python example runs, and every
`pplug` subcommand and flag that README.md and docs/*.md name exists."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

# --- tables ------------------------------------------------------------------------------------------


def test_results_tables_match_the_json():
    """Every table between report markers equals what `python -m benchmarks.report` renders from the JSON."""
    changed = report.stale(ROOT, report.RESULTS)
    assert not changed, (f"stale tables in {[str(p.relative_to(ROOT)) for p in changed]}: "
                         "run `python -m benchmarks.report`")


def test_every_marker_names_a_renderer_and_every_renderer_is_used():
    used = set()
    for doc in DOCS:
        for m in report.MARKER.finditer(doc.read_text(encoding="utf-8")):
            assert m.group("name") in report.RENDERERS, f"{doc.name}: unknown table {m.group('name')}"
            used.add(m.group("name"))
    assert set(report.RENDERERS) - used == set(), "renderers that no document shows"


def test_report_check_fails_on_an_edited_table(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    edited = text.replace("| 0.", "| 9.", 1)
    assert edited != text
    (tmp_path / "docs" / "results.md").write_text(edited, encoding="utf-8")
    assert report.main(["--check", "--root", str(tmp_path)]) == 1
    assert "| 9." in capsys.readouterr().out  # the diff shows the edited line
    assert report.main(["--root", str(tmp_path)]) == 0  # rewriting restores the rendered table
    assert (tmp_path / "docs" / "results.md").read_text(encoding="utf-8") == text


def test_a_budget_table_refuses_a_row_its_results_file_lacks():
    """A re-scoring that fits the first-N-words floor to another N renames its row: the table must say so, not
    render the old row blank."""
    b = report.BUDGETS["news_headlines_time_shift"]
    assert "floor: first 25 words" in report.budget_table(report.RESULTS, b)
    renamed = dataclasses.replace(b, floors=(report.Row("floor: first 29 words", "floor: first 29 words"),))
    with pytest.raises(ValueError, match=r"real_lamp_news_headlines_time_shift_cpu.json: no rows \['floor: first 29"):
        report.budget_table(report.RESULTS, renamed)


def test_the_make_train_table_renders_from_its_results_file(tmp_path):
    doc = "before\n<!-- report:make_train -->\n<!-- /report:make_train -->\nafter\n"
    assert "_no results file yet: run `python benchmarks/bench_make_train.py`_" in report.render_text(doc, tmp_path)

    def scores(mae, rmse):
        return {"mae": mae, "rmse": rmse}

    runs = [{"seed": s, "dtype": dt, "wall_s": 300.0 + 60 * s, "pplug": scores(0.8 + 0.1 * s, 1.0 + 0.1 * s),
             "none": scores(2.1, 1.4)} for dt in ("float32", "bfloat16") for s in (0, 1, 2)]
    # the history-blind ablation ran for every run but seed 2 in float32
    blind = [{"seed": r["seed"], "dtype": r["dtype"], "wall_s": 200.0, **scores(1.0, 1.2)} for r in runs
             if (r["seed"], r["dtype"]) != (2, "float32")]
    meta = {"command": "python benchmarks/bench_make_train.py", "code_version": "abc1234",
            "host": "AMD EPYC, 2 cores, avx2, no avx512_bf16", "device": "cpu", "dtype": "float32, bfloat16"}
    clone = {"setup_s": 120.0, "train_s": 300.0, "total_s": 420.0, "dtype": "float32", "host": meta["host"],
             "pplug": scores(0.5, 0.8), "verdict": "verdict: ..."}
    (tmp_path / "make_train.json").write_text(json.dumps({"meta": meta, "ceiling": scores(0.933, 1.124), "jobs": 2,
                                                          "runs": runs, "no_history": blind, "clean_clone": clone}))
    out = report.render_text(doc, tmp_path)
    assert out.startswith("before\n<!-- report:make_train -->\n| `make train` run |") and out.endswith("after\n")
    assert "| seed 1, bfloat16 | 6.0 min | 0.900 | 1.100 | 1.000 / 1.200 | 2.100 / 1.400 |" in out
    assert ("| **mean ± sd, float32** (3 seeds; PPlug MAE +3.5% below the ceiling) | 6.0 ± 1.0 min | 0.900 ± 0.100 | "
            "1.100 ± 0.100 | 1.000 ± 0.000 / " in out)
    assert "| seed 2, float32 | 7.0 min | 1.000 | 1.200 |  | 2.100 / 1.400 |" in out
    assert "| history-blind ceiling" in out and "0.933" in out and "code abc1234" in out
    assert "2 trainings ran at once" in out
    assert "below the history-blind ceiling in **4 of 6** runs: at this budget the recipe does not learn" in out
    assert "`make train` took **7.0 min**: set-up 2.0 min + train.py 5.0 min (float32" in out
    assert "Not in this file" not in out
    # a host without native bf16 runs float32 only: the table says which dtype is missing and where it ran
    fp32_only = tmp_path / "fp32_only"  # another folder: results files are read once per path
    fp32_only.mkdir()
    (fp32_only / "make_train.json").write_text(json.dumps({"meta": meta, "ceiling": scores(0.933, 1.124), "jobs": 1,
                                                           "runs": runs[:3], "no_history": []}))
    out = report.render_text(doc, fp32_only)
    assert "below the history-blind ceiling in **2 of 3** runs" in out
    assert f"Not in this file: bfloat16 runs of this recipe (the host that ran it: {meta['host']})" in out


def test_every_committed_results_file_says_how_it_was_made():
    for path in sorted(report.RESULTS.glob("*.json")):
        meta = json.loads(path.read_text(encoding="utf-8")).get("meta")
        assert isinstance(meta, dict), f"{path.name}: no meta"
        assert set(meta) >= {"command", "code_version", "host", "device", "dtype"}, path.name
        assert all(isinstance(v, str) and v for v in meta.values()), path.name


def test_run_meta_describes_this_process():
    from benchmarks.meta import run_meta

    meta = run_meta(device="cpu", dtype="float32", command="python benchmarks/bench_x.py --flag")
    assert meta["command"] == "python benchmarks/bench_x.py --flag"
    assert meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?|not recorded", meta["code_version"])
    assert "cores" in meta["host"] and "bf16" in meta["host"]


# --- the README's Python example ------------------------------------------------------------------------


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_python_example_runs(tiny_config, tmp_path, monkeypatch, capsys):
    """The README's example, on a tiny random PPlug model saved where the example loads its checkpoint."""
    from pplug.modeling.model import PPlugModel

    (example,) = [b for b in python_blocks((ROOT / "README.md").read_text(encoding="utf-8")) if "personalize" in b]
    assert '"checkpoints/pplug-synthetic"' in example
    monkeypatch.setenv("PPLUG_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    run = tmp_path / "run"
    PPlugModel.from_config(tiny_config, cache_path=str(tmp_path / "emb.sqlite")).save_pretrained(run / "final")
    source = example.replace('"checkpoints/pplug-synthetic"', repr(str(run)))
    exec(compile(source, "README.md", "exec"), {"__name__": "readme_example"})
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(printed) == 2, printed
    assert len(printed[0]) == 3 and all(isinstance(p, str) and p.strip() for p in printed[0])  # three users
    assert len(printed[1]) == 1  # the third user again, with the new history


# --- command lines named in the docs --------------------------------------------------------------------

FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
SHELL_BLOCKS = ("bash", "sh", "shell", "text", "")


def command_lines(text: str) -> list[str]:
    """Every command in the docs' shell and transcript code blocks, continuation lines joined, `$ ` dropped.

    In `text` blocks (transcripts) only lines starting with `$ ` are commands; the rest is output."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang not in SHELL_BLOCKS:
            continue
        lines, buf = [], ""
        for raw in body.splitlines():
            line = raw.rstrip()
            if lang == "text" and not buf:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            lines.append(buf + line)
            buf = ""
        out += [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    return out


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line that run `pplug` or `python`, as tokens (comments dropped)."""
    if not re.search(r"(^|[;&|]\s*)(pplug|python|\.venv/bin/python)\s", line):
        return []
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    segs, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            segs.append(cur)
            cur = []
        else:
            cur.append(tok)
    segs.append(cur)
    return [s for s in segs if s and (s[0] == "pplug" or s[0].endswith("python"))]


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--") and len(t) > 2]


def _pplug_problems(tokens: list[str]) -> list[str]:
    import argparse

    from pplug.cli.main import build_parser

    parser, path = build_parser(), ["pplug"]
    rest = tokens[1:]
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        words = [t for t in rest if not t.startswith("-")]
        if not words or words[0] not in subs[0].choices:
            return [f"`{' '.join(path)} {words[0] if words else ''}`: no such subcommand "
                    f"(known: {sorted(subs[0].choices)})"]
        parser = subs[0].choices[words[0]]
        path.append(words[0])
        rest = rest[rest.index(words[0]) + 1:]
    known = set(parser._option_string_actions)
    return [f"`{' '.join(path)} {f}`: no such flag" for f in _flags(rest) if f not in known]


@pytest.fixture(scope="module")
def train_py_fields() -> dict[str, set[str]]:
    """The names train.py's LightningCLI accepts per section: PPlugConfig's fields for --model.*,
    LaMPDataModule's init args for --data.*, Lightning Trainer's init args for --trainer.*, and the top-level
    options (LightningCLI's own and train.py's `add_argument`s)."""
    from lightning.pytorch import Trainer

    from pplug.modeling.config import PPlugConfig

    try:
        from pplug.train.data import LaMPDataModule
    except ImportError:
        from pplug.train.data import LaMPDataModule
    source = (ROOT / "train.py").read_text(encoding="utf-8")
    top = set(re.findall(r'add_argument\(\s*"--(\w+)"', source)) | {"config", "seed_everything", "print_config"}
    return {"model": {f.name for f in dataclasses.fields(PPlugConfig)},
            "data": set(inspect.signature(LaMPDataModule.__init__).parameters) - {"self"},
            "trainer": set(inspect.signature(Trainer.__init__).parameters) - {"self"}, "": top}


def _train_problems(flags: list[str], fields: dict[str, set[str]]) -> list[str]:
    problems = []
    for f in flags:
        section, _, name = f[2:].rpartition(".")
        if section not in fields:
            problems.append(f"`python train.py {f}`: no section {section!r}")
        elif name not in fields[section]:
            problems.append(f"`python train.py {f}`: {name!r} is not a {section or 'top-level'} option")
    return problems


def _python_problems(tokens: list[str], fields: dict[str, set[str]]) -> list[str]:
    args = tokens[1:]
    if args[:1] == ["-m"]:
        script, args = ROOT / (args[1].replace(".", "/") + ".py"), args[2:]
    elif args and args[0].endswith(".py"):
        script, args = ROOT / args[0], args[1:]
    else:
        return []
    if script.name == "train.py":
        return _train_problems(_flags(args), fields)
    if not script.is_file():
        return [f"`python {script.relative_to(ROOT)}`: no such script"]
    # a benchmark script: its own argparse flags, then (after --train-args) flags of train.py
    own, train = (args[: args.index("--train-args")], args[args.index("--train-args") + 1:]) \
        if "--train-args" in args else (args, [])
    source = script.read_text(encoding="utf-8")
    problems = [f"`python {script.relative_to(ROOT)} {f}`: no such flag" for f in _flags(own)
                if f'"{f}"' not in source]
    return problems + _train_problems(_flags(train), fields)


def command_problems(text: str, fields: dict[str, set[str]]) -> list[str]:
    problems = []
    for line in command_lines(text):
        for tokens in _segments(line):
            problems += _pplug_problems(tokens) if tokens[0] == "pplug" else _python_problems(tokens, fields)
    return problems


def test_docs_name_only_commands_and_flags_that_exist(train_py_fields):
    problems = []
    for doc in DOCS:
        problems += [f"{doc.relative_to(ROOT)}: {p}" for p in command_problems(doc.read_text(encoding="utf-8"),
                                                                              train_py_fields)]
    assert not problems, "\n".join(problems)


def test_the_command_check_finds_a_wrong_name(train_py_fields):
    doc = ("```bash\npplug serve --checkpoint x --no-such-flag 1\npplug frobnicate --x\n"
           "python train.py --model.no_such_field 1 --trainer.max_steps 3\n"
           "python benchmarks/bench_real_lamp.py --sets a --no-such-option\n```\n"
           "```text\n$ pplug user add-history ana h.json --bogus\nadded 4 interactions (pplug frobnicate)\n```\n")
    problems = command_problems(doc, train_py_fields)
    assert any("pplug serve --no-such-flag" in p for p in problems)
    assert any("frobnicate" in p and "no such subcommand" in p for p in problems)
    assert any("no_such_field" in p for p in problems) and not any("max_steps" in p for p in problems)
    assert any("--no-such-option" in p for p in problems)
    assert any("pplug user add-history --bogus" in p for p in problems)
    assert len(problems) == 5, problems  # transcript output lines are not commands


# --- the docs speak of the product --------------------------------------------------------------------

DEVELOPMENT_WORDS = re.compile(r"an earlier session|in an earlier|before the change|was tried and reverted|"
                               r"\bstop \d+\b|this session|previous session", re.I)


def test_docs_describe_the_product_not_its_development():
    for doc in DOCS:
        hits = DEVELOPMENT_WORDS.findall(doc.read_text(encoding="utf-8"))
        assert not hits, f"{doc.relative_to(ROOT)}: {hits}"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def test_doc_links_resolve():
    """Every relative link of README.md and docs/*.md names a file that exists, and a heading where it has #."""
    problems = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                problems.append(f"{doc.name}: {target}: no such file")
            elif anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in heads:
                    problems.append(f"{doc.name}: {target}: no such heading")
    assert not problems, "\n".join(problems)


def test_dotted_names_in_the_docs_exist():
    """Every `pplug.<module path>[.<name>]` and `pplug/<path>.py` the docs name is importable / present, at
    its current path (a deprecated alias of pplug 0.1's flat layout counts as a problem)."""
    import importlib
    import warnings

    problems = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for dotted in set(re.findall(r"\bpplug(?:\.\w+)+\b", text)):
            parts = dotted.split(".")
            if parts[-1].endswith("_") or parts[-1] in ("json", "safetensors", "erasing", "adapters", "hub_version"):  # run_<command>, files
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                try:  # the longest importable prefix, then attributes
                    for cut in range(len(parts), 0, -1):
                        try:
                            obj = importlib.import_module(".".join(parts[:cut]))
                            break
                        except ModuleNotFoundError:
                            continue
                    for name in parts[cut:]:
                        obj = getattr(obj, name)
                except (AttributeError, DeprecationWarning, ImportError) as e:
                    problems.append(f"{doc.name}: {dotted} ({type(e).__name__})")
        files = set(re.findall(r"\bpplug/[\w/]+\.py\b", text))
        problems += [f"{doc.name}: {f}" for f in files if not (ROOT / f).is_file()]
    assert not problems, "\n".join(problems)
