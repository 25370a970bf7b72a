"""The `pplug` command line: a table of verbs -> typed functions (`main`) and their bodies (`commands`).

May import: every folder.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The `pplug` entry point (`pplug.cli.main.main`), imported on call so `import pplug.cli` stays light."""
    from .main import main as run

    return run(argv)
