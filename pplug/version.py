"""The package version, in a module of its own so that `pplug.modeling.model` can record it without importing `pplug`."""

__version__ = "0.1.0"
