"""The one error type of SIP Auto Peer discovery, token and fetch (RFC 10006 §4).

Whatever goes wrong between the controller and a provider's capability
server (no route, a certificate that does not verify, a refused token, a
malformed answer) reaches the operator as an :class:`AutopeerError` whose
message is a sentence to read, so callers need one ``except`` and can keep
the last valid trunk configuration in force (RFC 10006 §8).
"""

from __future__ import annotations


class AutopeerError(Exception):
    """A failed exchange with a provider; ``url`` and ``status`` when known.

    Messages never contain a client secret or an access token.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
