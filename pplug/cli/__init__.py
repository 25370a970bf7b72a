"""The `pplug` command line: a table of verbs -> typed functions (`main`), the parsers built from their
signatures (`signatures`), the verbs by theme (`data`, `users`, `hub`, `models`, `serve`), the `--hub DIR`
option of other verbs (`hub_option`) and what they share (`commands`). The `pplug` script and
`python -m pplug.cli` run `pplug.cli.main.main`.

May import: every folder.
"""
