"""A board's mDNS (firmware/fw_mdns.py) judged by python-zeroconf and avahi.

The codec is first checked against python-zeroconf's own packet reader and
writer in process. The rest needs root: a controller namespace holds a
bridge with two board namespaces on it; each board is the MicroPython unix
port with a 100 KB heap running tests/mp/mdns_board.py. In the controller
namespace python-zeroconf (tests/netns/mdns_zeroconf.py) browses for the
boards and registers a controller service, and avahi-daemon (with a private
D-Bus system bus, /run on a private tmpfs) is the second, independent judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import board_lan
import pytest
from zeroconf import (
    DNSAddress,
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSService,
    DNSText,
)

from sipmesh.boards import unixport
from sipmesh.proto import mdns

HERE = Path(__file__).resolve().parent
BOARD = HERE / "mp" / "mdns_board.py"
ZC = HERE / "netns" / "mdns_zeroconf.py"
FIRMWARE = HERE.parent / "firmware"
CTRL_IP, B1_IP, B2_IP = "10.66.0.1", "10.66.0.2", "10.66.0.3"
BOARD_TYPE = "_sipmesh-board._tcp.local."
WAIT = 30.0  # every wait on a process line; generous for 2 shared cores
# Heap the responder adds once announced and idle, in tests/mp/mdns_board.py with
# the modules run from source: 24.4 KB with the full codec resident, 9.7 KB with
# fw_mdns alone (on a board, from .mpy: 17.5 KB before, 5.3 KB now).
IDLE_HEAP = 12000
ID = "sm-0123456789ab"
TXT = {"v": "1", "id": ID, "kind": "unix", "fw": "0.1", "state": "unprovisioned", "cfg": "0",
       "name": ""}


# ------------------------------------------------- the codec against zeroconf's


def test_zeroconf_reads_our_announcement() -> None:
    inst = f"{ID}._sipmesh-board._tcp.local"
    msg = mdns.Message(0, 0x8400, answers=[
        mdns.Record("_sipmesh-board._tcp.local", mdns.TYPE_PTR, inst, 4500),
        mdns.Record(inst, mdns.TYPE_SRV, (0, 0, 7381, f"{ID}.local"), 120, True),
        mdns.Record(inst, mdns.TYPE_TXT, mdns.txt_items(TXT), 4500, True),
        mdns.Record(f"{ID}.local", mdns.TYPE_A, B1_IP, 120, True),
    ])
    got = DNSIncoming(msg.encode())
    assert got.valid and got.is_response()
    ptr, srv, txt, a = got.answers()
    assert isinstance(ptr, DNSPointer) and ptr.alias == inst + "." and not ptr.unique
    assert isinstance(srv, DNSService) and (srv.port, srv.server, srv.unique) == (
        7381, f"{ID}.local.", True)
    assert isinstance(txt, DNSText) and txt.text == b"".join(
        bytes([len(i)]) + i for i in mdns.txt_items(TXT))
    assert isinstance(a, DNSAddress) and a.address == bytes([10, 66, 0, 2])


def test_we_read_zeroconfs_query_and_response() -> None:
    out = DNSOutgoing(0x8400, multicast=True)
    name = "branch1 controller._sipmesh._tcp.local."
    out.add_answer_at_time(DNSPointer("_sipmesh._tcp.local.", 12, 1, 4500, name), 0)
    out.add_answer_at_time(DNSService(name, 33, 0x8001, 120, 0, 0, 7380, "ctl.local."), 0)
    out.add_answer_at_time(DNSText(name, 16, 0x8001, 4500, b"\x03v=1\x0akid=001122"), 0)
    out.add_additional_answer(DNSAddress("ctl.local.", 1, 0x8001, 120, bytes([10, 66, 0, 1])))
    (packet,) = out.packets()
    m = mdns.decode(packet)
    assert [(r.rtype, r.data) for r in m.answers] == [
        (12, "branch1 controller._sipmesh._tcp.local"),
        (33, (0, 0, 7380, "ctl.local")),
        (16, [b"v=1", b"kid=001122"]),
    ]
    assert m.answers[1].flush and not m.answers[0].flush
    assert (m.additional[0].name, m.additional[0].data) == ("ctl.local", CTRL_IP)
    q = DNSOutgoing(0, multicast=True)
    question = DNSQuestion("_sipmesh._tcp.local.", 12, 1)
    question.unicast = True
    q.add_question(question)
    (qp,) = q.packets()
    (mq,) = mdns.decode(qp).questions
    assert (mq.name, mq.qtype, mq.unicast) == ("_sipmesh._tcp.local", 12, True)


# ------------------------------------ the board's wire module against the codec

# Runs on both runtimes (firmware/ and sipmesh.proto importable): the answers
# and messages of fw_mdns_wire, byte for byte against sipmesh.proto.mdns, and
# its parser against malformed input. Prints "ok N" after N checks.
WIRE = r"""
import sys
import fw_mdns
from sipmesh.proto import mdns
from sipmesh.proto.mdns import Message, Question as Q, Record as R

