"""The serving verbs of `pplug`: the OpenAI-compatible HTTP server (`serve`) and privacy mode's user vector,
computed where the history lives (`embed-user`)."""

from __future__ import annotations

import sys
from typing import Literal


def serve(*, checkpoint: str, store: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          device: str = "auto", engine: Literal["hf", "vllm"] = "hf", admin_key: str | None = None,
          max_batch: int = 32, batch_window_ms: float = 10.0, reload_interval: float = 1.0,
          model_name: str | None = None, embedding_cache: str | None = None, log_level: str = "warning",
          expose_soft_prompts: bool = False, hub: str | None = None) -> None:
    """OpenAI-compatible HTTP server: many users, one frozen LLM, dynamic batching

    Args:
        checkpoint: run folder (serves LATEST, picks up promotions) or checkpoint
        store: user store: SQLite file or postgresql:// URL (default: as for `pplug user`)
        host: address to listen on (default: 127.0.0.1)
        port: port to listen on (default: 8000)
        device: auto (cuda, mps, cpu) or a torch device
        engine: what generates: hf (default) or vllm (pip install pplug[vllm]; labels are still scored on hf)
        admin_key: admin API key (default: $PPLUG_ADMIN_KEY; else a random one)
        max_batch: rows per forward pass (1: no batching)
        batch_window_ms: wait for more requests after the first
        reload_interval: seconds between checks of the checkpoint's LATEST and, with --hub, the hub's LATEST
            (a newly promoted version of either is served without a restart)
        model_name: model id clients pass (default: pplug-<run folder>)
        embedding_cache: embedding cache file (default: the shared pplug cache)
        log_level: uvicorn log level (default: warning)
        expose_soft_prompts: replies carry each input's soft prompt (debug)
        hub: a LoRA hub: every request's user also gets their retrieved adapters (pplug+lora-hub; the checkpoint
            must be a pplug one)
    """
    import os
    import secrets

    import uvicorn

    from pplug.cli.hub_option import hub_plugins
    from pplug.serve.app import create_app
    from pplug.store.schema import default_store_path

    admin_key = admin_key or os.environ.get("PPLUG_ADMIN_KEY")
    if not admin_key:
        admin_key = "pplug-admin-" + secrets.token_urlsafe(24)
        print(f"pplug serve: no --admin-key / PPLUG_ADMIN_KEY given; this run's admin key: {admin_key}",
              file=sys.stderr)
    app = create_app(checkpoint, store or default_store_path(), admin_key=admin_key, device=device,
                     max_batch=max_batch, window_ms=batch_window_ms, reload_interval=reload_interval,
                     model_name=model_name, embedding_cache=embedding_cache, llm_engine=engine,
                     expose_soft_prompts=expose_soft_prompts, plugins=hub_plugins(hub))
    snapshot = app.state.engine.snapshot
    print(f"pplug serve: {snapshot.folder} (version {snapshot.version}, task {app.state.engine.spec.name}) on "
          f"http://{host}:{port} (store {app.state.store.location}, max batch {max_batch}, "
          f"window {batch_window_ms} ms, engine {engine})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
    if app.state.engine.generator is not None:  # --engine vllm: stop its engine process before exiting
        app.state.engine.generator.close()


def embed_user(*, checkpoint: str, history: str, out: str, task: str | None = None) -> None:
    """privacy mode: a user vector from local history (the history stays here)

    Args:
        checkpoint: run or checkpoint folder (only its config is read)
        history: JSON list of profile items, JSON lines, or - for stdin
        out: the user vector JSON to write
        task: task of the items (default: the checkpoint's)
    """
    import json
    from pathlib import Path

    from pplug.core.io import atomic_write_text
    from pplug.lamp.data import read_items
    from pplug.serve import privacy

    items = read_items(history)
    document = privacy.embed_user(checkpoint, items, task=task)
    atomic_write_text(Path(out), json.dumps(document) + "\n")
    print(f"wrote {out}: {len(document['embeddings'])} x {document['dim']} embeddings ({document['encoder']}, "
          f"{document['task']}); {len(items) - len(document['embeddings'])} older items left out; no history text "
          "is in the file")


__all__ = ["embed_user", "serve"]
