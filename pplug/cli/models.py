"""The model verbs of `pplug`: personalized outputs from a saved model (`generate`), why each user got theirs
(`explain`), methods side by side on a LaMP split (`evaluate`) and the facet preference models of reward-mbr
decoding (`pplug prefs train`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pplug.cli.commands import CandidateDecoding, CLIError, ModelPlacement
from pplug.cli.hub_option import generate_models, hub_plugins, hub_task
from pplug.cli.signatures import Flag
from pplug.core.tasks import DECODINGS_BY_KIND

# --decoding's choices: the decodings of every kind of output (`TaskSpec.decodings`), each once, in their order;
# read from pplug.core.tasks when this module loads, so the tasks stay the one list of decodings
DECODINGS = tuple(dict.fromkeys(name for names in DECODINGS_BY_KIND.values() for name in names))
Decoding = Literal[DECODINGS]
Method = Literal["none", "prompt-tuned", "retrieval", "pplug", "pplug+retrieval", "lora-hub", "pplug+lora-hub"]
Facet = Literal["length", "formality", "topic"]


def generate(*, checkpoint: str | None = None, hub: str | None = None,
             input: Annotated[str | None, Flag(one_of="source")] = None,
             questions: Annotated[str | None, Flag(one_of="source")] = None, history: str | None = None,
             out: str | None = None, decoding: Decoding | None = None, num_beams: int = 1,
             max_new_tokens: int | None = None, batch_size: int | None = None, base_model: str | None = None,
             candidates: CandidateDecoding = CandidateDecoding(),
             placement: ModelPlacement = ModelPlacement()) -> None:
    """personalized outputs from a saved PPlug model (one input or a questions file)

    Args:
        checkpoint: a checkpoint folder, or a run folder (serves its LATEST version, else final/)
        hub: a LoRA hub: alone the lora-hub method, with a pplug --checkpoint pplug+lora-hub (each row through
            its user's retrieved adapters)
        input: one LaMP-style input text (use with --history)
        questions: LaMP questions file: many users decoded in batches
        history: the user's profile items: a JSON list, an object with 'profile', or JSON lines (ids optional)
        out: write LaMP-format predictions here (default: print)
        decoding: label tasks: most likely label (argmax); ratings also expected value (best for RMSE) or
            median (best for MAE) over 1..5; generation tasks: argmax (= greedy, beams with --num-beams),
            greedy, beam, mbr (minimum Bayes risk over sampled candidates), preference (weighted toward the
            user's past outputs) or reward-mbr (weighted by the user's facet preference models) (default: the
            checkpoint's)
        num_beams: beams of generation tasks' argmax and beam decodings (default: 1)
        max_new_tokens: generation budget (default: the task's)
        batch_size: rows per forward pass (default: 16 CPU, 64 GPU)
        base_model: override the base LLM path (must be the same model)
    """
    from pplug.core.checkpoints import CheckpointError, resolve
    from pplug.core.tasks import get_task
    from pplug.decode.inference import personalize
    from pplug.lamp.data import LaMPDataError, parse_questions, read_items, read_json, write_outputs
    from pplug.modeling.llm import FrozenLLM
    from pplug.modeling.model import PPlugModel

    if input is not None and not history:
        raise CLIError("--input needs --history FILE.json (use [] in the file for a user without history)")
    if history and questions:
        raise CLIError("--history goes with --input; a questions file carries each user's profile")
    if not checkpoint and not hub:
        raise CLIError("pass --checkpoint DIR, --hub DIR (the lora-hub method), or both (pplug+lora-hub)")
    try:
        resolved = resolve(checkpoint) if checkpoint else None
        config = PPlugModel.load_checkpoint_config(resolved)[0] if resolved else None
        task = get_task(config.task if config else hub_task(hub))
        if questions:
            path = Path(questions)
            examples = parse_questions(read_json(path), path, task)
        else:
            path = Path(history)
            # one history-item shape everywhere (`pplug user add-history`, the server, `embed-user`): a JSON list,
            # an object with 'profile' or JSON lines; an item's id is optional (one is made up when absent)
            items = [{"id": f"h{j}", **it} if isinstance(it, dict) and "id" not in it else it
                     for j, it in enumerate(read_items(history))]
            examples = parse_questions([{"id": "input", "input": input, "profile": items}], path, task)
        llm = None
        if base_model:
            llm = FrozenLLM(base_model, dtype=placement.dtype or (config.torch_dtype if config else "auto"),
                            device=placement.device)
        model, method = generate_models(hub, resolved, llm, placement)
    except (LaMPDataError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    outputs = personalize(model, examples, decoding=decoding, batch_size=batch_size, num_beams=num_beams,
                          max_new_tokens=max_new_tokens, progress=len(examples) > (batch_size or 16),
                          **({"options": candidates.spec(num_beams), "method": method} if resolved else {}))
    predictions = {example.id: output for example, output in zip(examples, outputs)}
    if out:
        write_outputs(out, task.name, predictions)
        print(f"wrote {len(predictions)} predictions ({task.name}) to {out}")
    elif input is not None:
        print(predictions["input"])
    else:
        print(json.dumps({"task": task.name, "golds": [{"id": k, "output": v} for k, v in predictions.items()]},
                         indent=2, ensure_ascii=False))


def explain(*, checkpoint: str, input: Annotated[str | None, Flag(one_of="source")] = None,
            questions: Annotated[str | None, Flag(one_of="source")] = None, history: str | None = None,
            persona: str | None = None, max_examples: int | None = None, top: int = 5, out: str | None = None,
            decoding: Decoding | None = None, placement: ModelPlacement = ModelPlacement()) -> None:
    """why each user got their output: history weights, statistics, and the output with / without the history

    Args:
        checkpoint: a checkpoint folder, or a run folder (its LATEST version, else final/), of a method with a
            user embedding (pplug, pplug+retrieval)
        input: one LaMP-style input text (use with --history)
        questions: LaMP questions file: one explanation per question
        history: JSON file: the user's profile items (a list, or an object with 'profile')
        persona: persona text written into the prompt with the history and alone (default: the persona the
            history tells, for the persona-only row)
        max_examples: explain only the first N questions of --questions
        top: heaviest history items listed per row (default: 5)
        out: write every explanation as JSON here (default: print them as text)
        decoding: label tasks' decoding (default: the checkpoint's)
    """
    from pplug.core.checkpoints import CheckpointError, resolve
    from pplug.core.tasks import get_task
    from pplug.decode.explain import check_explainable, format_explanation
    from pplug.decode.explain import explain as explain_rows
    from pplug.lamp.data import LaMPDataError, parse_questions, read_json
    from pplug.modeling.model import PPlugModel

    if input is not None and not history:
        raise CLIError("--input needs --history FILE.json (use [] in the file for a user without history)")
    if history and questions:
        raise CLIError("--history goes with --input; a questions file carries each user's profile")
    if top < 0 or (max_examples is not None and max_examples < 1):
        raise CLIError("--top must be >= 0 and --max-examples >= 1")
    try:
        resolved = resolve(checkpoint)
        config = PPlugModel.load_checkpoint_config(resolved)[0]
        check_explainable(config.method)
        task = get_task(config.task)
        if questions:
            path = Path(questions)
            examples = parse_questions(read_json(path), path, task)[:max_examples]
        else:
            path = Path(history)
            document = read_json(path)
            items = document.get("profile") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise CLIError(f"{path}: expected a list of profile items (or an object with 'profile')")
            examples = parse_questions([{"id": "input", "input": input, "profile": items}], path, task)
        model = PPlugModel.from_pretrained(resolved, device=placement.device,
                                           **({"torch_dtype": placement.dtype} if placement.dtype else {}))
    except (LaMPDataError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    model.eval()
    rows = explain_rows(model, examples, personas=[persona] * len(examples) if persona else None,
                        decoding=decoding, top=top)
    if out:
        from pplug.core.io import atomic_write_json

        atomic_write_json(Path(out), {"checkpoint": str(resolved), "task": task.name, "explanations": rows})
        print(f"wrote {len(rows)} explanations ({task.name}) to {out}")
    else:
        print("\n\n".join(format_explanation(r) for r in rows))


def evaluate(*, checkpoint: Annotated[Sequence[str], Flag(nargs="*", metavar="[METHOD=]DIR")] = (), data: str,
             split: str = "dev", out: str | None = None, method: Sequence[Method] | None = None,
             max_examples: int | None = None, decoding: Sequence[Decoding] | None = None,
             batch_size: int | None = None, seed: int = 0, base_model: str | None = None,
             embedding_cache: str | None = None, floors: bool = False, num_beams: int = 1,
             max_new_tokens: int | None = None, persona: bool = False, hub: str | None = None,
             candidates: CandidateDecoding = CandidateDecoding(),
             placement: ModelPlacement = ModelPlacement()) -> None:
    """evaluate methods side by side on a LaMP split (same examples, same LLM)

    Args:
        checkpoint: final/ or run folder(s), a folder of runs (one final/ per method), or method=DIR pairs
        data: folder with {split}_questions.json / {split}_outputs.json
        split: the split to evaluate (default: dev)
        out: predictions file; several methods -> <stem>.<method>.json; metrics -> <stem>.metrics.json
            (default: <run>/eval/<split>_preds.json)
        method: methods to run (default: none + every method with weights + pplug+retrieval; with --hub also
            lora-hub and pplug+lora-hub)
        max_examples: seeded random subset of the split
        decoding: label tasks: most likely label (argmax); ratings also expected value (best for RMSE) or
            median (best for MAE) over 1..5; generation tasks: argmax (= greedy, beams with --num-beams),
            greedy, beam, mbr (minimum Bayes risk over sampled candidates), preference (weighted toward the
            user's past outputs) or reward-mbr (weighted by the user's facet preference models); every row
            names its decoding ('pplug [median]', 'none [argmax]'); the cost per row of generation decodings goes
            into the metrics JSON (default: each checkpoint's saved decoding, what it serves)
        batch_size: rows per forward pass (default: 16 CPU, 64 GPU)
        seed: subsampling seed
        base_model: frozen LLM for `none` when no checkpoint is given
        embedding_cache: history-embedding cache file (default: shared cache)
        floors: also score no-model floors (always-5, first words, ...)
        num_beams: beams of generation tasks' argmax and beam decodings (default: 1)
        max_new_tokens: generation budget for generation tasks (default: the task's, e.g. 24 for subjects)
        persona: write the persona derived from each user's history into the prompts (ablation)
        hub: a LoRA hub of the same base LLM, for lora-hub and pplug+lora-hub
    """
    from pplug.decode.evaluate import evaluate as evaluate_methods

    report = evaluate_methods(list(checkpoint), data, split=split, methods=method, max_examples=max_examples,
                              decodings=decoding, out=out, batch_size=batch_size, seed=seed, base_model=base_model,
                              embedding_cache=embedding_cache, floors=floors, num_beams=num_beams,
                              persona=persona, max_new_tokens=max_new_tokens, device=placement.device,
                              dtype=placement.dtype, decoding_options=candidates.spec(num_beams),
                              plugins=hub_plugins(hub))
    if "table" in report:
        print(report["table"])
    for row, path in report["files"].items():
        print(f"predictions ({row}): {path}")
    print(f"metrics: {report['metrics_file']}")


def prefs_train(*, data: str, out: str, split: str = "train", task: str | None = None,
                facets: Sequence[Facet] = ("length", "formality", "topic"), max_users: int = 150,
                items_per_user: int = 6, hidden: int = 16, epochs: int = 30, seed: int = 0,
                encoder: str = "default", embedding_cache: str | None = None) -> None:
    """train one reward model per facet from a LaMP split's users' past outputs

    Args:
        data: folder with {split}_questions.json / {split}_outputs.json
        out: folder to write, one <facet>/ (config.json + model.safetensors) each
        split: the split whose users' past outputs train (default: train)
        task: task (default: the data's)
        facets: facets to train (default: all three)
        max_users: seeded random subset of users (default: 150)
        items_per_user: past outputs per user paired (default: 6)
        hidden: hidden units per head, 0 for linear (default: 16)
        epochs: passes over the pairs (default: 30)
        seed: seed of the users' subset, the pairs and training (default: 0)
        encoder: sentence encoder (use the checkpoint's; default: default)
        embedding_cache: embedding cache file (default: the shared pplug cache)
    """
    from pplug.decode.choose import user_outputs
    from pplug.encode.history import HistoryEncoder
    from pplug.lamp.data import load_split, subsample
    from pplug.train.preference import PrefsTrainConfig, train_preference_models

    config = PrefsTrainConfig(facets=tuple(facets), max_users=max_users, items_per_user=items_per_user,
                              hidden=hidden, epochs=epochs, seed=seed)
    lamp_split = load_split(data, split, task)
    examples = subsample(lamp_split.examples, config.max_users, config.seed)
    users = [user_outputs(lamp_split.task, example.profile, config.max_history) for example in examples]
    history_encoder = HistoryEncoder(encoder, cache_path=embedding_cache, device="cpu")
    models = train_preference_models(history_encoder, users, config, lamp_split.task.name, out)
    for facet, model in models.items():
        record = model.training_record
        print(f"wrote {Path(out) / facet}: {record['pairs']} pairs of {record['users']} users, pair accuracy "
              f"train {record['train_pair_accuracy']} / held-out {record['val_pair_accuracy']}")


__all__ = ["DECODINGS", "Decoding", "Facet", "Method", "evaluate", "explain", "generate", "prefs_train"]