ID, IP, OTHER = "sm-0123456789ab", "10.66.0.2", "10.66.0.9"
SVC = "_sipmesh-board._tcp.local"
INST, HOST, META = ID + "." + SVC, ID + ".local", "_services._dns-sd._udp.local"
TXT = {"v": "1", "id": ID, "kind": "unix", "fw": "0.1", "state": "unprovisioned", "cfg": "0",
       "name": ""}
ITEMS = mdns.txt_items(TXT)
PTR = R(SVC, 12, INST, 4500)
SRV = R(INST, 33, (0, 0, 7381, HOST), 120, True)
TXR = R(INST, 16, ITEMS, 4500, True)
A = R(HOST, 1, IP, 120, True)
MPTR = R(META, 12, SVC, 4500)
NI = R(INST, 47, (INST, [16, 33]), 4500, True)
NH = R(HOST, 47, (HOST, [1]), 120, True)
n = 0


# held as fw_mdns's own users hold them: the last user's release empties a module
w = fw_mdns._get("fw_mdns_wire")
fw_mdns_ctl = fw_mdns._get("fw_mdns_ctl")


def check(what, got, want):
    global n
    n += 1
    if got != want:
        raise AssertionError("%s: %r != %r" % (what, got, want))


def responder():
    r = fw_mdns.Responder(IP, ID, txt=TXT)
    fw_mdns_ctl._build(r, w)
    r.state = "announced"
    return r


r = responder()
check("records", r._me, Message(0, 0x8400, answers=[PTR, SRV, TXR, A, MPTR, NI, NH]).encode())
check("announcement", bytes(w.enc(0, 0x8400, (), (w.me(r)[:4], (), ()))),
      Message(0, 0x8400, answers=[PTR, SRV, TXR, A]).encode())
check("names", [x[1] for x in w.me(r)], [fw_mdns_ctl._wire(x.name.split(".")) for x in (
    PTR, SRV, TXR, A, MPTR, NI, NH)])
check("rdata", [x[5] for x in w.me(r)], [mdns.rdata(x) for x in (
    PTR, SRV, TXR, A, MPTR, NI, NH)])


def sieve(d):  # whether fw_mdns's reader hands packet d on (its test, repeated)
    k = (r.instance, r.host)
    if not d[2] & 0x80:
        k += (r._base[2].split(".")[0], "_services")
    return any(x.encode().lower() in d.lower() for x in k)


def legacy(rs):
    return [R(x.name, x.rtype, x.data, min(x.ttl, 10)) for x in rs]


