"""Reading a LoRA hub folder (`pplug.hub.model`), checked file by file: `HubError` names the file or field at fault."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pplug.version import __version__

from .config import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    FORMAT_VERSION,
    GENERAL,
    HUB_CONFIG_NAME,
    HubError,
    LoRAHubConfig,
    check_name,
)


def resolve_hub(path: str | os.PathLike) -> Path:
    """The hub folder to load for `path`: a hub folder itself, or a hub run folder's serving version
    (LATEST -> vNNNN, else final/), the same rule as model run folders (`pplug.core.checkpoints.resolve`)."""
    from pplug.core.checkpoints import BASE_VERSION, LATEST_FILE, resolve

    path = Path(path)
    if (path / LATEST_FILE).is_file() or (path / BASE_VERSION / HUB_CONFIG_NAME).is_file():
        return resolve(path, marker=HUB_CONFIG_NAME)
    return path  # a hub folder, or a missing one (`read_hub_json` names what is wrong)


def read_hub_json(hub_dir: Path) -> dict[str, Any]:
    """hub.json, checked field by field (its `config` as a `LoRAHubConfig`); HubError naming what is wrong."""
    path = hub_dir / HUB_CONFIG_NAME
    if not hub_dir.is_dir():
        raise HubError(f"{hub_dir}: hub folder not found")
    if not path.is_file():
        raise HubError(f"{path}: missing (not a LoRA hub folder)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"{path}: corrupt JSON ({e})") from None
    if not isinstance(doc, dict):
        raise HubError(f"{path}: expected a JSON object")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise HubError(f"{path}: format_version {doc['format_version']} is newer than this pplug ({__version__}) "
                       "understands; upgrade pplug")
    for key, kind in (("config", dict), ("adapters", list), ("general", dict), ("base_model", dict),
                      ("encoder", dict)):
        if not isinstance(doc.get(key), kind):
            raise HubError(f"{path}: field '{key}': missing or not a JSON {kind.__name__}")
    try:
        doc["config"] = LoRAHubConfig.from_dict(doc["config"], where="field 'config'")
    except ValueError as e:
        raise HubError(f"{path}: {e}") from None
    seen = set()
    for i, a in enumerate(doc["adapters"]):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("description"), str):
            raise HubError(f"{path}: field 'adapters[{i}]': needs a 'name' and a 'description' string")
        try:
            check_name(a["name"])
        except ValueError as e:
            raise HubError(f"{path}: field 'adapters[{i}]': {e}") from None
        if a["name"] in seen or a["name"] == GENERAL:
            raise HubError(f"{path}: field 'adapters[{i}]': duplicate adapter name {a['name']!r}")
        seen.add(a["name"])
    if not seen:
        raise HubError(f"{path}: field 'adapters': empty")
    return doc


def read_descriptions(path: Path, k: int, dim: int) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise HubError(f"{path}: missing")
    try:
        emb = load_file(str(path)).get("description_embeddings")
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"{path}: corrupt safetensors file ({e})") from None
    if emb is None or tuple(emb.shape) != (k, dim):
        raise HubError(f"{path}: 'description_embeddings' must be ({k}, {dim}) for the adapters of hub.json, got "
                       f"{None if emb is None else tuple(emb.shape)}")
    return emb.float()


def check_adapter_folder(folder: Path) -> None:
    """An adapter folder holds a readable peft config and a readable safetensors file, else HubError."""
    from safetensors import SafetensorError, safe_open

    if not folder.is_dir():
        raise HubError(f"{folder}: adapter folder missing (hub.json lists it)")
    cfg = folder / ADAPTER_CONFIG_NAME
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(f"{cfg}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"{cfg}: corrupt JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("peft_type") != "LORA":
        got = doc.get("peft_type") if isinstance(doc, dict) else doc
        raise HubError(f"{cfg}: field 'peft_type': expected 'LORA', got {got!r}")
    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        raise HubError(f"{weights}: missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"{weights}: corrupt safetensors file ({e})") from None



def check_encoder(doc: dict[str, Any], encoder: Any, path: Path) -> None:
    """HubError unless `encoder` is the one hub.json (`doc`, at `path`) was made with."""
    enc = doc["encoder"]
    if enc.get("identity") != encoder.identity or enc.get("dim") != encoder.dim:
        raise HubError(f"{path}: field 'encoder': made with encoder {enc.get('identity')!r} (dim {enc.get('dim')}) "
                       f"but the given one is {encoder.identity!r} (dim {encoder.dim})")


__all__ = ["check_adapter_folder", "check_encoder", "read_descriptions", "read_hub_json", "resolve_hub"]
