"""Embed -> prefix -> frozen LLM: the saved config (`config`), the trainable user embedder (`embedder`), the
frozen LLM that reads a per-row soft prompt (`llm`, sampling in `sampling`), `PPlugModel` around them
(`model`; `prefixed` decodes from soft prompts computed beforehand) and the label decoding rules every
decoder shares (`label_rules`: the user's history prior, argmax / expected / median).

May import: core, encode, methods.
"""