# (questions, known answers, authority, port, answers, additional, shared: waits)
CASES = [
    ([Q(SVC, 12)], [], [], 5353, [PTR], [SRV, TXR, A], 1),
    ([Q(SVC, 12, unicast=True)], [], [], 5353, [PTR], [SRV, TXR, A], 1),
    ([Q("_SIPMESH-Board._TCP.local", 12)], [], [], 5353, [PTR], [SRV, TXR, A], 1),
    ([Q(META, 12)], [], [], 5353, [MPTR], [], 1),
    ([Q(INST, 33)], [], [], 5353, [SRV], [A], 0),
    ([Q(INST, 16)], [], [], 5353, [TXR], [], 0),
    ([Q(INST, 255)], [], [], 5353, [SRV, TXR], [A], 0),
    ([Q(INST, 28)], [], [], 5353, [NI], [], 0),
    ([Q(HOST, 1)], [], [], 5353, [A], [], 0),
    ([Q(HOST, 255, 255)], [], [], 5353, [A], [], 0),
    ([Q(HOST, 28)], [], [], 5353, [NH], [], 0),
    ([Q(HOST, 1, 3)], [], [], 5353, None, None, 0),
    ([Q("other.local", 1), Q("_http._tcp.local", 12)], [], [], 5353, None, None, 0),
    ([Q(SVC, 12)], [PTR], [], 5353, None, None, 0),
    ([Q(SVC, 12)], [R(SVC, 12, INST, 2249)], [], 5353, [PTR], [SRV, TXR, A], 1),
    ([Q(SVC, 12)], [R(SVC, 12, INST, 2250)], [], 5353, None, None, 0),
    ([Q(INST, 255)], [R(INST, 33, (0, 0, 7381, HOST), 120)], [], 5353, [TXR], [A], 0),
    ([Q(SVC, 12), Q(INST, 33)], [], [], 5353, [PTR, SRV], [TXR, A], 1),
    ([Q(SVC, 12)], [SRV], [], 5353, [PTR], [TXR, A], 1),
    ([Q(SVC, 12)], [], [R(INST, 33, (0, 0, 1, "x.local"), 120)], 5353, [PTR],
     [SRV, TXR, A], 0),
    ([Q(SVC, 12)], [], [], 40000, legacy([PTR]), legacy([SRV, TXR, A]), 0),
    ([Q(HOST, 28)], [], [], 40000, legacy([NH]), [], 0),
]
for i, (qs, known, auth, port, an, ar, wait) in enumerate(CASES):
    q = Message(i + 1, 0, qs, known, auth).encode()
    out = w.on(r, q, port)
    want = None
    if an is not None:
        legacy_q = port != 5353
        want = Message(i + 1 if legacy_q else 0, 0x8400, qs if legacy_q else [], an,
                       additional=ar).encode()
    check("case %d" % i, out and bytes(out[1]), want)
    if out:
        check("case %d delay" % i, (wait and 20 <= out[0] < 120) or out[0], wait)
    # the reader's sieve lets every packet we answer through
    check("case %d sieve" % i, sieve(q), an is not None or i in (11, 13, 15))
check("sieve drops", sieve(Message(0, 0, [Q("_http._tcp.local", 12)]).encode()), False)
check("opcode", w.on(r, b"\x00\x00\x08\x00" + Message(0, 0, [Q(SVC, 12)]).encode()[4:], 5353),
      None)

# conflicts: in a response, another record with our instance or host name
check("response sieve", sieve(Message(0, 0x8400, answers=[R(HOST, 1, OTHER, 120, True)])
                              .encode()), True)
check("response sieve drops", sieve(Message(0, 0x8400, answers=[
    R(SVC, 12, "sm-other." + SVC, 4500)]).encode()), False)
m = w.me(r)
for recs, flags in (([R(HOST, 1, OTHER, 120, True)], 1), ([R(INST, 16, [b"a=b"], 4500)], 2),
                    ([SRV, TXR, A, R(HOST, 47, (HOST, [1, 28]), 120)], 0),
                    ([R(INST, 33, (0, 0, 1, "x.local"), 120), R(HOST, 1, OTHER)], 3),
                    ([R(HOST.upper(), 1, IP)], 0), ([R("x.local", 1, OTHER)], 0)):
    for msg in (Message(0, 0x8400, answers=recs), Message(0, 0x8400, additional=recs)):
        check("conflict flags %r" % flags, w.conflicts(m, w.parse(msg.encode(), None)[2]),
              flags)
