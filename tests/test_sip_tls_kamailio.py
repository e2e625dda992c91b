"""Kamailio (a SIP server we did not write) as the judge of our TLS transport.

Both directions of OPTIONS over TLS, with Kamailio 5.6 as the other end:

- client side: our UA opens a TLS connection to Kamailio, verifying
  Kamailio's self-signed certificate against that certificate as the only
  CA, sends OPTIONS addressed to Kamailio itself and gets Kamailio's 200;
- server side: a plain UDP socket sends Kamailio an OPTIONS whose
  Request-URI is ``sip:sipmesh@127.0.0.1:OURPORT;transport=tls``; Kamailio
  relays it over TLS to our UA's TLS server, our UA answers 200 with its
  default OPTIONS handler, and the 200 comes back through Kamailio over UDP.

Kamailio runs as a child of the test on free ports, is waited for by
connecting to its TLS port, and is always stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from judges import require, self_signed_cert

from sipmesh.sip.message import Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.transport import Peer
from sipmesh.sip.ua import Incoming, UserAgent

TIMEOUT = 20.0
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""

KAMAILIO_CFG = """\
#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
listen=udp:127.0.0.1:{udp}
listen=tls:127.0.0.1:{tls}
mpath="{mpath}"

loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "pv.so"

modparam("tls", "config", "{tls_cfg}")

