"""What a server answers to a request it cannot accept (RFC 3261 §8.2, §16.3, §18.3).

``check_request`` runs the UAS/proxy checks in the order of §8.2 on a
request that parsed, and returns the error to answer (or None);
``error_response`` builds that answer (§8.2.6) when the request carries
what a response needs: the Via rows to route it back, From, To, Call-ID
and CSeq. Without them the request is dropped and counted: there is no
one to answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Request, Response

URI_SCHEMES = ("sip", "sips", "tel")


def check_request(
    req: Request, supported: Collection[str] = (), *, proxy: bool = False
) -> SIPParseError | None:
    """The first reason to reject req, with its status code, or None.

    Order: version (505), Request-URI scheme (416), malformed or missing
    mandatory headers and CSeq method (400), Max-Forwards 0 on a request
    this element would forward (483, §16.3 step 3; a UAS answers OPTIONS
    itself, §11), Require options not in ``supported`` (420 with an
    Unsupported header, §8.2.2.3; ignored for ACK and CANCEL, §8.2.2.3).
    """
    if req.version.upper() != "SIP/2.0":
        return SIPParseError(f"SIP version {req.version} is not supported", status=505)
    try:
        req.uri  # noqa: B018 - parse for its errors
    except SIPParseError as e:
        return SIPParseError("Request-URI: " + e.reason, status=e.status)
    problems = req.validate()
    if problems:
        return problems[0]
    if proxy and req.max_forwards == 0:
        return SIPParseError("Max-Forwards is 0", status=483)
    if req.method not in ("ACK", "CANCEL"):
        wanted = set(req.require)
        if proxy:
            wanted |= set(req.proxy_require)
        unknown = sorted(o for o in wanted if o.lower() not in {s.lower() for s in supported})
        if unknown:
            err = SIPParseError("unsupported extension " + ", ".join(unknown), status=420)
            err.message = unknown
            return err
    return None


def can_answer(req: Request) -> bool:
    """True if req has what any response needs (§8.2.6.2): a usable top Via and the rest."""
    for key in ("via", "from", "to", "call-id", "cseq"):
        if req.get(key) is None:
            return False
    try:
        return (req.top_via is not None and req.cseq is not None and req.from_ is not None
                and req.to is not None and req.call_id is not None)
    except SIPParseError:
        return False


def make_response(
    req: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response to req with Via, From, To, Call-ID and CSeq copied (§8.2.6.2).

    A To tag is added to any response above 100 when the request had none.
    """
    rows: list[tuple[str, str]] = []
    for name, key, value in req.headers:
        if key in ("via", "from", "call-id", "cseq"):
            rows.append((name, value))
        elif key == "to":
            if status > 100 and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag or secrets.token_hex(6)}"
            rows.append((name, value))
    rows.append(("Content-Length", "0"))
    return Response(status, reason, rows)


def error_response(req: Request, err: SIPParseError) -> Response | None:
    """The answer to a rejected request, or None when it must be dropped.

    The reason phrase names the problem for 400s so the sender's log says
    what was wrong, as RFC 3261 §21.4.1 suggests.
    """
    if req.method == "ACK" or not can_answer(req):
        return None
    if err.status == 400:
        where = f"{err.header}: " if err.header and not err.reason.startswith(err.header) else ""
        reason = f"Bad Request ({where}{err.reason})"
        reason = reason.replace("\r", " ").replace("\n", " ")[:200]
    else:
        reason = None
    resp = make_response(req, err.status, reason)
    if err.status == 420 and isinstance(err.message, list):
        resp.headers.insert(-1, ("Unsupported", "unsupported", ", ".join(err.message)))
    return resp
