"""The compared methods: the registry of methods by name (`registry`), one prompt text for every method
(`prompts`), and examples -> the text batch each method reads, with BM25 / embedding retrieval (`batches`).

May import: core, encode.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # pplug 0.1's names of this module, deprecated
    from pplug._moved import folder_name

    return folder_name(__name__, name)
