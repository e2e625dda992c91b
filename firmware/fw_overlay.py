"""The board as a RELOAD client of its controller's overlay peer (RFC 6940 §3.2).

The board opens a plain-TCP link to the controller's client listener and
speaks RELOAD with the framing of §6.6.2 (``sipmesh.proto.reload_client``
does the protocol; this module does the socket, the timers and the
retries). Each :func:`refresh` stores the board's signed device record
(``sipmesh.proto.device_record``) under its own user name and fetches the
records of the boards its configuration lists as contacts.

Costs on a microcontroller: a store signs twice (the value, §7.1, and the
message, §6.3.4), a fetch once; a retransmission (§6.2.1, after
``timeout`` seconds, or on a new link after the old one failed) resends
the same signed bytes. Nothing is signed for keepalives: the link lives
for one refresh only. Every request of a refresh is signed before the link
opens, and the fetched records' signatures are verified after it closed:
reload_client with the link, and Ed25519 with SHA-512, never share the
heap (each is dropped before the other is imported; see :func:`refresh`).

The application imports this module (and with it the RELOAD client) for
one refresh and drops it afterwards, so nothing here outlives a refresh.
What the next refresh needs is plain data the caller keeps in
``app.overlay``: ``(key, (config_sequence, storage_time, checked))``, with
``key`` the configuration's overlay entry it was learnt with: the overlay
configuration's sequence number (§6.3.2.1; without it every first request
of a refresh is answered Error_Config_Too_Old and sent twice), the storage
time of our last store (§7.4.1.1: the next must be newer) and the signer
certificates already checked (each saves one Ed25519 verification).
"""

import asyncio
import sys
import time

from sipmesh.proto.transient import forget

try:
    from fw_log import log as _log
except ImportError:
    _log = print

_DATA_TOO_OLD = 9  # RFC 6940 §14.9
KIND = 4026531842  # reload_client.KIND_DEVICE_RECORD
_LIFETIME = 3600  # s a stored record lives; the board refreshes it well before
# Seconds between the Unix epoch and this port's time.time() epoch (2000 on
# most microcontroller ports, 1970 on unix).
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


class OverlayClient:
    """A link to one overlay peer, for one refresh.

    ``identity``: the provisioned map (``seed``, ``cert``, and ``ca_key`` to
    check fetched records; ``node_id`` optional, else read from the
    certificate); ``timeout``: seconds to wait for an answer before resending
    (RFC 6940 §6.2.1's reliability timer is 3 s); ``tries``: transmissions
    per request, reconnecting when the link failed; ``config_sequence`` and
    ``checked``: kept from an earlier refresh. ``client`` is the
    sans-I/O :class:`reload_client.ReloadClient`, with ``defer`` set: a
    fetched record's answer carries its checks, pending, for :func:`_settle`.
    """

    def __init__(
        self,
        host,
        port,
        identity,
        overlay_name,
        kind=KIND,
        config_sequence=0,
        checked=None,
        timeout=3,
        tries=4,
    ):
        from sipmesh.proto import reload_client as rc

        self.addr = (host, port)
        self.timeout = int(timeout * 1000)
        self.tries = tries
        self.client = rc.ReloadClient(
            overlay_name,
            identity["cert"],
            identity["seed"],
            kind,
            identity.get("node_id"),
            identity.get("ca_key"),
            config_sequence,
            checked,
        )
        self.client.defer = True  # fetched records are checked by _settle()
        self._link = None

    async def _frame(self, r):
        """The next whole frame of the link (§6.6.2), read into a buffer of
        its own size (an answer with two certificates is about 1.5 KB: a
        board's heap may have no bigger hole). A timeout between two reads
        keeps what was read for the next call."""
        while True:
            b = self._fb
            while self._fp < len(b):
                k = await r.readinto(memoryview(b)[self._fp :])
                if not k:
                    raise OSError("link closed")
                self._fp += k
            if len(b) > 8:
                self._fb = bytearray(8)
                self._fp = 0
                return b
            # An ack frame is 9 bytes; a data frame's length is in bytes 5..7.
            n = 1 if b[0] == 0x81 else int.from_bytes(b[5:8], "big")
            if not 0 < n <= 8192:
                raise ValueError("bad RELOAD frame")
            self._fb = bytearray(8 + n)
            self._fb[:8] = b

    def close(self):
        """Close the link (the next call opens a new one)."""
        if self._link:
            self._link[1].close()
        self._link = None

    async def call(self, make):
        """Send the request ``make()`` sends (it returns its transaction id)
        and return its answer tuple (see reload_client), or None when every
        one of ``tries`` transmissions went unanswered."""
        cl = self.client
        tid = 0
        for _ in range(self.tries):
            try:
                if not self._link:
                    self._link = await asyncio.open_connection(*self.addr)
                    cl.reset()
                    self._fb = bytearray(8)
                    self._fp = 0
                if tid:
                    cl.resend()
                else:
                    tid = make()
                r, w = self._link
                end = time.ticks_add(time.ticks_ms(), self.timeout)
                while True:
                    for b in cl.parts_to_send():
                        w.write(b)
                    await w.drain()
                    left = time.ticks_diff(end, time.ticks_ms())
                    if left <= 0:
                        break
                    # (No local keeps the frame read: one copy while answers are checked.)
                    for a in cl.receive_data(await asyncio.wait_for(self._frame(r), left / 1000)):
                        if a[0] == tid:
                            return a
            except asyncio.TimeoutError:
                pass
            except (OSError, ValueError) as e:  # the link failed, or a broken stream
                _log("overlay %r" % (e,))
                self.close()
        return None


