"""Encode, cached: history items -> frozen sentence embeddings, each text embedded once (`history`, over the
persistent `cache`), and retrieval over them.

May import: core.
"""
