"""HistoryEncoder + EmbeddingCache + faiss retrieval (tiny random sentence encoder, offline)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading

import numpy as np
import pytest
import torch

from pplug.encode.cache import EmbeddingCache, text_key
from pplug.encode.history import HistoryEncoder, HistoryIndex, top_k

TEXTS = ["the movie was great", "terrible service", "would buy again", "five stars", "not worth the money"]


@pytest.fixture(scope="module")
def shared_encoder(tiny_encoder_dir):
    """One loaded encoder (in-memory cache) for tests that only need embeddings."""
    return HistoryEncoder(str(tiny_encoder_dir), cache_path=":memory:")


def test_encode_shape_order_and_normalised(shared_encoder):
    emb = shared_encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), shared_encoder.dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(TEXTS)), atol=2e-3, rtol=0)
    # order follows the input, not the cache
    rev = shared_encoder.encode(TEXTS[::-1])
    torch.testing.assert_close(rev, emb.flip(0))
    assert shared_encoder.encode([]).shape == (0, shared_encoder.dim)


def test_warm_cache_makes_no_encoder_calls(tiny_encoder_dir, tmp_cache):
    enc = HistoryEncoder(str(tiny_encoder_dir), cache_path=tmp_cache)
    cold = enc.encode(TEXTS + TEXTS[:2])  # duplicates inside one call are embedded once
    assert enc.encoder_calls == 1 and enc.encoded_texts == len(TEXTS)
    warm = enc.encode(TEXTS)
    assert enc.encoder_calls == 1  # in-process hit
    torch.testing.assert_close(warm, cold[: len(TEXTS)], atol=0, rtol=0)

    # a new instance (a new process, in effect) reads the persistent SQLite cache: zero encoder calls
    enc2 = HistoryEncoder(str(tiny_encoder_dir), cache_path=tmp_cache, memory_items=0)
    again = enc2.encode(TEXTS)
    assert enc2.encoder_calls == 0 and enc2.encoded_texts == 0
    torch.testing.assert_close(again, warm, atol=0, rtol=0)  # cold and warm reads are bit-identical
    assert enc2.cache.count(enc2.identity) == len(TEXTS)

    # only the new text is encoded
    enc2.encode(TEXTS + ["a brand new review"])
    assert enc2.encoder_calls == 1 and enc2.encoded_texts == 1


def test_cache_is_compact_float16(tiny_encoder_dir, tmp_cache):
    enc = HistoryEncoder(str(tiny_encoder_dir), cache_path=tmp_cache)
    enc.encode(TEXTS[:1])
    with sqlite3.connect(tmp_cache) as conn:
        (blob,) = conn.execute("SELECT vec FROM embeddings").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert len(blob) == 2 * enc.dim  # float16
    assert mode.lower() == "wal"


def test_chunked_encoding_with_progress(tiny_encoder_dir, tmp_cache):
    enc = HistoryEncoder(str(tiny_encoder_dir), cache_path=tmp_cache, chunk_size=2)
    texts = [f"history item number {i}" for i in range(7)]
    emb = enc.encode(texts, show_progress=True)
    assert enc.encoder_calls == 4 and emb.shape[0] == 7  # ceil(7 / 2) chunks
    ref = HistoryEncoder(str(tiny_encoder_dir), cache_path=":memory:").encode(texts)
    torch.testing.assert_close(emb, ref, atol=2e-3, rtol=0)  # chunking does not change results


def test_encoder_identity_separates_namespaces(tmp_cache):
    cache = EmbeddingCache(tmp_cache)
    k = text_key("same text")
    cache.put_many("enc-a", {k: np.ones(4, dtype=np.float32)})
    cache.put_many("enc-b", {k: -np.ones(4, dtype=np.float32)})
    assert cache.get_many("enc-a", [k])[k].tolist() == [1, 1, 1, 1]
    assert cache.get_many("enc-b", [k])[k].tolist() == [-1, -1, -1, -1]
    assert cache.get_many("enc-c", [k]) == {}
    with pytest.raises(ValueError, match="dim 4"):
        cache.put_many("enc-a", {text_key("other"): np.ones(8, dtype=np.float32)})


def test_float32_cache_is_exact(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", dtype="float32")
    v = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    cache.put_many("e", {b"k": v})
    np.testing.assert_array_equal(EmbeddingCache(tmp_path / "c.sqlite").get_many("e", [b"k"])[b"k"], v)
    with pytest.raises(ValueError, match="float16"):
        EmbeddingCache(tmp_path / "x.sqlite", dtype="int8")


def _writer(path: str, worker: int, n: int) -> None:
    cache = EmbeddingCache(path)
    for i in range(n):
        # overlapping keys between workers: both write "shared-i"; INSERT OR IGNORE keeps one
        cache.put_many("enc", {f"shared-{i}".encode(): np.full(8, i, np.float32),
                               f"w{worker}-{i}".encode(): np.full(8, worker, np.float32)})


def test_concurrent_processes_and_threads(tmp_cache):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_cache), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    cache = EmbeddingCache(tmp_cache)
    assert cache.count("enc") == 40 + 3 * 40
    got = cache.get_many("enc", [f"shared-{i}".encode() for i in range(40)])
    assert all(got[f"shared-{i}".encode()][0] == i for i in range(40))

    # threads sharing one cache object
    errors = []

    def reader_writer(t):
        try:
            for i in range(20):
                cache.put_many("enc2", {f"t{t}-{i}".encode(): np.zeros(8, np.float32)})
                cache.get_many("enc2", [f"t{t}-{i}".encode()])
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=reader_writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and cache.count("enc2") == 80


def test_top_k_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    hist = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=-1)
    expected = torch.argsort(hist @ q, descending=True)[:5].tolist()
    assert top_k(hist, q, 5) == expected
    assert len(top_k(hist[:3], q, 10)) == 3  # k clipped to the history size
    assert top_k(hist, q, 0) == [] and top_k(hist[:0], q, 3) == []


def test_history_index_ids_and_remove():
    index = HistoryIndex(4)
    e = torch.eye(4)
    assert index.add(e[:2], ids=[10, 11]) == [10, 11]
    assert index.add(e[2:]) == [12, 13]  # continues after the largest id
    assert index.search(torch.tensor([0.0, 1.0, 0.1, 0.0]), k=2)[0][0] == 11
    assert index.remove([11]) == 1 and len(index) == 3
    assert 11 not in [i for i, _ in index.search(e[1], k=3)]
    with pytest.raises(ValueError, match="dim 4"):
        index.add(torch.ones(1, 5))