def _record(value=None, **fields):
    """device_record.encode(fields), or decode(value), with the module loaded
    for the call only."""
    before = list(sys.modules)
    from sipmesh.proto import device_record

    try:
        return device_record.decode(value) if value else device_record.encode(fields)
    finally:
        device_record = None
        forget(before)


def _sign(todo, seed):
    """Sign the requests of reload_client's ``unsigned_request`` (the
    StoredData's signature, §7.1, inside the message of a store, then the
    message's, §6.3.4), for ``send``; the list is emptied as it goes."""
    from sipmesh.proto.ed25519 import sign

    out = []
    while todo:
        tid, code, rid, st, head, pre, sdt, post, ident = todo.pop(0)
        msg = pre + sign(seed, sdt) + post if sdt else pre
        pre = sdt = None
        out.append((tid, code, rid, msg, sign(seed, head + msg + ident), st))
    return out


def _settle(answers, checked):
    """The answers with their pending checks (reload_client's ``defer``) run:
    the signer's user name set, or Error_Forbidden (2) and no value; a signer
    that passed is kept in ``checked`` (4 at most), as the client does."""
    from sipmesh.proto.ed25519 import verify

    for i, a in enumerate(answers):
        p = a and a[5]
        if type(p) is tuple:
            if all(verify(*x) for x in p[3]):
                if p[1] not in checked:
                    if len(checked) >= 4:
                        checked.pop(next(iter(checked)))
                    checked[p[1]] = (p[0], p[2])
                answers[i] = a[:5] + (p[0],)
            else:
                answers[i] = (a[0], 2, "signature", None, a[4], None)
    return answers


def _prepare(key, identity, state, reqs):
    """The unsigned requests of ``reqs`` (see :func:`_round`), made by a
    reload_client that is gone when this returns. A plain function: an
    async one's frame would keep the client, and its module, alive."""
    cl = OverlayClient(key[0], key[1], identity, key[2], key[3], state[0], state[1]).client
    user = cl.user
    todo = []
    for r in reqs:
        if type(r) is tuple:
            todo.append(cl.unsigned_store(r[0], r[1], _LIFETIME))
        else:
            # A contact's user name: with our own domain when it has none.
            r = user if r is None else r if "@" in r else r + user[user.find("@") :]
            todo.append(cl.unsigned_fetch(r))
    return todo


