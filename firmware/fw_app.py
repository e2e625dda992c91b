"""The board application: one asyncio program for every board kind.

Boot order: recover the store (``fw_store``), start the serial agent
(``fw_agent``), bring the network up through the board kind's module, then
the LAN parts, each started under its own try/except so that a missing or
failing part is logged and the rest runs:

- the mDNS responder (``fw_mdns.Responder``, RFC 6762/6763) announcing
  ``_sipmesh-board._tcp`` with TXT v, id, kind, fw, state, cfg, name;
- the push listener (``fw_push.serve_push``, each connection served by
  ``fw_http``) on 7381;
- the configuration pull (``fw_lan.pull`` every intervals.pull seconds) and
  the heartbeat (``fw_lan.post_status`` every intervals.heartbeat), both in
  ``fw_jobs`` and run by one asyncio task (``_loops``) with the refresh;
- the RELOAD client (``fw_overlay.refresh``, RFC 6940 §3.2) storing this
  board's device record every intervals.refresh seconds.

Heap (100 KB on an ESP32): the core (the store's state, the agent, the
log ring), mDNS and the push listener's socket stay resident; the frame
codec, CBOR and the management codec are loaded per serial frame
(``fw_agent``), the store's file work per call (``fw_store_io``). Every
module that may load is imported once at boot and forgotten (``_intern``:
MicroPython's name pools then grow in an empty heap), and the long-lived
state a job replaced is rebuilt after it (``App._settle``), so that the
space a job freed is not split for good. Everything else is transient:
``App.task`` runs one job under one asyncio.Lock and afterwards drops every
module the job imported (``del sys.modules[name]``, the package attribute
too, then ``gc.collect()``), so config acceptance (COSE, Ed25519, SHA-512,
boardcfg), a pull or heartbeat (fw_lan, heartbeat) and an overlay refresh
(fw_overlay, reload_client, device_record, Ed25519) never sit in the heap
together.

Every accepted configuration, whatever its path (serial provision/set, LAN
pull, LAN push), goes through ``App.provision`` or ``App.apply_config``
(``fw_config``, loaded per call) and then ``_changed``, which re-announces
the TXT record (RFC 6762 §8.4) and wakes the loops. A board never
provisioned accepts no configuration from the LAN. SIPMESH_NO_LAN=1 (unix
port) runs the store and the agent only; SIPMESH_NO_MDNS=1 (unix port)
leaves the mDNS responder off (the controller is then found from the
configuration's controller entry) and SIPMESH_PUSH_PORT=N moves the push
listener off 7381, so that several virtual boards share one host.
"""

import asyncio
import gc
import os
import sys
import time

import fw_log
import fw_store

from sipmesh.proto.transient import forget as _forget

FW = "0.1.0"
PUSH_PORT = 7381
_LOOPS = ("pull", "heartbeat", "refresh")
# Imported during a task but resident, or dropped by their owner (fw_mdns): never dropped.
_KEEP = ("fw_mdns", "fw_mdns_ctl", "fw_mdns_wire", "fw_mdns_find", "fw_push")


# Only ever used inside App.task (or an agent request), so emptied when dropped:
# see sipmesh.proto.transient.forget.
_CLEAR = ("sipmesh.proto.cbor", "fw_store_io", "fw_jobs")
# Every module a job or a request may load, imported once at boot (see _intern);
# the LAN's only when the LAN parts run.
_INTERN = (
    "fw_store_io", "fw_config", "fw_jobs", "sipmesh.proto.frame", "sipmesh.proto.mgmt",
    "sipmesh.proto.cose", "sipmesh.proto.boardcfg", "sipmesh.proto.ed25519",
)
_INTERN_LAN = (
    "fw_lan", "fw_http", "fw_mdns_ctl", "fw_mdns_wire", "fw_mdns_find", "fw_overlay",
    "sipmesh.proto.heartbeat", "sipmesh.proto.reload_client", "sipmesh.proto.device_record",
)


