"""Embed -> prefix -> frozen LLM: the saved config (`config`), the trainable user embedder (`embedder`), the
frozen LLM that reads a per-row soft prompt (`llm`, sampling in `sampling`) and `PPlugModel` around them
(`model`).

May import: core, encode, methods.
"""
