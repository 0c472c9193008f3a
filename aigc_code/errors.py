"""Errors a user can act on. The CLI prints their message (one line) and exits non-zero."""


class AigcCodeError(Exception):
    """Base class: the message says what went wrong and what to do."""


class ModelLoadError(AigcCodeError):
    """A model or adapter directory is missing, incomplete, corrupt or mismatched."""


class CheckpointError(AigcCodeError):
    """A training checkpoint cannot be resumed from."""


class BackendError(AigcCodeError):
    """A remote completion backend is unreachable or answered badly."""