async def _exchange(key, identity, state, todo, store):
    # Send the signed requests one at a time over a new link; see _round.
    oc = OverlayClient(key[0], key[1], identity, key[2], key[3], state[0], state[1])
    out = []
    try:
        for i, req in enumerate(todo):
            todo[i] = None
            a = await oc.call(lambda r=req: oc.client.send(r))
            out.append(a)
            if store and (not a or a[1]):
                return out, todo[1:]
            store = False
    finally:
        oc.close()
        state[0] = oc.client.config_sequence
        # A finished coroutine's frame may still hold oc: not the client too.
        oc.client = oc = None
    return out, []


async def _round(key, identity, state, reqs, signed=()):
    """One exchange with the overlay peer, in phases that never share the
    heap: reload_client makes the requests of ``reqs`` (a ``(value,
    storage_time)`` pair first is a store of our record, then a name is a
    fetch of that contact's record, None of our own), Ed25519 signs them,
    and reload_client sends them, then those of ``signed``, one at a time
    over a new link and reads the answers, fetched records keeping their
    checks pending (run them with :func:`_settle`). ``state`` is
    ``[config_sequence, checked]``, updated. Return the answers in order
    (None when unanswered) and the signed requests left unsent: a store
    refused or unanswered ends the exchange."""
    before = list(sys.modules)
    try:
        todo = _prepare(key, identity, state, reqs)
        forget(before)
        todo = _sign(todo, identity["seed"])
        forget(before)
        todo.extend(signed)
        return await _exchange(key, identity, state, todo, type(reqs[0]) is tuple)
    finally:
        todo = signed = None
        forget(before)


async def refresh(app):
    """One overlay round of the board application: store our device record
    (built from the configuration and state), fetch the contacts' records
    into ``app.contacts`` (None for a contact without one, or whose record
    failed its checks), keep ``app.overlay`` for the next round. Raises
    OSError when the overlay is unreachable or refuses the record.

    In phases, so that the big modules never share the heap: the record is
    encoded (device_record), the requests are made (reload_client), signed
    (Ed25519) and exchanged (reload_client, a link), the fetched records'
    signatures verified (Ed25519) and the records decoded (device_record).
    A store refused as older than the stored copy (§7.4.1.1) costs two more
    exchanges.
    """
    cfg = app.store.config
    ov = cfg.get("overlay")
    if not ov:
        app.overlay_state = "off"
        return
    key = (ov["host"], ov["port"], ov["name"], ov.get("kind", KIND))
    kept = app.overlay
    seq, last, checked = kept[1] if kept and kept[0] == key else (0, 0, None)
    state = [seq, {} if checked is None else checked]
    s = cfg.get("settings") or {}
    now = int(time.time()) + _EPOCH
    value = _record(
        aor=cfg["aor"],
        addrs=["%s:%d" % (app.ip, s.get("sip_port", 5060))] if app.ip else [],
        caps=s.get("caps", []),
        kind=app.board.KIND,
        fw=app.fw,
        t=now,
    )
    names = cfg.get("contacts", [])
    s = cfg = ov = kept = None
    ident = app.store.identity
    try:
        fetch = names
        left = ()
        for _ in range(2):
            last = max(now * 1000, last + 1)
            got, left = await _round(key, ident, state, [(value, last)] + fetch, left)
            fetch = []
            a = got[0]
            if a and a[1] == _DATA_TOO_OLD:
                # §7.4.1.1: our clock is behind the stored copy (a board without
                # a real-time clock): store just after it, then the fetches
                # already signed.
                a = (await _round(key, ident, state, [None]))[0][0]
                last = a[4] if a else last
                continue
            break
        left = None
        a = got[0]
        if not a or a[1]:
            raise OSError("store %r" % (a and a[1:3],))
    finally:
        app.overlay = (key, (state[0], last, state[1]))
    before = list(sys.modules)
    try:
        got = _settle(got[1:], state[1])  # the link closed, reload_client dropped
    finally:
        forget(before)
    contacts = {}
    for name, a in zip(names, got):
        try:
            if not a or a[1]:
                raise ValueError(a and a[1:3])
            contacts[name] = a[3] and _record(a[3])
        except ValueError as e:
            _log("fetch %s %r" % (name, e))
            contacts[name] = None
    app.contacts = contacts
