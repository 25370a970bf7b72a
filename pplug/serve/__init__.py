"""`pplug serve`: the OpenAI-compatible app (`app`), what goes over the wire (`schema`), the batching engine
(`batching`), the vLLM engine (`vllm`) and privacy mode (`privacy`).

May import: core, lamp, encode, persona, methods, modeling, synth, decode, store, train, adapt, hub.
"""
