"""Where and in what precision pplug runs: the one place that turns "auto" into a device and a dtype.

    device "auto"       -> cuda, then mps, then cpu
    torch_dtype "auto"  -> bfloat16 on CUDA devices that support it (else float16); float32 on CPU and mps

Why float32 on every CPU: the speed of bfloat16 on a CPU depends on the host, and not only on its flags.
Without native bf16 (e.g. AVX2 only) PyTorch emulates bf16 matmuls, and a 2048x576 @ 576x1536 product took
3.19 s in bfloat16 against 0.069 s in float32 (46x). With avx512_bf16 but no AMX it went both ways on this
project's own hosts: faster on an AMD EPYC (`make train` 200 s against 260 s), slower on an Intel Xeon (3.44
against 2.08 s a training step). Quality moved too: bf16 scored lower on enron_subjects. So "auto" never
picks a precision from the host a run happens to get: a CPU run gives the float32 numbers on every host,
and bfloat16 is an explicit choice (`--model.torch_dtype bfloat16`), with a warning on a CPU that emulates
it. The decision is printed once per process, so a log says which precision a run used.

Also here: batch sizes that suit a device (`default_batch_size`), and the one progress reporter every
long loop uses (`progress`): a tqdm bar on a terminal, else a plain line every few seconds with
`N/M`, the rate and an ETA, so a log file (CI, nohup, `make train > log`) shows life.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import time
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Explicit dtype names a config may use; "auto" is resolved by `resolve_dtype`."""
DTYPE_CHOICES = ("auto", *DTYPES)

_said: set[str] = set()


def say_once(message: str) -> None:
    """Print `pplug: <message>` to stderr the first time this process asks (decisions, not chatter)."""
    if message not in _said:
        _said.add(message)
        print(f"pplug: {message}", file=sys.stderr, flush=True)


# --- device ----------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`"auto"`/None -> cuda if available, then mps, then cpu; anything else as given (`"cuda:1"`, `"cpu"`).

    Raises:
        ValueError: a CUDA / MPS device was asked for but is not available here.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine (use --device cpu or auto)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: MPS is not available on this machine (use --device cpu or auto)")
    return dev


def default_batch_size(device: str | torch.device, cpu: int, accelerator: int) -> int:
    """`cpu` rows per forward pass on a CPU, `accelerator` rows on a GPU (bigger batches fill a GPU)."""
    return cpu if torch.device(device).type == "cpu" else accelerator


# --- dtype -----------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU's capability flags, lower case (Linux /proc/cpuinfo, macOS sysctl); empty when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags: set[str] = set()
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):  # x86 "flags", Arm "Features"
                    flags.update(value.lower().split())
            return flags
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            return {"bf16"} if out == "1" else set()
        except (OSError, subprocess.SubprocessError):
            return set()
    return set()


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 avx512_bf16 / amx_bf16, Arm bf16); cached."""
    flags = cpu_flags()
    return any(f in flags for f in _NATIVE_BF16_FLAGS)


def resolve_dtype(dtype: str | None, device: str | torch.device = "cpu") -> str:
    """The dtype name to run a frozen LLM in on `device`: an explicit name as given, "auto" decided here.

    Raises:
        ValueError: an unknown dtype name.
    """
    name = (dtype or "auto").strip().lower()
    dev = torch.device(device)
    if name in DTYPES:
        if name == "bfloat16" and dev.type == "cpu" and not cpu_has_native_bf16():
            say_once("torch_dtype bfloat16 on a CPU without native bf16 (avx512_bf16/amx_bf16 absent): PyTorch "
                     "emulates it, up to ~46x slower than float32")
        return name
    if name != "auto":
        raise ValueError(f"torch_dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")
    if dev.type == "cuda":
        chosen = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        why = "CUDA device with bf16" if chosen == "bfloat16" else "CUDA device without bf16"
    else:  # cpu, mps and others: float32 runs everywhere and gives the same results on every host
        chosen, why = "float32", f"{dev.type} device; bfloat16 only when asked for"
    say_once(f"torch_dtype auto -> {chosen} on {dev.type} ({why}; set torch_dtype to override)")
    return chosen


# --- progress --------------------------------------------------------------------------------------


class LineProgress:
    """A progress reporter for logs: one line `desc: N/M (r unit/s, ETA s)` at most every `every_s` seconds
    (and at the end), on stderr. Same `update` / `close` / context-manager API as tqdm."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", every_s: float = 15.0,
                 quiet: bool = False) -> None:
        self.total, self.desc, self.unit, self.every_s, self.quiet = total, desc, unit, every_s, quiet
        self.n = 0
        self._t0 = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or (self.total is not None and self.n >= self.total):
            self._last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._t0, 1e-9)
        rate = self.n / elapsed
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {format_seconds((self.total - self.n) / rate)}"
        return f"{self.desc}: {self.n}{total} ({rate:.2f} {self.unit}/s{eta})"

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_seconds(s: float) -> str:
    """`75` -> `1m15s`; `3725` -> `1h02m`."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on a terminal, a `LineProgress` in a log, or a silent stand-in when `enabled` is False."""
    if not enabled:
        return LineProgress(total, desc, unit, quiet=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    return LineProgress(total, desc, unit)


__all__ = ["DTYPES", "DTYPE_CHOICES", "LineProgress", "cpu_flags", "cpu_has_native_bf16", "default_batch_size",
           "format_seconds", "progress", "resolve_device", "resolve_dtype", "say_once"]
