"""pplug: life-long personalization of a frozen LLM with a PPlug user embedder.

A trainable user embedder reads all of a user's history (each item embedded once by a frozen
sentence encoder), weighs it against the current input, and projects it into soft-prompt vectors
prepended, with a trainable instruction vector, to the input embeddings of a frozen LLM.
"""

__version__ = "0.1.0"


def personalize(model, examples, method: str = "pplug", decoding="argmax", batch_size: int = 16,
                personas=None, progress: bool = False, max_new_tokens: int | None = None,
                **decoding_options) -> list[str]:
    """Personalized outputs for LaMP-style examples, one per example, in order; rows may be different users.

    Args:
        model: a `pplug.model.PPlugModel` (e.g. `PPlugModel.from_pretrained("checkpoints/<run>/final")`).
        examples: `pplug.data.Example` records (input + that user's profile, i.e. history items).
        method: how prompts are built ("pplug", "pplug+retrieval", "prompt-tuned", "retrieval"); use the
            method the checkpoint was trained with.
        decoding: "argmax" (labels / ratings / greedy text); for ratings also "expected" (expected value over
            1..5, best for RMSE) or "median" (median over 1..5, best for MAE); for generation tasks also
            "greedy", "beam", "mbr", "preference", a `pplug.decoding.DecodingSpec`, or a list with one
            DecodingSpec per example (rows of one batch may decode differently).
        personas: optional persona text per example, written into the prompt after the soft prompt.
        max_new_tokens: generation budget of generation tasks (None: the task's).
        **decoding_options: DecodingSpec fields for a named decoding (num_samples, temperature, top_p,
            preference_weight, utility, num_beams, seed).
    """
    from .decoding import DecodingSpec
    from .evaluate import predict
    from .tasks import get_task

    examples = list(examples)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("personalize: example ids must be unique")
    specs = options = None
    if isinstance(decoding, DecodingSpec):
        specs = [decoding] * len(examples)
    elif not isinstance(decoding, str):
        specs = list(decoding)
    else:
        options = DecodingSpec(**decoding_options)
    preds = predict(model, get_task(model.config.task), examples, method, causal=not model.llm.is_seq2seq,
                    decodings=[decoding] if specs is None else [], batch_size=batch_size,
                    max_history=model.config.max_history, encoder=model.history_encoder, personas=personas,
                    progress=progress, options=options, specs=specs, max_new_tokens=max_new_tokens)
    preds = next(iter(preds.values()))
    return [preds[i] for i in ids]
