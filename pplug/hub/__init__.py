"""The LoRA hub, a plug-in method: adapters retrieved per user by persona (`model`), its config and files,
training (`train`), slow adaptation (`adapt`) and the `lora-hub` / `pplug+lora-hub` methods it registers
(`methods`).

May import: core, lamp, encode, persona, methods, modeling, decode, train, adapt.
"""