check("after announcing, goodbyes and PTR do not conflict",
      w.conflicts(m, w.parse(Message(0, 0x8400, answers=[R(HOST, 1, OTHER, 0), R(
          HOST, 12, "x.local")]).encode(), None)[2], (1, 33, 16)), 0)
check("goodbye of another", w.on(r, Message(0, 0x8400, answers=[R(HOST, 1, OTHER, 0)])
                                  .encode(), 5353), None)
check("still announced", r.state, "announced")

# the parser: what the codec decodes, uncompressed; malformed input raises
# ValueError or IndexError only
zc = Message(0, 0x8400, answers=[PTR, SRV, TXR, A], additional=[NI, NH]).encode()
h, qs, rs = w.parse(zc, None)
check("parse", [(x[0], x[2], x[3], x[4], x[5]) for x in rs],
      [(s, x.rtype, x.rclass | (0x8000 if x.flush else 0), x.ttl, mdns.rdata(x))
       for s, x in ((1, PTR), (1, SRV), (1, TXR), (1, A), (3, NI), (3, NH))])
host = fw_mdns_ctl._wire(HOST.split("."))
check("keep", [x[1] for x in w.parse(zc, (host,))[2]], [host] * 2)
for bad in (zc[:i] for i in range(len(zc))):
    try:
        w.parse(bad, None)
        raise AssertionError("truncated at %d parsed" % len(bad))
    except (ValueError, IndexError):
        n += 1
