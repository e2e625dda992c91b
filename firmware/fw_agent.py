"""The serial management agent: frames in, one response per request out.

Runs on the board's management line (``board.serial_streams()``). The
agent keeps the raw bytes of the frame arriving, up to its 0x00 delimiter;
each complete segment goes through a ``sipmesh.proto.frame.FrameDecoder``
and each REQUEST frame is parsed by ``sipmesh.proto.mgmt`` and answered in
a RESPONSE frame with the same seq. The framing and management codecs are
loaded for a frame and dropped after it, so an idle board holds none of them
(heap budget, issue 6). The op handlers here only translate between the
protocol and the application object (``fw_app.App``), which owns the state.

The line is untrusted: garbage, truncated frames and a port closed in the
middle of a frame are dropped by the decoder and counted (``dropped``);
a frame that decodes but is not a valid request is answered "bad-request"
and counted (``bad``); frames of other types are ignored. Nothing a peer
sends makes the agent raise: a failing handler is answered "internal".
Each frame written is preceded by a 0x00 (the framing's delimiter, see
``sipmesh.proto.frame``) so stray bytes on the line, such as a REPL
banner, can never be glued to the front of a frame.
"""

import asyncio
import gc
import sys
import time

import fw_log

from sipmesh.proto.transient import forget


def _load(name):
    """(sipmesh.proto.<name>, sys.modules before it). The codecs (frame, mgmt
    and the CBOR codec mgmt uses) are loaded in synchronous stretches that end
    with ``forget(before, (), True)``, so an idle board holds none (issue 6)."""
    before = list(sys.modules)
    __import__("sipmesh.proto." + name)
    return sys.modules["sipmesh.proto." + name], before


def _reply(r, op=None, e=None):
    """The RESPONSE payload: ok with the map r, or the error e that op raised.

    e is matched by class name: the mgmt that raised it may be another load.
    """
    mgmt, before = _load("mgmt")
    try:
        if e is None:
            return mgmt.response_ok(**r)
        reason = getattr(e, "reason", None)
        name = type(e).__name__
        if name == "MgmtError":
            return mgmt.response_error(e.code, e.message)
        if name == "BoardConfigError" and reason:
            # A refusal (boardcfg is imported only when a configuration arrives).
            return mgmt.response_error(mgmt.REFUSED, reason)
        fw_log.log("agent: %s failed: %r" % (op, e))
        return mgmt.response_error(mgmt.INTERNAL, repr(e))
    finally:
        mgmt = None
        forget(before, (), True)


def mgmt_value(name, message=None):
    """sipmesh.proto.mgmt.<name>, or with a message the MgmtError(<name>, message)
    to raise; the module is not kept."""
    mgmt, before = _load("mgmt")
    try:
        v = getattr(mgmt, name)
        return v if message is None else mgmt.MgmtError(v, message)
    finally:
        mgmt = None
        forget(before, (), True)


def error(code, message):
    """A MgmtError for the op to raise; code names the constant ("BAD_REQUEST")."""
    return mgmt_value(code, message)


