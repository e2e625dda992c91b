"""The UA core (RFC 3261 §8, §12, §13, §15): requests out and in, dialogs, on asyncio.

This is the adapter between the sans-I/O transactions and the world: it
feeds them messages from the transport and the loop's clock, carries out
their actions, keeps one timer for all of them, and offers an asyncio API:

- ``await ua.request(req, dest)`` sends a request in a client transaction
  and returns its final response (408 when Timer B/F fires, 503 on a
  transport error, §8.1.3.1);
- ``ua.on(method, handler)`` answers incoming requests by method; OPTIONS is
  answered by default with Allow, Accept and Supported (§11.2), unknown
  methods with 405 and Allow (§8.2.1);
- ``await ua.invite(...)`` and ``await ua.bye(dialog)`` set up and end calls:
  the ACK for a 2xx is sent by the UA core (§13.2.2.4) and a UAS 2xx is
  retransmitted until its ACK arrives (§13.3.1.4).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmesh.sip.dialog import Dialog, new_tag
from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.reject import check_request, error_response, make_response
from sipmesh.sip.timers import TimerConfig
from sipmesh.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    Terminated,
    Timeout,
    TransactionTable,
    TransportError,
    new_branch,
)
from sipmesh.sip.transport import STREAM_TRANSPORTS, Peer, SIPTransport
from sipmesh.sip.uri import URI, parse_uri

log = logging.getLogger("sipmesh.sip.ua")

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE")


@dataclass
class Incoming:
    """A request given to a handler, with the means to answer it."""

    request: Request
    peer: Peer
    ua: UserAgent
    transaction: ServerTransaction | None
    dialog: Dialog | None = None
    to_tag: str = field(default_factory=new_tag)
    answered: bool = False

    def response(self, status: int, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                 content_type: str | None = None) -> Response:
        """A response to this request with our To tag (§8.2.6.2)."""
        resp = make_response(self.request, status, reason, to_tag=self.to_tag)
        resp.add("Server", self.ua.user_agent)  # §20.35
        for name, value in headers or []:
            resp.add(name, value)
        if body:
            resp.set_body(body, content_type)
        return resp

    def respond(self, status: int, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                content_type: str | None = None) -> Response:
        """Send a response; a 2xx to INVITE creates the dialog and is retransmitted."""
        resp = self.response(status, reason, headers, body, content_type)
        self.ua._respond(self, resp)
        return resp


Handler = Callable[[Incoming], Awaitable[None] | None]


class UserAgent:
    """A SIP user agent: transport, transactions, dialogs and handlers."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        user: str = "sipmesh",
        timers: TimerConfig | None = None,
        supported: tuple[str, ...] = (),
        user_agent: str = "sipmesh",
        transport: SIPTransport | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.user = user
        self.timers = timers or TimerConfig()
        self.supported = supported
        self.user_agent = user_agent
        self.transport = transport or SIPTransport(
            host, self._on_request, self._on_response, client_ssl=client_ssl)
        self.table = TransactionTable()
        self.dialogs: dict[tuple[str, str, str], Dialog] = {}
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        self._waiters: dict[int, asyncio.Future[Response]] = {}
        self._provisional: dict[int, Callable[[Response], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pending_2xx: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.calls_answered = 0

    # --- lifecycle -----------------------------------------------------------

    async def listen(self, udp: int | None = 0, tcp: int | None = None,
                     tls: int | None = None, tls_context: ssl.SSLContext | None = None) -> None:
        """Listen on UDP and, if given, TCP (the same port number when tcp == 0) and TLS.

        With udp == tcp == 0 the kernel picks the UDP port, and that number
        may already be some TCP connection's local port: then another pair
        is tried (a few times) rather than failing.
        """
        if udp is not None:
            same = udp == 0 and tcp == 0
            for attempt in range(8 if same else 1):
                port = await self.transport.listen_udp(self.host, udp)
                if not same:
                    break
                try:
                    await self.transport.listen_tcp(self.host, port)
                    tcp = None
                    break
                except OSError as e:
                    if e.errno != errno.EADDRINUSE or attempt == 7:
                        raise
                    self.transport.close_udp()
        if tcp is not None:
            await self.transport.listen_tcp(self.host, tcp)
        if tls is not None:
            if tls_context is None:
                raise ValueError("TLS needs a server certificate (tls_context)")
            await self.transport.listen_tls(self.host, tls, tls_context)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._pending_2xx.values():
            task.cancel()
        await self.transport.close()

    def on(self, method: str, handler: Handler) -> None:
        """Answer requests of this method with handler."""
        self.handlers[method.upper()] = handler

    def contact(self, transport: str = "udp") -> str:
        port = self.transport.ports.get(transport) or self.transport.ports.get("udp")
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{self.user}@{self.host}:{port}{suffix}>"

    # --- timers ----------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _reschedule(self) -> None:
        when = self.table.next_timer()
        if self._timer is not None:
            if when is not None and abs(self._timer.when() - when) < 1e-6:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        for txn, action in self.table.handle_timers(self._now()):
            self._apply(txn, [action])
        self._reschedule()

    # --- actions -------------------------------------------------------------

    def _apply(self, txn: ClientTransaction | ServerTransaction, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(txn, action)
            elif isinstance(action, Deliver):
                if isinstance(txn, ClientTransaction):
                    self._client_response(txn, action.message)
            elif isinstance(action, Timeout):
                if isinstance(txn, ClientTransaction):
                    self._finish(txn, make_response(txn.request, 408, "Request Timeout"))
            elif isinstance(action, TransportError):
                if isinstance(txn, ClientTransaction):
                    self._finish(txn, make_response(txn.request, 503, "Transport Error"))
            elif isinstance(action, Terminated):
                self.table.remove(txn)
        self._reschedule()

    def _send(self, txn: ClientTransaction | ServerTransaction, action: Send) -> None:
        msg = action.message
        dest = action.dest
        try:
            if self.transport.send_nowait(msg, dest):
                return
        except (OSError, ValueError) as e:
            log.info("send failed: %s", e)
            self._apply(txn, txn.transport_error(self._now()))
            return

        async def go() -> None:
            try:
                if isinstance(msg, Request):
                    await self.transport.send_request(msg, dest)
                else:
                    await self.transport.send_response(msg, dest)
            except (OSError, ValueError) as e:
                log.info("send failed: %s", e)
                self._apply(txn, txn.transport_error(self._now()))

        self.transport._run(go())

    def _client_response(self, txn: ClientTransaction, resp: Response) -> None:
        if resp.status < 200:
            callback = self._provisional.get(id(txn))
            if callback is not None:
                callback(resp)
            return
        self._finish(txn, resp)

    def _finish(self, txn: ClientTransaction, resp: Response) -> None:
        fut = self._waiters.pop(id(txn), None)
        self._provisional.pop(id(txn), None)
        if fut is not None and not fut.done():
            fut.set_result(resp)

    # --- client side -----------------------------------------------------------

    def new_request(self, method: str, uri: URI | str, *, to: str | None = None,
                    from_user: str | None = None, call_id: str | None = None,
                    cseq: int = 1) -> Request:
        """An out-of-dialog request (§8.1.1) without Via (request() adds it)."""
        target = uri if isinstance(uri, URI) else parse_uri(uri)
        to = to or f"<{target}>"
        user = from_user or self.user
        rows = [
            ("Max-Forwards", "70"),
            ("To", to),
            ("From", f"<sip:{user}@{self.host}>;tag={new_tag()}"),
            ("Call-ID", call_id or f"{new_tag()}{new_tag()}@{self.host}"),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", self.user_agent),
            ("Content-Length", "0"),
        ]
        return Request(method, target, rows)

    async def request(self, req: Request, dest: Peer,
                      on_provisional: Callable[[Response], None] | None = None) -> Response:
        """Send req in a new client transaction; return the final response."""
        req.add("Via", str(self.transport.via_for(dest.transport, new_branch())), top=True)
        if dest.transport in STREAM_TRANSPORTS or req.method == "INVITE":
            if "contact" not in req and req.method in ("INVITE", "REGISTER", "SUBSCRIBE"):
                req.add("Contact", self.contact(dest.transport))
        txn = ClientTransaction(req, dest, self._now(), dest.transport in STREAM_TRANSPORTS,
                                self.timers)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[id(txn)] = fut
        if on_provisional is not None:
            self._provisional[id(txn)] = on_provisional
        self.table.add_client(txn)
        self._apply(txn, txn.start(self._now()))
        return await fut

    async def invite(self, uri: str, dest: Peer, *, sdp: bytes = b"",
                     on_provisional: Callable[[Response], None] | None = None
                     ) -> tuple[Response, Dialog | None]:
        """Place a call: INVITE, then ACK a 2xx (§13.2.2.4); return the answer and dialog."""
        req = self.new_request("INVITE", uri)
        req.add("Contact", self.contact(dest.transport))
        req.add("Allow", ", ".join(ALLOW))
        if sdp:
            req.set_body(sdp, "application/sdp")
        resp = await self.request(req, dest, on_provisional)
        if not 200 <= resp.status < 300:
            return resp, None
        dialog = Dialog.as_uac(req, resp)
        dialog.confirmed = True
        self.dialogs[dialog.id] = dialog
        assert req.cseq is not None
        ack = dialog.create_request("ACK", cseq=req.cseq.seq)
        ack.add("Via", str(self.transport.via_for(dest.transport, new_branch())), top=True)
        await self.transport.send_request(ack, dest)
        return resp, dialog

    async def cancel(self, invite: Request, dest: Peer) -> Response:
        """CANCEL a pending INVITE we sent (§9.1); returns the answer to the CANCEL.

        Same Request-URI, Call-ID, From, To, CSeq number and top Via (so the
        same branch) as the INVITE, and its Route headers.
        """
        rows = [("Via", str(invite.top_via))]
        for name, key, value in invite.headers:
            if key in ("route", "max-forwards", "from", "to", "call-id"):
                rows.append((name, value))
        assert invite.cseq is not None
        rows += [("CSeq", f"{invite.cseq.seq} CANCEL"), ("Content-Length", "0")]
        req = Request("CANCEL", invite.uri, rows)
        txn = ClientTransaction(req, dest, self._now(), dest.transport in STREAM_TRANSPORTS,
                                self.timers)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[id(txn)] = fut
        self.table.add_client(txn)
        self._apply(txn, txn.start(self._now()))
        return await fut

    async def bye(self, dialog: Dialog, dest: Peer) -> Response:
        """End a call (§15.1.1)."""
        req = dialog.create_request("BYE")
        resp = await self.request(req, dest)
        self.dialogs.pop(dialog.id, None)
        return resp

    # --- server side -----------------------------------------------------------

    def _on_response(self, resp: Response, peer: Peer) -> None:
        txn = self.table.match_response(resp)
        if txn is None:
            # A 2xx retransmission after the INVITE transaction ended: ACK again.
            self._ack_stray_2xx(resp, peer)
            return
        self._apply(txn, txn.receive_response(resp, self._now()))

    def _ack_stray_2xx(self, resp: Response, peer: Peer) -> None:
        try:
            cseq = resp.cseq
            to, from_ = resp.to, resp.from_
        except SIPParseError:
            return
        if cseq is None or cseq.method != "INVITE" or not 200 <= resp.status < 300:
            return
        if to is None or from_ is None:
            return
        dialog = self.dialogs.get((resp.call_id or "", from_.tag or "", to.tag or ""))
        if dialog is None:
            return
        ack = dialog.create_request("ACK", cseq=cseq.seq)
        ack.add("Via", str(self.transport.via_for(peer.transport, new_branch())), top=True)
        self.transport._run(self.transport.send_request(ack, peer))

    def _on_request(self, req: Request, peer: Peer) -> None:
        now = self._now()
        txn = self.table.match_request(req)
        if txn is not None:
            self._apply(txn, txn.receive_request(req, now))
            return
        if req.method == "ACK":
            self._on_ack(req, peer)
            return
        err = check_request(req, self.supported)
        refusal = error_response(req, err) if err is not None else None
        if err is not None and refusal is None:
            self.transport.stats.drop("bad request, nothing to answer")
            return
        reliable = peer.transport in STREAM_TRANSPORTS
        txn = ServerTransaction(req, peer, now, reliable, self.timers)
        self.table.add_server(txn)
        self._apply(txn, txn.start(now))
        incoming = Incoming(req, peer, self, txn)
        if refusal is not None:
            self._respond(incoming, refusal)
            return
        if req.method == "CANCEL":
            self._on_cancel(incoming)
            return
        to = req.to
        if to is not None and to.tag:
            dialog = self.dialogs.get((req.call_id or "", to.tag, req.from_.tag or ""))
            if dialog is None:
                incoming.respond(481)
                return
            if not dialog.accept_request(req):
                incoming.respond(500, "Out of Order CSeq")
                return
            incoming.dialog = dialog
            incoming.to_tag = dialog.local_tag
            if req.method == "BYE":
                # §15.1.2: the BYE ends the dialog (its 200 needs no dialog state).
                self.dialogs.pop(dialog.id, None)
                pending = self._pending_2xx.pop(dialog.id, None)
                if pending is not None:
                    pending.cancel()
        handler = self.handlers.get(req.method)
        if handler is None:
            incoming.respond(405, headers=[("Allow", ", ".join(self._allowed()))])
            return
        result = handler(incoming)
        if asyncio.iscoroutine(result):
            self.transport._run(result)

    def _on_cancel(self, incoming: Incoming) -> None:
        """§9.2: 200 to the CANCEL, 487 to the INVITE if it had no final answer yet."""
        invite = self.table.find_invite_for_cancel(incoming.request)
        if invite is None:
            incoming.respond(481)
            return
        incoming.respond(200)
        if invite.last_response is None or invite.last_response.status < 200:
            resp = make_response(invite.request, 487, to_tag=invite.to_tag or new_tag())
            self._apply(invite, invite.send_response(resp, self._now()))
            handler = self.handlers.get("CANCEL")
            if handler is not None:
                result = handler(incoming)
                if asyncio.iscoroutine(result):
                    self.transport._run(result)

    def _on_ack(self, req: Request, peer: Peer) -> None:
        to, from_ = req.to, req.from_
        if to is None or from_ is None:
            return
        key = (req.call_id or "", to.tag or "", from_.tag or "")
        task = self._pending_2xx.pop(key, None)
        if task is not None:
            task.cancel()
        dialog = self.dialogs.get(key)
        if dialog is not None:
            dialog.confirmed = True
        handler = self.handlers.get("ACK")
        if handler is not None:
            result = handler(Incoming(req, peer, self, None, dialog, to.tag or "", True))
            if asyncio.iscoroutine(result):
                self.transport._run(result)

    def _allowed(self) -> list[str]:
        return sorted(set(ALLOW) | set(self.handlers))

    def _options(self, incoming: Incoming) -> None:
        """§11.2: what this UA can do."""
        headers = [("Allow", ", ".join(self._allowed())), ("Accept", "application/sdp")]
        if self.supported:
            headers.append(("Supported", ", ".join(self.supported)))
        incoming.respond(200, headers=headers)

    def _respond(self, incoming: Incoming, resp: Response) -> None:
        incoming.answered = resp.status >= 200
        req = incoming.request
        if req.method == "INVITE" and 200 <= resp.status < 300:
            resp.add("Contact", self.contact(incoming.peer.transport))
            if incoming.dialog is None:
                dialog = Dialog.as_uas(req, incoming.to_tag)
                self.dialogs[dialog.id] = dialog
                incoming.dialog = dialog
            self.calls_answered += 1
            self._retransmit_2xx(incoming, resp)
        txn = incoming.transaction
        if txn is not None:
            self._apply(txn, txn.send_response(resp, self._now()))
        else:
            self.transport._run(self.transport.send_response(resp, incoming.peer))

    def _retransmit_2xx(self, incoming: Incoming, resp: Response) -> None:
        """§13.3.1.4: resend the 2xx at T1, 2*T1, ... capped at T2 until the ACK, for 64*T1."""
        if incoming.peer.transport in STREAM_TRANSPORTS:
            return
        assert incoming.dialog is not None
        key = incoming.dialog.id
        t1, t2 = self.timers.t1, self.timers.t2
        loop = asyncio.get_running_loop()
        state = {"interval": t1, "waited": 0.0}

        def fire() -> None:
            state["waited"] += state["interval"]
            try:
                self.transport.send_nowait(resp, incoming.peer) or self.transport._run(
                    self.transport.send_response(resp, incoming.peer))
            except (OSError, ValueError) as e:
                log.info("2xx retransmission failed: %s", e)
            state["interval"] = min(state["interval"] * 2, t2)
            if state["waited"] + state["interval"] > 64 * t1:
                self._pending_2xx.pop(key, None)
                log.info("no ACK for the 2xx of %s", key[0])
                return
            self._pending_2xx[key] = loop.call_later(state["interval"], fire)

        self._pending_2xx[key] = loop.call_later(t1, fire)