head = bytes([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
for bad in (b"\xc0\x0c\x00\x0c\x00\x01", b"\xc0\x0e\x00\x00\x0c\x00\x01",
            b"\x01a\xc0\x0c\x00\x0c\x00\x01", b"\x40" + b"x" * 64 + b"\x00\x00\x01\x00\x01",
            b"".join(b"\x3f" + b"x" * 63 for _ in range(4)) + b"\x00\x00\x01\x00\x01",
            zc[12:]):
    try:
        w.parse(head + bad, None)
        raise AssertionError("parsed %r" % bad)
    except (ValueError, IndexError):
        n += 1
seed = 6762
for _ in range(400):
    b = bytearray(zc)
    for _ in range(3):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        b[seed % len(b)] = (seed >> 8) & 0xFF
    try:
        w.parse(bytes(b), None)
    except (ValueError, IndexError):
        pass
    n += 1

# messages sent: goodbye (§10.1); on MicroPython (asyncio.sleep_ms) also three
# probes (§8.1, QU ANY questions, our records unflushed as authority), two
# announcements (§8.3) and two TXT announcements (§8.4)
sent = []


class Sock:
    def sendto(self, b, addr):
        sent.append((bytes(b), addr))


def zero(x):
    return R(x.name, x.rtype, x.data, 0, x.flush)


r._sock = (Sock(), "group")
w.bye(r)
check("goodbye", sent, [(Message(0, 0x8400, answers=[zero(x) for x in (PTR, SRV, TXR, A)])
                         .encode(), "group")])
if sys.implementation.name == "micropython":
    import asyncio

    async def probe_and_announce():
        r = fw_mdns.Responder(IP, ID, txt=TXT)
        r._sock = (Sock(), "group")
        del sent[:]
        await r.start()
        for _ in range(500):  # the second announcement comes 1 s later (§8.3)
            if len(sent) >= 5:
                break
            await asyncio.sleep_ms(10)
        probe = Message(0, 0, [Q(INST, 255, unicast=True), Q(HOST, 255, unicast=True)],
                        authority=[R(x.name, x.rtype, x.data, x.ttl) for x in (SRV, TXR, A)])
        ann = Message(0, 0x8400, answers=[PTR, SRV, TXR, A])
        check("probe, announce", [b for b, _ in sent], [probe.encode()] * 3 + [ann.encode()] * 2)
        del sent[:]
        await r._twice("update", dict(TXT, cfg="7"))
        txt = R(INST, 16, mdns.txt_items(dict(TXT, cfg="7")), 4500, True)
        check("txt update", [b for b, _ in sent], [Message(0, 0x8400, answers=[txt]).encode()] * 2)
        log = []
        r.log = log.append
        w.on(r, Message(0, 0x8400, answers=[R(INST, 33, (0, 0, 1, "x.local"), 120)]).encode(),
             5353)
        check("conflict after announcing", (r.state, log), ("probing", ["mdns: conflict on " + ID]))
        r._task.cancel()
        await asyncio.sleep_ms(10)
        check("only our holds left", (w.users, fw_mdns_ctl.users), (1, 1))

    asyncio.run(probe_and_announce())

# find's readers: TXT strings to a dict as the codec does, instance labels
f = fw_mdns._get("fw_mdns_find")
for items in ([b"v=1", b"kid=00", b"flag", b"V=2", b"=x", b"raw=\xff"], []):
    rd = b"".join(bytes((len(x),)) + x for x in items) or b"\x00"
    check("txt dict", f._txt(rd), mdns.txt_dict(items))
check("labels", f._text(fw_mdns_ctl._wire(["a.b c", "_sipmesh", "_tcp", "local"]), 6),
      ["a.b c"])
for name in ("fw_mdns_find", "fw_mdns_ctl", "fw_mdns_wire"):
    fw_mdns._rel(name)
check("transient parts forgotten", [m for m in sys.modules if m.startswith("fw_mdns_")], [])
check("and emptied", len(w.__dict__), 0)
print("ok", n)
"""


def _wire_check(runtime: list[str], env: dict, tmp_path: Path) -> str:
    script = tmp_path / "wire_check.py"
    script.write_text(WIRE)
    import subprocess

    done = subprocess.run([*runtime, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_wire_module_answers_like_the_codec_on_cpython(tmp_path: Path) -> None:
    """fw_mdns_wire's answers (PTR/SRV/TXT/A/ANY, meta-query, NSEC, §7.1 known
    answers, §6.7 legacy unicast, §6 delays), conflict flags and parser."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(FIRMWARE), os.environ.get("PYTHONPATH", "")]))
    out = _wire_check([sys.executable], env, tmp_path)
    assert out.startswith("ok ") and int(out.split()[1]) > 500, out


@pytest.mark.micropython
def test_wire_module_answers_like_the_codec_on_micropython(tmp_path: Path) -> None:
    lib = unixport.stage_lib(tmp_path / "lib")
    env = unixport.environment([Path(".frozen"), FIRMWARE, lib])
    out = _wire_check(unixport.command([], heapsize="2M"), env, tmp_path)
    assert out.startswith("ok ") and int(out.split()[1]) > 500, out


# ------------------------------------------------------------------ the LAN


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory):
    """Namespaces ctrl (bridge, CTRL_IP), b1 (B1_IP) and b2 (B2_IP); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces with ip netns")
    ns = board_lan.build(f"md{os.getpid() % 100000}", CTRL_IP, {"b1": B1_IP, "b2": B2_IP})
    try:
        ns["lib"] = str(unixport.stage_lib(tmp_path_factory.mktemp("mdns-lib")))
        yield ns
    finally:
        board_lan.remove({k: v for k, v in ns.items() if k != "lib"})


class Proc:
    """A process in a namespace whose stdout lines are awaited with a timeout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []

    async def line(self, prefix: str) -> str:
        """The rest of the next line starting with prefix (others are kept in seen)."""
        async def read() -> str:
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"process ended waiting for {prefix!r}: {self.seen}")
                text = raw.decode(errors="replace").rstrip("\n")
                self.seen.append(text)
                if text.startswith(prefix):
                    return text[len(prefix):].strip()

        return await asyncio.wait_for(read(), WAIT)

    async def json(self) -> dict:
        """The next line that holds a JSON object."""
        await self.line("{")
        return json.loads(self.seen[-1])

    async def event(self, kind: str, name: str | None = None) -> dict:
        """The next zeroconf browser event of kind (for name, if given)."""
        while True:
            ev = await self.json()
            if ev["event"] == kind and (name is None or ev["name"] == name):
                return ev

    def tell(self, line: str) -> None:
        self.proc.stdin.write((line + "\n").encode())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        for stop in (None, self.proc.terminate, self.proc.kill):
            if stop and self.proc.returncode is None:
                stop()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
                return
            except TimeoutError:
                continue


