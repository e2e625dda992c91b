"""SIP dialogs (RFC 3261 §12): identity, route set, remote target and CSeq rules.

A dialog is created by a 2xx to an INVITE, on the UAC side from the
response (§12.1.2) and on the UAS side from the request (§12.1.1). Requests
inside it are built from its state (§12.2.1.1) and requests received in it
are checked against its remote sequence number (§12.2.2).
"""

from __future__ import annotations

import secrets

from sipmesh.sip.address import Address
from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.uri import URI, parse_uri


def new_tag() -> str:
    """A From/To tag with at least 32 random bits (§19.3)."""
    return secrets.token_hex(6)


class Dialog:
    """The state §12 keeps for one dialog."""

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: URI,
        route_set: list[str],
        local_seq: int | None,
        remote_seq: int | None,
        secure: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.confirmed = False

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): the dialog ID of §12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: from the INVITE we sent and the 2xx (or 1xx with tag) we got."""
        contact = _contact_uri(response)
        assert response.to is not None and request.from_ is not None
        return cls(
            call_id=request.call_id or "",
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=contact,
            route_set=[str(a) for a in reversed(response.record_route)],
            local_seq=request.cseq.seq if request.cseq else 0,
            remote_seq=None,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def as_uas(cls, request: Request, local_tag: str) -> Dialog:
        """§12.1.1: from the INVITE we received and the To tag we answer with."""
        assert request.from_ is not None and request.to is not None
        return cls(
            call_id=request.call_id or "",
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=_contact_uri(request),
            route_set=[str(a) for a in request.record_route],
            local_seq=None,
            remote_seq=request.cseq.seq if request.cseq else None,
            secure=request.uri.scheme == "sips",
        )

    def create_request(self, method: str, contact: str | None = None,
                       cseq: int | None = None) -> Request:
        """A request within the dialog (§12.2.1.1), without Via (the UA adds it).

        ``cseq`` is given for ACK and CANCEL, which reuse the INVITE's number;
        any other method takes the next local sequence number.
        """
        if cseq is None:
            self.local_seq = (self.local_seq or 0) + 1
            cseq = self.local_seq
        routes = list(self.route_set)
        uri: URI = self.remote_target
        if routes and not _is_loose(routes[0]):
            # §12.2.1.1 strict routing: first route becomes the Request-URI.
            first = Address.parse(routes.pop(0), "Route")
            assert isinstance(first.uri, URI)
            uri = first.uri.without_param("lr") if first.uri.lr else first.uri
            routes.append(f"<{self.remote_target}>")
        rows = [
            ("Max-Forwards", "70"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        rows += [("Route", r) for r in routes]
        if contact and method not in ("ACK", "BYE", "CANCEL"):
            rows.append(("Contact", contact))
        rows.append(("Content-Length", "0"))
        return Request(method, uri, rows)

    def accept_request(self, request: Request) -> bool:
        """§12.2.2: False for a request older than the last one (answer 500)."""
        cseq = request.cseq
        if cseq is None:
            return False
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and cseq.seq <= self.remote_seq:
            return False
        self.remote_seq = cseq.seq
        if request.method == "INVITE":
            try:
                self.remote_target = _contact_uri(request)
            except SIPParseError:
                pass
        return True


def _without_tag(address: Address) -> str:
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in address.params
                     if k.lower() != "tag")
    text = f"<{address.uri}>" + params
    if address.display is not None:
        text = str(Address(address.uri, address.display)).split(" <")[0] + " " + text
    return text


def _contact_uri(message: Request | Response) -> URI:
    contacts = message.contact
    if not contacts or not isinstance(contacts[0].uri, URI):
        raise SIPParseError("a dialog needs a SIP Contact", header="Contact")
    return contacts[0].uri


def _is_loose(route: str) -> bool:
    try:
        addr = Address.parse(route, "Route")
    except SIPParseError:
        return True
    return isinstance(addr.uri, URI) and addr.uri.lr


__all__ = ["Dialog", "new_tag", "parse_uri"]
