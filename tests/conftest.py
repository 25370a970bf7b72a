"""Shared test fixtures: tiny random models built from config in code (offline, seconds).

- `tiny_causal_llm_dir`: a 2-layer LlamaForCausalLM (hidden 32) + a small byte-level BPE tokenizer.
- `tiny_seq2seq_llm_dir`: a tiny T5ForConditionalGeneration + a byte-level BPE tokenizer.
- `tiny_encoder_dir`: a tiny random BERT saved as a sentence-transformers model (Transformer + mean Pooling).
- `tiny_config`: a PPlugConfig pointing at the tiny causal LLM and the tiny encoder.
- `synth_dir`: a tiny synthetic LaMP_3 set (per test module), the data of the train.py runs.
- `tmp_cache`: a fresh embedding-cache path (SQLite file) per test.
- `postgres_server` / `postgres_url`: a real PostgreSQL (with pgvector) started by the `pgserver` package
  (the `test` extra) in a temporary folder, reached through its Unix socket only; a fresh database per test.
  Where it cannot start, the tests that need it skip with one line saying why.
- `store_url`: a fresh user store on each backend (parametrised: a SQLite path, then a PostgreSQL URL).

The model folders are session-scoped (built once per test run); tests must not write into them.
"""

from __future__ import annotations

import os

# Never reach the network from tests (must be set before transformers is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The embeddings a test run computes stay in that run's own cache (`pplug.core.weights.cache_dir`): the tiny
# encoder's tokenizer is trained afresh each run and its vocabulary may differ while its weights, and so its cache
# identity, do not, so vectors an earlier run left in the shared cache could come back for other tokens. The
# converted default LLM is still shared (`models/`: slow to make, and a function of the installed package only).
_shared_cache = Path(os.environ.get("PPLUG_CACHE_DIR") or Path.home() / ".cache" / "pplug").expanduser()
_run_cache = Path(tempfile.mkdtemp(prefix="pplug-test-cache-"))
(_shared_cache / "models").mkdir(parents=True, exist_ok=True)
(_run_cache / "models").symlink_to(_shared_cache / "models", target_is_directory=True)
os.environ["PPLUG_CACHE_DIR"] = str(_run_cache)
atexit.register(shutil.rmtree, _run_cache, ignore_errors=True)  # removes the link, never the shared models

# Text the tiny tokenizers are trained on: LaMP-like instructions and review snippets, so common words
# become single tokens and sequences stay short (byte-level BPE still covers any string).
_CORPUS = [
    "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5",
    "without further explanation. review: the movie was great and I loved the acting",
    "Generate a headline for the following article: the city council voted on a new budget",
    "Generate a title for the following abstract of a paper: we propose a new method for personalization",
    "Paraphrase the following tweet without any explanation before or after it: good morning everyone",
    "Which tag does this movie relate to among the following tags? description: a space adventure",
    "is the score for this product works well, terrible service, would buy again, not worth the money",
    "sci-fi, based on a book, comedy, action, twist ending, dystopia, dark comedy, classic, psychology",
    "fantasy, romance, thought-provoking, social commentary, violence, true story",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 [1] [2] user history item text",
    "I really enjoyed this book. It was boring. Five stars! One star. Average at best, okay I guess.",
]

TINY_HIDDEN = 32
"""Hidden size of the tiny LLMs (the soft-prompt token_dim in tests)."""
TINY_ENCODER_DIM = 16
"""Output dimension of the tiny sentence encoder."""


def _byte_level_bpe(special: list[str], vocab_size: int = 384):
    """Train a small byte-level BPE tokenizer in code (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_causal_llm_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random LlamaForCausalLM and its tokenizer (usable as base_model_name_or_path)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_causal_llm")
    raw = _byte_level_bpe(["<|endoftext|>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=TINY_HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    # Random init gives near-uniform logits, so greedy outputs would hinge on ties; a larger init
    # spreads the logits and makes "batched == alone" comparisons meaningful.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_seq2seq_llm_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random T5ForConditionalGeneration and its tokenizer."""
    import torch
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    out = tmp_path_factory.mktemp("tiny_seq2seq_llm")
    raw = _byte_level_bpe(["<pad>", "</s>", "<unk>"])  # T5 convention: pad=0 (decoder start), eos=1
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(tok), d_model=TINY_HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random BERT saved as a sentence-transformers model (Transformer + mean Pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny_encoder")
    hf_dir, st_dir = root / "hf", root / "st"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw = Tokenizer(tok_models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials,
                                                                  show_progress=False))
    from tokenizers.processors import TemplateProcessing

    raw.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    from tokenizers import decoders

    raw.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=TINY_ENCODER_DIM, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=128)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_config(tiny_causal_llm_dir, tiny_encoder_dir):
    """A PPlugConfig pointing at the tiny causal LLM and tiny encoder (small limits for speed).

    Session-scoped: tests that change fields should use `dataclasses.replace(tiny_config, ...)`.
    """
    from pplug.modeling.config import PPlugConfig

    return PPlugConfig(
        base_model_name_or_path=str(tiny_causal_llm_dir),
        encoder_name_or_path=str(tiny_encoder_dir),
        task="LaMP_3",
        max_history=32,
        max_input_tokens=64,
        max_target_tokens=16,
        max_encoder_tokens=64,
    )


@pytest.fixture(scope="module")
def gen_model(tiny_config):
    """A tiny random PPlug model of a generation task (LaMP_6), for decoding tests."""
    import dataclasses

    import torch

    from pplug.encode.history import HistoryEncoder
    from pplug.modeling.model import PPlugModel

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config, task="LaMP_6", max_input_tokens=48)
    enc = HistoryEncoder(cfg.encoder_name_or_path, cache_path=":memory:")
    return PPlugModel.from_config(cfg, history_encoder=enc).eval()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny synthetic LaMP_3 set (6 users; 15 train and 12 dev questions) for train.py runs."""
    from pplug.synth.generate import make_synthetic

    out = tmp_path_factory.mktemp("synth")
    make_synthetic(out, kind="ratings", n_users=6, min_train=2, max_train=3, min_history=3, max_history=6)
    return out


@pytest.fixture
def tmp_cache(tmp_path) -> Path:
    """Path of a fresh, empty embedding cache (SQLite file) for one test."""
    return tmp_path / "embeddings.sqlite"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole run (pgserver: the server binaries ship inside the wheel).

    Its data folder is a temporary folder of its own, not one under pytest's `/tmp/pytest-of-<user>/`: run as root,
    pgserver starts the server as a `pgserver` user and opens the folders above the data to it, and every pytest
    session that starts meanwhile (another checkout's suite) sets `pytest-of-<user>` back to owner-only, so the
    server would lose its data folder at its next checkpoint (PANIC: Permission denied) and every later test error.
    """
    import shutil
    import tempfile
    import warnings

    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR (pgserver keeps a lock file there)
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver
            import psycopg  # noqa: F401
    except ImportError as e:
        pytest.skip(f"PostgreSQL tests skipped: {e.name} is not installed (pip install -e '.[test]')")
    data = Path(tempfile.mkdtemp(prefix="pplug-test-pg-"))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            srv = pgserver.get_server(data, cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001 - any failure to start means "no Postgres here", said in one line
        shutil.rmtree(data, ignore_errors=True)
        reason = " ".join(str(e).split())[:200]
        pytest.skip(f"PostgreSQL tests skipped: pgserver could not start a server ({type(e).__name__}: {reason})")
    yield srv
    srv.cleanup()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request):
    """The URL of a new, empty database on the test server (dropped afterwards)."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.get_uri(name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """A fresh user store's `--store` value on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")