@pytest.fixture
async def procs():
    """Processes a test starts; all ended afterwards, even on failure."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        await p.close()


async def _start(procs: list[Proc], ns: str, *cmd: str, env: dict | None = None) -> Proc:
    p = Proc(await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, *cmd, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT))
    procs.append(p)
    return p


async def _board(procs: list[Proc], lan: dict, where: str, ip: str, instance: str = ID,
                 txt: dict | None = None, heapsize: str = "100K") -> Proc:
    env = unixport.environment([Path(".frozen"), FIRMWARE, Path(lan["lib"])])
    cmd = unixport.command([str(BOARD), ip, instance, json.dumps(txt or TXT)],
                           heapsize=heapsize)
    return await _start(procs, lan[where], *cmd, env=env)


async def _browser(procs: list[Proc], lan: dict) -> Proc:
    zc = await _start(procs, lan["ctrl"], sys.executable, str(ZC), "browse", CTRL_IP, BOARD_TYPE)
    await zc.event("browsing")
    return zc


@pytest.mark.root
@pytest.mark.micropython
async def test_zeroconf_finds_board_sees_txt_update_and_goodbye(lan, procs) -> None:
    """RFC 6762 §8.3 announcement, §8.4 TXT update and §10.1 goodbye, as
    python-zeroconf's browser reports them (Added, Updated, Removed)."""
    zc = await _browser(procs, lan)
    t0 = time.monotonic()
    board = await _board(procs, lan, "b1", B1_IP)
    added = await zc.event("added")
    seen_after = time.monotonic() - t0
    assert added["name"] == f"{ID}.{BOARD_TYPE}"
    assert added["ok"] and added["port"] == 7381 and added["server"] == f"{ID}.local."
    assert added["addresses"] == [B1_IP]
    assert added["txt"] == TXT
    await board.line("announced")

    board.tell("txt " + json.dumps(dict(TXT, state="configured", cfg="7", name="door-1")))
    updated = await zc.event("updated")
    assert updated["txt"] == dict(TXT, state="configured", cfg="7", name="door-1")

    # idle again (zeroconf's queries answered): only fw_mdns stays in the heap
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        board.tell("heap")
        alloc, _, mods = (await board.line("heap")).split()
        if mods == "fw_mdns" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert mods == "fw_mdns" and int(alloc) < IDLE_HEAP, (alloc, mods)

    board.tell("stop")
    await board.line("stopped")
    removed = await zc.event("removed")
    assert removed["name"] == f"{ID}.{BOARD_TYPE}"
    print(f"zeroconf saw the board {seen_after:.2f} s after the board process started; "
          f"idle mDNS heap {alloc} bytes")