class Agent:
    """One management session on a (reader, writer) pair of asyncio streams."""

    def __init__(self, app, reader, writer):
        self.app = app
        self.r = reader
        self.w = writer
        mgmt, before = _load("mgmt")
        # The largest request (provision) fits in MAX_REQUEST (see sipmesh.proto.mgmt).
        self.max = mgmt.MAX_REQUEST
        self.boot = mgmt.event("boot", id=app.id, fw=app.fw)
        mgmt = None
        forget(before, (), True)
        self.bad = self.ignored = self.dropped = 0
        self.seg = bytearray()  # raw bytes of the frame arriving, before its 0x00
        self.skip = False  # that frame is already too long: discarded up to the 0x00
        self.cur = None  # the frame being answered, until handle() takes it
        self.running = True

    async def send(self, kind, seq, payload):
        """Write a frame of type frame.<kind> ("RESPONSE", "EVENT"), after a 0x00."""
        frame, before = _load("frame")
        try:
            data = frame.encode(getattr(frame, kind), seq, payload)
        finally:
            frame = None
            forget(before, (), True)
        self.w.write(b"\x00")
        self.w.write(data)
        await self.w.drain()

    def _take(self, data):
        """The complete segments data ends (raw, COBS-stuffed, without the 0x00);
        the rest waits in self.seg. A segment longer than the COBS form of the
        largest request is discarded as it streams in and counted as dropped,
        as FrameDecoder does."""
        cap = self.max + self.max // 254 + 1
        out = []
        i = 0
        end = len(data)
        while i < end:
            z = data.find(b"\x00", i)
            stop = end if z < 0 else z
            if not self.skip and i < stop:
                if len(self.seg) + stop - i > cap:
                    self.skip = True
                    self.seg = bytearray()
                else:
                    self.seg.extend(memoryview(data)[i:stop])
            if z < 0:
                break
            if self.skip:
                self.dropped += 1
            elif self.seg:
                out.append(bytes(self.seg))
            self.seg = bytearray()
            self.skip = False
            i = z + 1
        return out

    def _decode(self, seg):
        """(is a REQUEST, seq, payload) of the frame in one complete segment, or
        None when it is not one (counted as dropped)."""
        frame, before = _load("frame")
        try:
            dec = frame.FrameDecoder(self.max)
            dec.feed(seg)
            seg = None
            fs = dec.feed(b"\x00")
            self.dropped += dec.dropped
            return (fs[0].type == frame.REQUEST, fs[0].seq, fs[0].payload) if fs else None
        finally:
            frame = dec = fs = None
            forget(before, (), True)

    async def run(self):
        """Serve until a `repl` request; then restore the line and return."""
        app = self.app
        try:
            await self.send("EVENT", 0, self.boot)
        except Exception as e:  # noqa: BLE001 - a dead line must not stop the board
            fw_log.log("agent: boot event not sent: %r" % e)
        while self.running:
            try:
                data = await self.r.read(256)
            except Exception:  # noqa: BLE001 - hung-up or reopened line: try again
                data = None
            if not data:
                # EOF or a hangup: poll keeps reporting the line readable, so wait
                # a little instead of spinning until the peer opens it again.
                await asyncio.sleep_ms(50)
                continue
            segs = self._take(data)
            data = None
            while segs and self.running:
                await self._quiet()
                # On self, not in a local: handle() lets go of the request's bytes
                # before the op runs (a provision checks a signature meanwhile).
                self.cur = self._decode(segs.pop(0))
                if self.cur is not None:
                    await self.handle()
        self.boot = None
        fw_log.log("agent: stopped")
        app.board.serial_restore()

    async def _quiet(self):
        """Wait for the application's running job to end, at most 2 s: mgmt and
        CBOR are loaded in synchronous stretches, never beside a job's modules
        at its peak (heap budget, issue 6), yet a long job does not stall the line."""
        lock = self.app.lock
        for _ in range(100):
            if not lock.locked():
                return
            await asyncio.sleep_ms(20)

    async def handle(self):
        """Answer the frame in self.cur (see _decode); never raises (except the
        board's own reset)."""
        f = self.cur
        self.cur = None
        if not f[0]:
            self.ignored += 1
            return
        seq = f[1]
        op = None
        await self._quiet()
        try:
            mgmt, before = _load("mgmt")
            try:
                op, args = mgmt.parse_request(f[2])
            finally:
                # Not held while the op runs (a provision verifies a signature).
                f = mgmt = None
                forget(before, (), True)
            r = await self.op(op, args)
            await self._quiet()
            payload = _reply(r)
        except Exception as e:  # noqa: BLE001 - answered, the agent keeps running
            if op is None:
                self.bad += 1
            await self._quiet()
            payload = _reply(None, op, e)
        r = None
        gc.collect()
        try:
            await self.send("RESPONSE", seq, payload)
        except Exception as e:  # noqa: BLE001 - the peer went away; it will ask again
            fw_log.log("agent: response not sent: %r" % e)
        if op == "reboot":
            await self.app.stop(True)
        elif op == "repl":
            self.running = False
            self.app.exit.set()

    async def op(self, op, args):
        """The map of an ok response to a parsed request (raises MgmtError to refuse)."""
        app = self.app
        st = app.store
        if op == "hello":
            return {"id": app.id, "kind": app.board.KIND, "fw": app.fw,
                    "proto": mgmt_value("PROTO"), "state": st.state()}
        if op == "info":
            free, alloc = app.board.mem()
            cfg = st.config
            return {
                "id": app.id, "kind": app.board.KIND, "fw": app.fw, "state": st.state(),
                "cfg": st.seq, "name": cfg["name"] if cfg else None, "ip": app.ip,
                "uptime": app.uptime(), "free": free, "alloc": alloc, "kid": app.kid(),
                "rx_dropped": self.dropped, "rx_bad": self.bad,
            }
        if op == "keygen":
            app.pending = await app.task(app.jobs, "keypair", None)
            fw_log.log("agent: new key pair made for provisioning")
            return {"pub": app.pending[1]}
        if op == "provision":
            return await app.provision(args)
        if op == "get":
            return {"config": st.config}
        if op == "set":
            if st.identity is None:
                raise error("NOT_PROVISIONED", "provision the board first")
            return {"cfg": await app.apply_config(args["config"], "serial")}
        if op == "logs":
            lines, nxt = fw_log.lines(args.get("since", 0))
            return {"lines": lines, "next": nxt}
        if op == "ping":
            return {"t": time.ticks_ms()}
        return {}  # reboot, repl: acted on once the response is out
