"""The synthetic LaMP sets `make train` trains on: their words (`vocab`), the generator (`generate`) and the
reference scores a history-blind model can reach (`report`).

May import: core, lamp.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # pplug 0.1's names of this module, deprecated
    from pplug._moved import folder_name

    return folder_name(__name__, name)