@pytest.mark.root
@pytest.mark.micropython
async def test_avahi_lists_the_board_with_its_txt(lan, procs, tmp_path: Path) -> None:
    """An mDNS implementation we did not write resolves the board's service."""
    import judges

    judges.require("dbus-daemon", "dbus")
    judges.require("avahi-daemon")
    judges.require("avahi-browse", "avahi-utils")
    dbus_conf, avahi_conf, env = board_lan.avahi_files(tmp_path, lan["br"])
    bus = await _start(procs, lan["ctrl"], "dbus-daemon", f"--config-file={dbus_conf}",
                       "--nofork", "--print-address")
    await bus.line("unix:path=")
    # A private /run: the host's /run/dbus and /run/avahi-daemon stay untouched.
    avahi = await _start(procs, lan["ctrl"], "unshare", "-m", "sh", "-c",
                         "mount -t tmpfs none /run && exec avahi-daemon -f "
                         f"{avahi_conf} --no-drop-root --no-chroot --no-rlimits", env=env)
    await avahi.line("Server startup complete")
    board = await _board(procs, lan, "b1", B1_IP)
    await board.line("announced")

    resolved: list[str] = []
    for _ in range(5):  # each run asks anew; avahi may still be probing its own names
        out = await asyncio.wait_for(asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lan["ctrl"], "avahi-browse", "-artp", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE), WAIT)
        text, _ = await asyncio.wait_for(out.communicate(), WAIT)
        resolved = [ln for ln in text.decode().splitlines()
                    if ln.startswith("=") and "_sipmesh-board._tcp" in ln]
        if resolved:
            break
    assert resolved, "avahi-browse did not resolve the board"
    fields = resolved[0].split(";")
    assert fields[2:10] == ["IPv4", ID, "_sipmesh-board._tcp", "local", f"{ID}.local", B1_IP,
                            "7381", fields[9]]
    txt = dict(item.strip('"').split("=", 1) for item in fields[9].split('" "'))
    assert txt == TXT
    board.tell("stop")
    await board.line("stopped")
    avahi.proc.terminate()
    bus.proc.terminate()


@pytest.mark.root
@pytest.mark.micropython
async def test_board_finds_the_controller_registered_by_zeroconf(lan, procs) -> None:
    """The board's querier (QU PTR query, §5.4) finds a _sipmesh._tcp service
    that python-zeroconf registered, with SRV port, A address and TXT kid."""
    ctl_txt = {"v": "1", "branch": "branch1", "kid": "00112233aabbccdd"}
    zc = await _start(procs, lan["ctrl"], sys.executable, str(ZC), "register", CTRL_IP,
                      "_sipmesh._tcp.local.", "branch1 controller", "7380", json.dumps(ctl_txt))
    await zc.event("registered")
    board = await _board(procs, lan, "b1", B1_IP)
    await board.line("announced")
    t0 = time.monotonic()
    board.tell("find _sipmesh._tcp 5000")
    found = json.loads(await board.line("found"))
    took = time.monotonic() - t0
    assert found == [{"instance": "branch1 controller", "host": "controller.local",
                      "port": 7380, "ip": CTRL_IP, "txt": ctl_txt}]
    board.tell("stop")
    await board.line("stopped")
    print(f"find() returned after {took:.2f} s")


@pytest.mark.root
@pytest.mark.micropython
async def test_two_boards_with_one_name_end_with_distinct_names(lan, procs) -> None:
    """RFC 6762 §8.1/§9: the second board's probes meet the first board's
    defence and it renames itself "<name>-2"; zeroconf then sees both."""
    zc = await _browser(procs, lan)
    first = await _board(procs, lan, "b1", B1_IP)
    assert (await first.line("announced")).split() == [ID, ID]
    second = await _board(procs, lan, "b2", B2_IP)
    assert (await second.line("announced")).split() == [ID + "-2", ID + "-2"]
    names = {}
    while len(names) < 2:
        ev = await zc.event("added")
        names[ev["name"]] = (ev["server"], ev["addresses"])
    assert names == {
        f"{ID}.{BOARD_TYPE}": (f"{ID}.local.", [B1_IP]),
        f"{ID}-2.{BOARD_TYPE}": (f"{ID}-2.local.", [B2_IP]),
    }
    for b in (first, second):
        b.tell("stop")
        await b.line("stopped")