def _intern(names):
    """Import each module of names once, and forget it at once.

    MicroPython keeps every name a loaded module uses (its qstr pools and
    their text) for good; a module's first import grows them. Grown at boot,
    while the heap is nearly empty, they sit together low in the heap; grown
    during a job's first run, each pool would stay in the middle of the space
    the job's code freed and split the free heap for the board's whole life
    (seen: 28 KB free in pieces of at most 4.5 KB, and an overlay refresh
    that no longer found 640 bytes in one piece).
    """
    for name in names:
        before = list(sys.modules)
        try:
            __import__(name)
        except ImportError:
            pass  # a bundle without that part: the job that needs it says so
        _forget(before, (), True)


def _copy(x):
    """x rebuilt from new objects (dicts, lists, tuples, str, bytes): see App._settle."""
    t = type(x)
    if t is dict:
        d = {}
        for k in x:
            d[_copy(k)] = _copy(x[k])
        return d
    if t is list:
        return [_copy(v) for v in x]
    if t is tuple:
        return tuple([_copy(v) for v in x])
    if t is str or t is bytes:
        return x[:]
    return x


def _bundle_version():
    """The deployed bundle's version from /manifest.json (written by
    `sipmesh board build`), else FW for code run from source."""
    try:
        import json

        with open("/manifest.json") as f:
            v = json.load(f).get("version")
        return v if isinstance(v, str) and 0 < len(v) <= 32 else FW
    except (OSError, ValueError, AttributeError):
        return FW


