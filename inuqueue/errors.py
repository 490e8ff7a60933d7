"""The exception hierarchy: every error inuqueue raises derives from InuqueueError."""

from __future__ import annotations

from pathlib import Path


class InuqueueError(Exception):
    """Root of every exception raised by inuqueue itself."""


class ConfigError(InuqueueError, ValueError):
    """A setting, flag or environment variable has a value that cannot be used."""


class JournalError(InuqueueError, OSError):
    """The journal could not be read or written."""


class JournalCorrupt(InuqueueError, ValueError):
    """A journal record other than the last one is damaged."""

    def __init__(self, path: Path, lineno: int, reason: str) -> None:
        super().__init__(
            f"{path}:{lineno}: {reason}; the journal is damaged there. Run "
            f"'inuqueue journal check --data {path.parent}' to see what it holds, "
            f"then 'inuqueue journal repair --data {path.parent}' to cut it back "
            "to the last good record (a copy of what is cut is kept)."
        )
        self.path = path
        self.lineno = lineno
        self.reason = reason


class StoreError(InuqueueError):
    """The image store could not write or read an image, or found one damaged."""


class ImageDecodeError(InuqueueError, ValueError):
    """Bytes sent as an image are not valid base64 or not an image."""


class UpstreamError(InuqueueError):
    """The webui could not be reached or broke off its answer."""
