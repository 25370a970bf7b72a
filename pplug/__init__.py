"""pplug: life-long personalization of a frozen LLM with a PPlug user embedder.

A trainable user embedder reads all of a user's history (each item embedded once by a frozen
sentence encoder), weighs it against the current input, and projects it into soft-prompt vectors
prepended, with a trainable instruction vector, to the input embeddings of a frozen LLM.

    from pplug import PPlugModel, PPlugConfig, explain, personalize
    model = PPlugModel.from_pretrained("checkpoints/pplug-synthetic", device="auto")
    outputs = personalize(model, examples)          # many users, one batch, the checkpoint's own method
    why = explain(model, examples)                  # per row: history weights, statistics, with / without history

The public names are imported on first use (PEP 562), so `import pplug` and `pplug --help` stay fast
and never import Lightning (only training does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._moved import install as _install_moved_paths
from .version import __version__

_install_moved_paths()  # pplug 0.1's module paths, deprecated

_PUBLIC = {
    "PPlugConfig": "pplug.modeling.config",
    "PPlugModel": "pplug.modeling.model",
    "PPlugBatch": "pplug.core.batch",
    "personalize": "pplug.decode.inference",
    "explain": "pplug.decode.explain",
}

if TYPE_CHECKING:  # pragma: no cover
    from pplug.core.batch import PPlugBatch
    from pplug.decode.explain import explain
    from pplug.decode.inference import personalize
    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pplug' has no attribute {name!r}")


__all__ = ["PPlugBatch", "PPlugConfig", "PPlugModel", "__version__", "explain", "personalize"]
