"""pplug: life-long personalization of a frozen LLM with a PPlug user embedder.

A trainable user embedder reads all of a user's history (each item embedded once by a frozen
sentence encoder), weighs it against the current input, and projects it into soft-prompt vectors
prepended, with a trainable instruction vector, to the input embeddings of a frozen LLM.
"""

__version__ = "0.1.0"


def personalize(model, examples, method: str = "pplug", decoding: str = "argmax", batch_size: int = 16,
                personas=None, progress: bool = False) -> list[str]:
    """Personalized outputs for LaMP-style examples, one per example, in order; rows may be different users.

    Args:
        model: a `pplug.model.PPlugModel` (e.g. `PPlugModel.from_pretrained("checkpoints/<run>/final")`).
        examples: `pplug.data.Example` records (input + that user's profile, i.e. history items).
        method: how prompts are built ("pplug", "pplug+retrieval", "prompt-tuned", "retrieval"); use the
            method the checkpoint was trained with.
        decoding: "argmax" (labels / ratings / greedy text); for ratings also "expected" (expected value over
            1..5, best for RMSE) or "median" (median over 1..5, best for MAE).
        personas: optional persona text per example, written into the prompt after the soft prompt.
    """
    from .evaluate import predict
    from .tasks import get_task

    examples = list(examples)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("personalize: example ids must be unique")
    preds = predict(model, get_task(model.config.task), examples, method, causal=not model.llm.is_seq2seq,
                    decodings=[decoding], batch_size=batch_size, max_history=model.config.max_history,
                    encoder=model.history_encoder, personas=personas, progress=progress)[decoding]
    return [preds[i] for i in ids]
