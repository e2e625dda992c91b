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
for one refresh only.

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
import gc
import time

from sipmesh.proto import device_record
from sipmesh.proto import reload_client as rc

try:
    from fw_log import log as _log
except ImportError:
    _log = print

_DATA_TOO_OLD = 9  # RFC 6940 §14.9
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
    sans-I/O :class:`reload_client.ReloadClient`.
    """

    def __init__(
        self,
        host,
        port,
        identity,
        overlay_name,
        kind=rc.KIND_DEVICE_RECORD,
        config_sequence=0,
        checked=None,
        timeout=3,
        tries=4,
    ):
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
        self._link = None

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
                if tid:
                    cl.resend()
                else:
                    gc.collect()  # signing builds big integers: start from a clean heap
                    tid = make()
                    gc.collect()
                r, w = self._link
                end = time.ticks_add(time.ticks_ms(), self.timeout)
                while True:
                    w.write(cl.data_to_send())
                    await w.drain()
                    left = time.ticks_diff(end, time.ticks_ms())
                    if left <= 0:
                        break
                    # An answer with two certificates is about 1.5 KB: in one read.
                    # (No local keeps the bytes read: one copy while answers are checked.)
                    for a in cl.receive_data(await asyncio.wait_for(r.read(2048), left / 1000)):
                        if a[0] == tid:
                            return a
            except asyncio.TimeoutError:
                pass
            except (OSError, ValueError) as e:  # the link failed, or a broken stream
                _log("overlay %r" % (e,))
                self.close()
        return None


async def refresh(app):
    """One overlay round of the board application: store our device record
    (built from the configuration and state), fetch the contacts' records
    into ``app.contacts`` (None for a contact without one, or whose record
    failed its checks), keep ``app.overlay`` for the next round. Raises
    OSError when the overlay is unreachable or refuses the record."""
    cfg = app.store.config
    ov = cfg.get("overlay")
    if not ov:
        app.overlay_state = "off"
        return
    key = (ov["host"], ov["port"], ov["name"], ov.get("kind", rc.KIND_DEVICE_RECORD))
    kept = app.overlay
    seq, last, checked = kept[1] if kept and kept[0] == key else (0, 0, None)
    oc = OverlayClient(key[0], key[1], app.store.identity, key[2], key[3], seq, checked)
    cl = oc.client
    try:
        s = cfg.get("settings") or {}
        now = int(time.time()) + _EPOCH
        value = device_record.encode({
            "aor": cfg["aor"],
            "addrs": ["%s:%d" % (app.ip, s.get("sip_port", 5060))] if app.ip else [],
            "caps": s.get("caps", []),
            "kind": app.board.KIND,
            "fw": app.fw,
            "t": now,
        })
        for _ in range(2):
            last = max(now * 1000, last + 1)
            a = await oc.call(lambda t=last: cl.store(value, t, _LIFETIME))
            if not a or a[1] != _DATA_TOO_OLD:
                break
            # §7.4.1.1: our clock is behind the stored copy (a board without
            # a real-time clock): store just after it.
            a = await oc.call(lambda: cl.fetch(cl.user))
            last = a[4] if a else last
        if not a or a[1]:
            raise OSError("store %r" % (a and a[1:3],))
        contacts = {}
        for name in cfg.get("contacts", []):
            # A contact's user name: with our own domain when it has none.
            user = name if "@" in name else name + cl.user[cl.user.find("@") :]
            a = await oc.call(lambda u=user: cl.fetch(u))
            try:
                if not a or a[1]:
                    raise ValueError(a and a[1:3])
                contacts[name] = a[3] and device_record.decode(a[3])
            except ValueError as e:
                _log("fetch %s %r" % (user, e))
                contacts[name] = None
        app.contacts = contacts
    finally:
        oc.close()
        app.overlay = (key, (cl.config_sequence, last, cl.checked))
