"""The one error type the wire layer raises on bad input."""

from __future__ import annotations


class WireError(ValueError):
    """Raised for any malformed, truncated, or semantically invalid message.

    Decoders never raise anything else on bad bytes: callers can count a
    drop by catching exactly this type.  ``reason`` is a short stable token
    suitable as a counter key (``"truncated"``, ``"bad-version"``, ...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