request_route {{
    xlog("L_INFO", "judge: $rm $ru from $proto:$si:$sp\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    record_route();
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


def kamailio() -> str:
    exe = require("kamailio", "kamailio", "/usr/sbin/kamailio")
    if not os.path.exists(os.path.join(MODULES, "tls.so")):
        require("kamailio-tls.so", "kamailio-tls-modules")
    return exe


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies without its teardown (Linux)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Kamailio:
    udp: int
    tls: int
    cert: Path
    key: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(proc: subprocess.Popen, judge: Kamailio) -> None:
    """Until Kamailio accepts TCP connections on its TLS port (or dies)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"kamailio exited with {proc.returncode}:\n{judge.log_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", judge.tls), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # poll interval while Kamailio starts, not a race
    pytest.fail(f"kamailio did not listen on TLS port {judge.tls}:\n{judge.log_text()[-4000:]}")


@pytest.fixture(scope="module")
def judge() -> Iterator[Kamailio]:
    exe = kamailio()
    rundir = Path(tempfile.mkdtemp(prefix="sipmesh-kamailio-"))
    proc: subprocess.Popen | None = None
    try:
        key, cert = self_signed_cert(rundir)
        tls_cfg = rundir / "tls.cfg"
        tls_cfg.write_text(TLS_CFG.format(key=key, cert=cert))
        judge = Kamailio(free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM),
                         cert, key, rundir / "kamailio.log")
        cfg = rundir / "kamailio.cfg"
        cfg.write_text(KAMAILIO_CFG.format(udp=judge.udp, tls=judge.tls, mpath=MODULES,
                                           tls_cfg=tls_cfg))
        check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        with open(judge.log, "wb") as log:
            proc = subprocess.Popen(
                [exe, "-DD", "-E", "-f", str(cfg), "-Y", str(rundir),
                 "-P", str(rundir / "kamailio.pid"), "-m", "64", "-M", "8"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        wait_ready(proc, judge)
        text = judge.log_text()
        assert "tls support is disabled" not in text, text[-4000:]
        yield judge
        assert proc.poll() is None, f"kamailio died during the tests:\n{judge.log_text()[-4000:]}"
        assert "tls support is disabled" not in judge.log_text()
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # -DD: this is the main process
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(rundir, ignore_errors=True)


def server_context(judge: Kamailio) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(judge.cert, judge.key)
    return ctx


async def tls_ua(judge: Kamailio, client_ssl: ssl.SSLContext) -> UserAgent:
    ua = UserAgent("127.0.0.1", user="sipmesh", client_ssl=client_ssl)
    await ua.listen(udp=0, tcp=None, tls=0, tls_context=server_context(judge))
    return ua


async def test_our_tls_client_gets_200_from_kamailio(judge: Kamailio) -> None:
    # Kamailio's self-signed certificate is the only CA: our side really verifies it.
    client_ctx = ssl.create_default_context(cafile=str(judge.cert))
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname
    ua = await tls_ua(judge, client_ctx)
    dest = Peer("tls", "127.0.0.1", judge.tls)
    try:
        req = ua.new_request("OPTIONS", f"sip:kamailio@127.0.0.1:{judge.tls};transport=tls")
        resp = await asyncio.wait_for(ua.request(req, dest), TIMEOUT)
        conn = ua.transport.connection(dest)
        assert conn is not None and conn.transport is not None
        peercert = conn.transport.get_extra_info("peercert")
    finally:
        await ua.close()
    log = judge.log_text()
    assert resp.status == 200, f"{resp.status} {resp.reason}\n{log[-4000:]}"
    assert resp.call_id == req.call_id
    assert "kamailio" in (resp.get("Server") or "").lower(), resp.to_bytes().decode()
    assert (resp.top_via is not None and resp.top_via.transport.upper() == "TLS"
            and resp.top_via.port == ua.transport.ports["tls"])
    assert peercert and ("IP Address", "127.0.0.1") in peercert.get("subjectAltName", ())
    assert f"judge: OPTIONS sip:kamailio@127.0.0.1:{judge.tls};transport=tls from tls:" in log


async def test_our_tls_client_refuses_a_certificate_it_cannot_verify(judge: Kamailio) -> None:
    """The same request with the system CAs only: the handshake must fail (503, §8.1.3.1)."""
    ua = await tls_ua(judge, ssl.create_default_context())
    try:
        req = ua.new_request("OPTIONS", f"sip:kamailio@127.0.0.1:{judge.tls};transport=tls")
        resp = await asyncio.wait_for(
            ua.request(req, Peer("tls", "127.0.0.1", judge.tls)), TIMEOUT)
    finally:
        await ua.close()
    assert resp.status == 503


class UDPSender(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        msg = parse_message(data)
        if isinstance(msg, Response):
            self.responses.put_nowait(msg)


async def test_kamailio_relays_options_over_tls_to_our_server(judge: Kamailio) -> None:
    ua = await tls_ua(judge, ssl.create_default_context(cafile=str(judge.cert)))
    seen: list[Peer] = []
    default_options = ua.handlers["OPTIONS"]

    def on_options(incoming: Incoming) -> None:
        seen.append(incoming.peer)
        default_options(incoming)  # 200 with Allow and Accept

    ua.on("OPTIONS", on_options)
    loop = asyncio.get_running_loop()
    sock, sender = await loop.create_datagram_endpoint(UDPSender, local_addr=("127.0.0.1", 0))
    cport = sock.get_extra_info("sockname")[1]
    our_tls = ua.transport.ports["tls"]
    target = f"sip:sipmesh@127.0.0.1:{our_tls};transport=tls"
    tag = secrets.token_hex(8)  # a new transaction for Kamailio, never a retransmission
    call_id = f"kamailio-relay-{tag}@127.0.0.1"
    raw = (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{cport};rport;branch=z9hG4bK{tag}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <{target}>\r\n"
        f"From: <sip:probe@127.0.0.1:{cport}>;tag={tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    try:
        sock.sendto(raw, ("127.0.0.1", judge.udp))
        while True:
            resp = await asyncio.wait_for(sender.responses.get(), TIMEOUT)
            if resp.status >= 200:
                break
        # Our 200 went back on the connection Kamailio opened (no SNI, no new connection
        # from us to Kamailio's TLS port, although its Via names that port).
        assert ua.transport.connection(Peer("tls", "127.0.0.1", judge.tls)) is None
    except TimeoutError:
        pytest.fail(f"no final answer through Kamailio:\n{judge.log_text()[-4000:]}")
    finally:
        sock.close()
        await ua.close()
    assert resp.status == 200, f"{resp.status} {resp.reason}\n{judge.log_text()[-4000:]}"
    assert resp.call_id == call_id
    # Our UA answered (Kamailio's own 200 would carry no Allow), and over TLS.
    assert "OPTIONS" in resp.allow and resp.get("Accept") == "application/sdp"
    assert len(seen) == 1 and seen[0].transport == "tls" and seen[0].host == "127.0.0.1", seen
    # The response went back down the Vias: Kamailio's was removed, ours is the only one.
    vias = resp.via
    assert len(vias) == 1 and vias[0].transport.upper() == "UDP" and vias[0].port == cport
