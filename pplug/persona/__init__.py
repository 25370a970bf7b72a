"""The textual persona (AI Persona): its document and validation (`schema`), the paragraph it puts in a prompt
(`render`), and the fields a user's history tells with no model (`from_history`).

May import: core.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # pplug 0.1's names of this module, deprecated
    from pplug._moved import folder_name

    return folder_name(__name__, name)