class App:
    """The board's state: store, network address, loops and the serial agent."""

    def __init__(self, board, store=None):
        self.board = board
        self.id = board.board_id()
        self.fw = _bundle_version()
        self.store = store or fw_store.Store(board.DATA, self.id)
        self.t0 = time.ticks_ms()
        self.ip = self.agent = self.mdns = self.push = self.overlay = self.controller = None
        self.boot = self.hb_n = 0
        self.pending = None  # (seed, pub) made by `keygen`, kept for `provision`
        # Real boards have no os.getenv; SIPMESH_NO_LAN is for the unix port.
        self.lan = board.KIND != "unix" or not os.getenv("SIPMESH_NO_LAN")
        self.overlay_state = "off"
        self.contacts = {}  # name -> device record, filled by fw_overlay.refresh
        # self.overlay: plain data fw_overlay.refresh keeps between rounds (no objects of
        # the transient modules, or they would stay in the heap)
        self.lock = asyncio.Lock()
        self.exit = asyncio.Event()  # set by the serial `repl`: main() returns
        self._wake = []
        self._reading = [0]  # push requests being read (see fw_push.serve_push)
        self._cfg = [0, False]  # calls in fw_config, fw_config loaded by them

    def uptime(self):
        return time.ticks_diff(time.ticks_ms(), self.t0) // 1000

    def kid(self):
        """Key id of the provisioned controller key: sha256(pub)[:8], or None."""
        ident = self.store.identity
        if ident is None:
            return None
        import hashlib

        return hashlib.sha256(ident["controller_key"]).digest()[:8]

    def txt(self):
        """The board service's TXT record (the contract's keys, text values)."""
        cfg = self.store.config
        return {
            "v": "1", "id": self.id, "kind": self.board.KIND, "fw": self.fw,
            "state": self.store.state(), "cfg": str(self.store.seq),
            "name": cfg["name"] if cfg else "",
        }

    async def task(self, fn, *args):
        """Run fn(*args) (plain or coroutine function) alone, then forget every module
        it imported: out of sys.modules and its package, then collected."""
        async with self.lock:
            for _ in range(100):  # a push request being read: its end, at most 2 s
                if not self._reading[0]:
                    break
                await asyncio.sleep_ms(20)
            before = list(sys.modules)
            was = self._lasting()
            gc.collect()  # the job's modules then land in the lowest free blocks
            r = None
            try:
                r = fn(*args)
                if hasattr(r, "send"):
                    r = await r
            except BaseException:
                r = None  # the coroutine's frame would keep a failed job's modules alive
                raise
            finally:
                fn = args = None
                _forget(before, _KEEP, _CLEAR)
                self._settle(was)
            try:
                return _copy(r)
            except MemoryError:
                return r  # valid, only placed worse

    def _lasting(self):
        st = self.store
        return [st.config, st.identity, st.cose, self.overlay, self.contacts, self.controller]

    def _settle(self, was):
        """Rebuild the long-lived state a job replaced, now that its modules are gone.

        What a job keeps (a configuration, the overlay's state, fetched
        records) was allocated above the job's code; left there, a few small
        objects would split the space that code freed for the board's whole
        life (seen: 28 KB free in pieces of at most 4.5 KB). Copies made now
        fill the lowest free blocks instead, and the originals are collected.
        """
        now = self._lasting()
        if any(a is not b for a, b in zip(was, now)):
            try:
                c = [x if x is w else _copy(x) for x, w in zip(now, was)]
            except MemoryError:
                return  # the originals stay: valid, only placed worse
            st = self.store
            st.config, st.identity, st.cose, self.overlay, self.contacts, self.controller = c
            c = now = None
            gc.collect()

    # --- configuration ----------------------------------------------------

    def jobs(self, name, *args):
        """fw_jobs.<name>(*args); run as a task, so fw_jobs is dropped afterwards."""
        import fw_jobs

        return getattr(fw_jobs, name)(*args)

    async def _config(self, name, *args):
        """fw_config.<name>(self, *args); fw_config is loaded for the call and
        dropped when the last call running ends (a push and a serial `set` may overlap)."""
        c = self._cfg
        if not c[0]:
            c[1] = "fw_config" not in sys.modules
        c[0] += 1
        try:
            import fw_config

            return await getattr(fw_config, name)(self, *args)
        finally:
            fw_config = None
            c[0] -= 1
            if not c[0] and c[1]:
                # No call runs: emptied too (see sipmesh.proto.transient.forget).
                m = sys.modules.pop("fw_config", None)
                if m is not None:
                    m.__dict__.clear()

    def provision(self, args):
        """Serial `provision`: identity + first configuration, written atomically."""
        return self._config("provision", args)

    def apply_config(self, cose_bytes, source):
        """Accept a signed configuration from source; return its seq.

        Raises BoardConfigError when refused (logged; the board keeps what it had).
        """
        return self._config("apply", cose_bytes, source)

    def on_push(self, body):
        """Push handler: (204, "") accepted, (403, reason) refused, (400, ...) garbage."""
        return self._config("on_push", body)

    def _changed(self):
        gc.collect()
        if self.mdns is not None:
            try:
                self.mdns.update_txt(self.txt())
            except Exception as e:  # noqa: BLE001 - announcing is best effort
                fw_log.log("mdns: %r" % e)
        for ev in self._wake:
            ev.set()

    async def _sleep(self, ev, seconds):
        """Sleep seconds, or less when a new configuration arrives."""
        try:
            await asyncio.wait_for_ms(ev.wait(), seconds * 1000)
        except asyncio.TimeoutError:
            pass
        ev.clear()

    # --- lifecycle ----------------------------------------------------------

    async def stop(self, reset=False):
        """Say goodbye on mDNS and close the push listener; then reset the board
        (serial `reboot`, does not return) or let main() return (`repl`)."""
        fw_log.log("reboot" if reset else "app: exit to REPL")
        try:
            if self.mdns is not None:
                await self.mdns.stop()
            if self.push is not None:
                self.push.close()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass
        self.mdns = self.push = None
        if reset:
            self.board.reset()

    async def run(self):
        # The line first: a request arriving while the store loads would otherwise
        # meet a line where a frame's 0x03 byte is Ctrl-C and stops the boot.
        reader, writer = self.board.serial_streams()
        _intern(_INTERN + _INTERN_LAN if self.lan else _INTERN)
        state = await self.task(self.store.load)
        fw_log.log("boot %s %s fw %s: %s, cfg %d" % (
            self.board.KIND, self.id, self.fw, state, self.store.seq))
        try:
            self.boot = await self.task(self.store.next_boot)
        except Exception as e:  # noqa: BLE001 - a full flash must not stop the board
            fw_log.log("boot counter not saved: %r" % e)
        import fw_agent

        self.agent = fw_agent.Agent(self, reader, writer)
        asyncio.create_task(self.agent.run())
        asyncio.create_task(self._network())
        await self.exit.wait()
        await self.stop()

    async def _network(self):
        ev = asyncio.Event()
        self._wake.append(ev)
        while True:
            cfg = self.store.config
            try:
                self.ip = await self.board.net_up(cfg.get("net") if cfg else None)
                break
            except Exception as e:  # noqa: BLE001 - retried, or when a config brings Wi-Fi
                fw_log.log("net: %r" % e)
            await self._sleep(ev, 30)
        fw_log.log("net: up, " + self.ip)
        if not self.lan:
            return
        port, mdns = PUSH_PORT, True
        if self.board.KIND == "unix":
            # Several virtual boards on one host (the demo): each its own push
            # port, and no mDNS responder bound to 0.0.0.0:5353.
            port = int(os.getenv("SIPMESH_PUSH_PORT") or port)
            mdns = not os.getenv("SIPMESH_NO_MDNS")
        if not mdns:
            fw_log.log("mdns: off")
        try:
            if mdns:
                import fw_mdns

                self.mdns = fw_mdns.Responder(self.ip, self.id, port=port, txt=self.txt())
                self.mdns.log = fw_log.log
                self.mdns.lock = self.lock  # its probing code and a job's never load together
                asyncio.create_task(self.mdns.start())
        except Exception as e:  # noqa: BLE001 - the board still works without mDNS
            self.mdns = None
            fw_log.log("mdns: not started: %r" % e)
        try:
            from fw_push import serve_push

            self.push = await serve_push(self.ip, port, self.on_push, log=fw_log.log,
                                         lock=self.lock, reading=self._reading)
        except Exception as e:  # noqa: BLE001 - pull still brings configurations
            fw_log.log("push: not started: %r" % e)
        gc.collect()
        asyncio.create_task(self._loops())

    # --- LAN jobs, each a transient task ------------------------------------

    async def _loops(self):
        """The pull, heartbeat and refresh loops in one asyncio task (one coroutine
        frame instead of three): each key's round runs once intervals.<key>
        seconds have passed since its last round ended, and every key's at once
        when a new configuration wakes the board. Rounds share App.task's lock
        anyway, so they ran one after the other before too."""
        ev = asyncio.Event()
        self._wake.append(ev)
        due = [time.ticks_ms()] * 3
        while True:
            cfg = self.store.config
            wait = 30000
            if cfg is not None:
                for i in range(3):
                    if time.ticks_diff(due[i], time.ticks_ms()) <= 0:
                        key = _LOOPS[i]
                        # A round that ran out of heap (a moment of fragmentation, other
                        # work in flight) is tried again soon, not an interval later.
                        s = 2 if await self._round(key) else cfg["intervals"][key]
                        due[i] = time.ticks_add(time.ticks_ms(), s * 1000)
                now = time.ticks_ms()
                wait = max(0, min(time.ticks_diff(d, now) for d in due))
            try:
                await asyncio.wait_for_ms(ev.wait(), wait)
            except asyncio.TimeoutError:
                pass
            if ev.is_set():
                ev.clear()
                due = [time.ticks_ms()] * 3

    async def _round(self, key):
        """One round of key; true when it failed for want of heap."""
        try:
            body = await self.task(self._job, key)
            if body is not None:
                await self.apply_config(body, "pull")
        except Exception as e:  # noqa: BLE001 - the next round tries again
            fw_log.log("%s: %s" % (key, getattr(e, "reason", e)))
            if key == "pull":
                self.controller = None
            elif key == "refresh":
                self.overlay_state = "down"
            return isinstance(e, MemoryError)
        return False

    async def _job(self, key):
        """One round of a LAN loop; a pull returns a configuration to verify, or None.

        Pull and heartbeat are in fw_jobs (loaded for the round only).
        """
        if key != "refresh":
            import fw_jobs

            return await fw_jobs.job(self, key)
        import fw_overlay

        # fw_overlay closes its link; app.overlay keeps only plain data between rounds.
        await fw_overlay.refresh(self)
        if self.store.config.get("overlay"):
            self.overlay_state = "ok"
        return None


def main():
    """Entry point of /main.py."""
    before = list(sys.modules)
    import board

    app = App(board)
    try:
        asyncio.run(app.run())
    finally:
        board.serial_restore()
        asyncio.new_event_loop()
        # Back at the REPL (`repl`, for mpremote's deploy): the heap is the REPL's.
        app = None
        _forget(before)
