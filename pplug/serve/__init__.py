"""`pplug serve`: the OpenAI-compatible app (`app`) and its routes by group (`routes_info`, `routes_generate`,
`routes_users`, `routes_explain`: a user's history and why they get their output; `page`: the page for the person
behind a user id) over the shared state and the caller's key (`access`), what goes over the wire (`schema`),
users' contexts and requests' rows (`contexts`), the batching engine (`batching`), the vLLM engine (`vllm`)
and privacy mode (`privacy`).

May import: core, lamp, encode, persona, methods, modeling, decode, store, adapt.
"""
