"""Life-long adaptation: fast (`fast`: new history changes the output at once, no training) and slow (`slow`:
versioned retraining that never loses the last good model).

May import: core, lamp, persona, methods, modeling, decode, store, train.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # pplug 0.1's names of this module, deprecated
    from pplug._moved import folder_name

    return folder_name(__name__, name)
