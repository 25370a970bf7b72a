"""Stand-ins shared by several test files (importable as `fakes`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import re
import zlib

import torch


class BagOfWords:
    """A deterministic stand-in for the sentence encoder: hashed bag of lower-cased words, L2-normalised."""

    dim = 64
    identity = "bag-of-words-64"
    name_or_path = "bag-of-words"

    def encode(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)
