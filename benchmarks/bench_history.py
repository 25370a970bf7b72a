"""History encoding throughput: cold (encoder runs) vs warm cache (in-process LRU, and SQLite from a new instance).

    python benchmarks/bench_history.py [--items 1000] [--chunk 256]

Uses the real default sentence encoder (all-MiniLM-L6-v2, offline) and a fresh SQLite cache in a temp
folder. Prints items/s for each pass, encoder calls on the warm passes (must be 0), the cache file size,
and peak memory: process max RSS (resource) and the Python-heap peak during encoding (tracemalloc; torch
tensors are outside it).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pplug.encode.history import HistoryEncoder  # noqa: E402

WORDS = ("great terrible value battery screen sound quality price delivery broke love hate works fine cheap "
         "expensive recommend return refund colour size fits small large comfortable noisy quiet fast slow").split()


def _texts(n: int) -> list[str]:
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 20)]
        out.append(f'{1 + i % 5} is the score for "{" ".join(words)} (review {i})"')
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=256, help="texts encoded (and cached) per chunk")
    ap.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cpu")
    args = ap.parse_args(argv)
    texts = _texts(args.items)
    cache = Path(tempfile.mkdtemp()) / "emb.sqlite"
    enc = HistoryEncoder("default", cache_path=cache, chunk_size=args.chunk, device=args.device)
    rss_loaded = _rss_mb()

    tracemalloc.start()
    t0 = time.perf_counter()
    enc.encode(texts)
    cold = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cold_calls = enc.encoder_calls

    t0 = time.perf_counter()
    enc.encode(texts)
    warm_mem = time.perf_counter() - t0
    warm_mem_calls = enc.encoder_calls - cold_calls

    enc2 = HistoryEncoder("default", cache_path=cache, memory_items=0, device=args.device)  # a new process, in effect
    t0 = time.perf_counter()
    enc2.encode(texts)
    warm_sql = time.perf_counter() - t0

    size_mb = sum(p.stat().st_size for p in cache.parent.iterdir()) / 2**20
    print(f"# bench_history: all-MiniLM-L6-v2, {args.items} distinct items, chunk {args.chunk}, "
          f"encoder dim {enc.dim}")
    print(f"{'pass':<36}{'seconds':>9}{'items/s':>11}{'encoder calls':>15}")
    print(f"{'cold (encoder runs)':<36}{cold:>9.2f}{args.items / cold:>11.0f}{cold_calls:>15d}")
    print(f"{'warm, same instance (LRU)':<36}{warm_mem:>9.3f}{args.items / warm_mem:>11.0f}{warm_mem_calls:>15d}")
    print(f"{'warm, new instance (SQLite)':<36}{warm_sql:>9.3f}{args.items / warm_sql:>11.0f}{enc2.encoder_calls:>15d}")
    print(f"speed-up warm/cold: LRU {cold / warm_mem:.0f}x, SQLite {cold / warm_sql:.0f}x")
    print(f"cache size {size_mb:.2f} MiB ({size_mb * 2**20 / args.items:.0f} B/item, float16)")
    print(f"peak RSS: {rss_loaded:.0f} MiB after loading, {_rss_mb():.0f} MiB after encoding; "
          f"Python-heap peak during cold encoding {py_peak / 2**20:.1f} MiB")
    assert warm_mem_calls == 0 and enc2.encoder_calls == 0, "warm cache must make zero encoder calls"


if __name__ == "__main__":
    main()
