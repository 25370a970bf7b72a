"""pplug: life-long personalization of a frozen LLM with a PPlug user embedder.

A trainable user embedder reads all of a user's history (each item embedded once by a frozen
sentence encoder), weighs it against the current input, and projects it into soft-prompt vectors
prepended, with a trainable instruction vector, to the input embeddings of a frozen LLM.
"""

__version__ = "0.1.0"
