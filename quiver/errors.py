"""The one error tree of quiver.

Every error quiver raises on purpose is a ``QuiverError``. Each subclass also
inherits the builtin it resembles, so ``except ValueError`` keeps working for
callers that do not know quiver::

    QuiverError
    ├── DefinitionError (ValueError)          a definition is invalid where it is built
    │   └── UnknownTypeError                  a dtype name quiver does not know
    ├── ConfigError (ValueError)              quiver.yaml is wrong; names the key
    ├── RepoLoadError (ImportError)           a repository file failed to import
    ├── NotFoundError (KeyError)              a view, feature, service or version is unknown
    ├── InputError (ValueError)               bad user data: missing column, wrong type, bad timestamp
    ├── ConcurrentApplyError (RuntimeError)   someone applied in between; plan again
    ├── UnsupportedError (NotImplementedError) a backend lacks a capability
    └── BackendError (RuntimeError)
        ├── TransientError                    retrying may help (connection lost, lock busy)
        └── TerminalError                     retrying will not help

``TransientError``/``TerminalError`` tell the stream runner and the materializer
whether to retry. Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendError",
    "ConcurrentApplyError",
    "ConfigError",
    "DefinitionError",
    "InputError",
    "NotFoundError",
    "QuiverError",
    "RepoLoadError",
    "TerminalError",
    "TransientError",
    "UnknownTypeError",
    "UnsupportedError",
    "closest",
]


class QuiverError(Exception):
    """Base class of every error quiver raises on purpose."""

    def __str__(self) -> str:  # KeyError quotes its message; we never want that
        return str(self.args[0]) if self.args else self.__class__.__name__


class DefinitionError(QuiverError, ValueError):
    """A definition (entity, source, view, service) is invalid."""


class UnknownTypeError(DefinitionError):
    """A dtype name that quiver does not know."""


class ConfigError(QuiverError, ValueError):
    """``quiver.yaml`` is missing, malformed, or has a bad key."""


class RepoLoadError(QuiverError, ImportError):
    """A Python file of the feature repository failed to import."""


class NotFoundError(QuiverError, KeyError):
    """A view, feature, service, dataset or version does not exist."""


class InputError(QuiverError, ValueError):
    """Data handed to quiver is wrong: a missing column, a bad type or timestamp."""


class ConcurrentApplyError(QuiverError, RuntimeError):
    """The registry changed between plan and apply."""


class UnsupportedError(QuiverError, NotImplementedError):
    """The configured backend cannot do what was asked."""


class BackendError(QuiverError, RuntimeError):
    """A backend (database, broker, engine) failed."""


class TransientError(BackendError):
    """A failure that may pass: retry with backoff."""


class TerminalError(BackendError):
    """A failure that retrying will not fix."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix naming the closest candidates, or ''."""
    found = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not found:
        return ""
    return " Did you mean " + ", ".join(repr(f) for f in found) + "?"
