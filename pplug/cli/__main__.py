"""`python -m pplug.cli ...`: the `pplug` command."""

from pplug.cli.main import main

raise SystemExit(main())
