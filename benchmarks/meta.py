"""What every results file says about the run that wrote it: command, code version, host, device, dtype.

    from meta import run_meta            # a benchmark script (benchmarks/ is on its sys.path)
    from benchmarks.meta import run_meta  # anywhere else, run from the repository root
    results["meta"] = run_meta(device="auto", dtype="auto")

`benchmarks/report.py` prints this next to every table it renders, so a figure always carries the command
that produced it, the commit it was measured at and the hardware it ran on.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_RECORDED = "not recorded"
"""The value of a key whose fact a results file does not know."""

HOST_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "bf16")
"""The CPU flags that decide float32 against bfloat16 speed (`pplug.core.runtime.cpu_has_native_bf16`)."""

META_KEYS = ("command", "code_version", "host", "device", "dtype")


def code_version(root: str | os.PathLike = ROOT) -> str:
    """`git rev-parse --short HEAD`, with "-dirty" when tracked files differ from it; NOT_RECORDED without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True,
                               timeout=30).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return NOT_RECORDED
    return f"{sha}-dirty" if dirty else sha


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.lower().split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def host_description() -> str:
    """"AMD EPYC 7B13, 2 cores, avx2, no avx512f, no avx512_bf16, no amx_bf16" (x86; Arm lists bf16)."""
    model, flags = _cpuinfo()
    wanted = HOST_FLAGS if "bf16" in flags or platform.machine().lower() in ("aarch64", "arm64") else HOST_FLAGS[:4]
    parts = [model, f"{os.cpu_count()} cores"] + [f if f in flags else f"no {f}" for f in wanted]
    return ", ".join(parts)


def device_description(device: str | None = "auto") -> str:
    """The torch device `device` resolves to, with the GPU's name on CUDA ("cuda (NVIDIA H200)")."""
    try:
        import torch

        from pplug.core.runtime import resolve_device

        dev = resolve_device(device)
        if dev.type == "cuda":
            return f"{dev} ({torch.cuda.get_device_name(dev)})"
        return str(dev)
    except Exception:  # noqa: BLE001 - a description must never stop a benchmark
        return str(device or NOT_RECORDED)


def dtype_description(dtype: str | None = "auto", device: str | None = "auto") -> str:
    """The LLM dtype `dtype` resolves to on `device` ("auto" -> the `pplug.core.runtime.resolve_dtype` rule)."""
    try:
        from pplug.core.runtime import resolve_device, resolve_dtype

        return resolve_dtype(dtype, resolve_device(device))
    except Exception:  # noqa: BLE001
        return str(dtype or NOT_RECORDED)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed from the repository root: "python benchmarks/bench_x.py --flag value"."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("python")
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv[1:]])


def run_meta(device: str | None = "auto", dtype: str | None = "auto", command: str | None = None) -> dict[str, str]:
    """The `"meta"` object of a results file.

    Args:
        device: the device the benchmark ran on ("auto", "cpu", "cuda", ...); resolved and described.
        dtype: the frozen LLM's dtype ("auto", "float32", "bfloat16", ...); "auto" resolved for `device`.
        command: the command line; default: this process's own (`command_line()`).

    Returns:
        {"command", "code_version", "host", "device", "dtype"}, all strings.
    """
    return {"command": command or command_line(), "code_version": code_version(), "host": host_description(),
            "device": device_description(device), "dtype": dtype_description(dtype, device)}


__all__ = ["META_KEYS", "NOT_RECORDED", "code_version", "command_line", "device_description", "dtype_description",
           "host_description", "run_meta"]