@pytest.mark.root
@pytest.mark.micropython
async def test_two_boards_probing_at_once_end_with_distinct_names(lan, procs) -> None:
    """Simultaneous probes (§8.2): the loser defers, probes again, meets the
    winner's defence and renames; the two boards never share a name."""
    first = await _board(procs, lan, "b1", B1_IP)
    second = await _board(procs, lan, "b2", B2_IP)
    a = (await first.line("announced")).split()
    b = (await second.line("announced")).split()
    assert a[0] != b[0] and a[1] != b[1]
    assert sorted([a[0], b[0]]) == [ID, ID + "-2"]
    for p in (first, second):
        p.tell("stop")
        await p.line("stopped")


LEGACY = r'''
import json, socket, struct, sys
from sipmesh.proto import mdns
ctrl, host = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ctrl))
s.bind((ctrl, 0))
s.settimeout(20)
svc = "_sipmesh-board._tcp.local"
inst = host + "." + svc
known = mdns.Record(svc, mdns.TYPE_PTR, inst, 4500)
for qid, q, ans in ((1, mdns.Question(svc, mdns.TYPE_PTR), []),
                    (2, mdns.Question(svc, mdns.TYPE_PTR), [known]),
                    (3, mdns.Question(host + ".local", mdns.TYPE_AAAA), [])):
    s.sendto(mdns.Message(qid, 0, [q], ans).encode(), ("224.0.0.251", 5353))
for _ in range(2):
    m = mdns.decode(s.recv(9000))
    print(json.dumps({"id": m.id, "questions": [q.name for q in m.questions],
                      "answers": [[r.name, r.rtype, r.ttl, r.flush, r.data] for r in m.answers],
                      "additional": sorted(r.rtype for r in m.additional)}), flush=True)
'''


@pytest.mark.root
@pytest.mark.micropython
async def test_legacy_unicast_known_answers_and_negative_answers(lan, procs, tmp_path) -> None:
    """A query from a port other than 5353 gets a unicast answer with its id,
    its question and TTL <= 10 (RFC 6762 §6.7); a query holding our PTR as a
    known answer gets none (§7.1); AAAA for the board's host gets an NSEC
    saying only A exists (§6.1)."""
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    board = await _board(procs, lan, "b1", B1_IP)
    await board.line("announced")
    q = await _start(procs, lan["ctrl"], sys.executable, str(script), CTRL_IP, ID)
    first, second = await q.json(), await q.json()
    inst = f"{ID}._sipmesh-board._tcp.local"
    assert first == {"id": 1, "questions": ["_sipmesh-board._tcp.local"],
                     "answers": [["_sipmesh-board._tcp.local", 12, 10, False, inst]],
                     "additional": [1, 16, 33]}
    assert second["id"] == 3  # nothing was sent for id 2
    assert second["answers"] == [[f"{ID}.local", 47, 10, False, [f"{ID}.local", [1]]]]
    board.tell("stop")
    await board.line("stopped")


CONFLICT = r'''
import socket, sys
from sipmesh.proto import mdns
ctrl, host = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ctrl))
s.bind((ctrl, 0))
s.sendto(mdns.Message(0, 0x8400, answers=[mdns.Record(host, mdns.TYPE_A, ctrl, 120, True)])
         .encode(), ("224.0.0.251", 5353))
'''


@pytest.mark.root
@pytest.mark.micropython
async def test_conflict_after_announcing_probes_again(lan, procs, tmp_path) -> None:
    """RFC 6762 §9: a response with another A record for the board's host name,
    seen after announcing, makes the board probe again; nobody defends the name
    (the sender does not answer probes), so it keeps it and announces anew."""
    script = tmp_path / "conflict.py"
    script.write_text(CONFLICT)
    board = await _board(procs, lan, "b1", B1_IP)
    await board.line("announced")
    await _start(procs, lan["ctrl"], sys.executable, str(script), CTRL_IP, f"{ID}.local")
    assert await board.line("log mdns: conflict on") == ID
    assert (await board.line("log mdns announced")).split() == [
        f"{ID}._sipmesh-board._tcp.local", f"{ID}.local"]
    board.tell("stop")
    await board.line("stopped")
