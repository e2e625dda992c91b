"""The one error type of the SIP message layer, carrying what a server needs to answer."""

from __future__ import annotations


class SIPParseError(ValueError):
    """A malformed SIP message or element.

    ``status`` is the response a server answers a malformed request with
    (RFC 3261 §8.2, §21.4): 400 by default; 416 unsupported URI scheme;
    420 unknown Require; 483 Max-Forwards 0; 505 other SIP version; 513
    message too large. ``offset`` is the byte or character offset in the
    parsed text when known; ``header`` names the header at fault.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        offset: int | None = None,
        header: str | None = None,
    ) -> None:
        where = []
        if header:
            where.append(f"in {header}")
        if offset is not None:
            where.append(f"at offset {offset}")
        super().__init__(reason + (f" ({', '.join(where)})" if where else ""))
        self.reason = reason
        self.status = status
        self.offset = offset
        self.header = header
        # The message as far as it could be parsed (start line and header rows),
        # set by the parser so that a server can still answer (RFC 3261 §8.2).
        self.message: object | None = None
