"""The project's user-facing errors.

A ``GreenflowError`` is a mistake the user can fix — a bad option or configuration value,
an input file that cannot be used, a pipeline step not run yet — and its message says
which. The ``greenflow`` command prints it as one line, ``greenflow: error: …``, and
exits 2. Any other exception is a bug and keeps its traceback.

The subclasses are also ``ValueError`` (``KeyError`` for ``UnknownModelError``), the
types these errors were before, so callers that catch those keep working.
"""

from __future__ import annotations


class GreenflowError(Exception):
    """An error in what the user gave or did, not in the code."""


class ConfigError(GreenflowError, ValueError):
    """A bad setting: a command-line option, a ``--config`` YAML entry, or a
    configuration value that does not fit the run (its data, its cluster)."""


class InputError(GreenflowError, ValueError):
    """An input that cannot be used: a data file, or an earlier step's output in the run
    directory that is corrupt, tampered with, or from another configuration."""


class UnknownModelError(ConfigError, KeyError):
    """A model name nothing answers to: not a registered model kind (``MODEL_KINDS``), or
    one the configured chains use and the trained pool lacks."""

    __str__ = Exception.__str__  # the message, not KeyError's quoted repr of it


__all__ = ["ConfigError", "GreenflowError", "InputError", "UnknownModelError"]
