"""`pplug serve`'s routes about the server itself: `GET /health` (no key) and `GET /v1/models`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .access import State, caller

router = APIRouter()


@router.get("/health")
async def health(state: State):
    engine, batcher = state.engine, state.batcher
    snap = engine.snapshot
    return {"status": "ok", "model": state.model_name, "version": snap.version, **engine.plugin_versions(),
            "task": engine.spec.name,
            "device": str(engine.device), "max_batch": batcher.max_batch, "window_ms": batcher.window * 1000,
            "engine": dict(engine.engine_info), "stats": dict(engine.stats)}


@router.get("/v1/models", dependencies=[Depends(caller)])
async def models(state: State):
    engine = state.engine
    snap = engine.snapshot
    return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.started,
                                        "owned_by": "pplug",
                                        "pplug": {"version": snap.version, "task": engine.spec.name,
                                                  "method": engine.served_method,
                                                  **engine.plugin_versions(),
                                                  "decoding": snap.decoding}}]}


__all__ = ["router"]
