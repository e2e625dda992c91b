"""Wireshark's RELOAD dissectors judge messages encoded by sipmesh.proto.reload.

A client sends signed-looking RELOAD messages (cert_hash and
cert_hash_node_id identities, a fake 64-byte Ed25519 signature) in DATA
frames over a real TCP connection on loopback; the server answers each with
an ACK frame built by the same codec. tshark captures the exchange (started
and stopped with the probe and end-marker datagrams of test_sip_capture.py)
and reads it back with `-d tcp.port==P,reload-framing`:

- no packet may be malformed or carry an error-level expert item;
- every message_code sent must be decoded, once per message;
- every DATA and ACK frame is decoded as a frame of its type.

The dissector mis-reads a second frame in the same TCP segment (a known
limitation, see wireshark-checks.md), so the client sets TCP_NODELAY and
waits for each ACK before the next frame; the test then checks that every
segment carried exactly one frame, so that limitation cannot hide a bug.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections import Counter
from pathlib import Path

from judges import require
from test_sip_capture import capture

from sipmesh.proto import reload as R

PROBLEMS = "_ws.malformed || _ws.expert.severity >= error"
NODE_A = bytes(range(16))
NODE_B = bytes(range(16, 32))
OVERLAY = 0x2B7E1516


def _identity(i: int) -> R.SignerIdentity:
    kind = R.ID_CERT_HASH if i % 2 == 0 else R.ID_CERT_HASH_NODE_ID
    return R.SignerIdentity(kind, R.HASH_SHA256, bytes([i]) * 32)


def messages() -> list[R.Message]:
    """Requests and answers whose bodies are valid for their message codes."""
    bodies = [
        (R.PING_REQ, R.PingReq(b"\x00" * 8).encode()),
        (R.PING_ANS, R.PingAns(0x0123456789ABCDEF, 1_700_000_000_000).encode()),
        # FetchReq: ResourceId resource<0..255>, StoredDataSpecifier specifiers<0..2^16-1>
        (R.FETCH_REQ, bytes([4]) + b"\xde\xad\xbe\xef" + b"\x00\x00"),
        # LeaveReq: NodeId leaving_peer_id, opaque overlay_specific_data<0..2^16-1>
        (R.LEAVE_REQ, NODE_A + b"\x00\x00"),
        (R.ERROR, R.ErrorResponse(R.ERROR_NOT_FOUND, b"no such resource").encode()),
        (R.ERROR, R.ErrorResponse(R.ERROR_INVALID_MESSAGE, b"").encode()),
    ]
    out = []
    for i, (code, body) in enumerate(bodies):
        dests = [R.Destination.node(NODE_B)]
        if code == R.FETCH_REQ:
            dests = [R.Destination.resource(b"\xde\xad\xbe\xef")]
        via = [R.Destination.node(NODE_A)] if i % 3 == 1 else []
        header = R.ForwardingHeader(OVERLAY, 0x1000 + i, dests, via=via, configuration_sequence=1)
        sig = R.Signature(_identity(i), bytes([0xA0 + i]) * 64)
        out.append(R.Message(header, R.MessageContents(code, body), R.SecurityBlock(sig)))
    return out


async def exchange(port_holder: list[int], wires: list[bytes]) -> None:
    """Send each DATA frame in its own segment and wait for its ACK."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dec = R.FrameDecoder()
        mask = 0
        while chunk := await reader.read(65536):
            for frame in dec.feed(chunk):
                assert isinstance(frame, R.DataFrame)
                received.append(frame.message)
                writer.write(R.encode_ack_frame(frame.sequence, mask))
                await writer.drain()
                mask = ((mask << 1) | 1) & 0xFFFFFFFF
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port_holder[0])
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_holder[0])
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dec = R.FrameDecoder()
        for seq, wire in enumerate(wires):
            writer.write(R.encode_data_frame(seq, wire))
            await writer.drain()
            acks: list = []
            while not acks:
                acks = dec.feed(await asyncio.wait_for(reader.read(65536), 10))
            assert acks == [R.AckFrame(seq, (1 << seq) - 1 if seq else 0)]
        writer.close()
        await writer.wait_closed()
    assert received == wires


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(exe: str, pcap: Path, port: int, *args: str) -> str:
    out = subprocess.run(
        [exe, "-r", str(pcap), "-d", f"tcp.port=={port},reload-framing", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_reload_messages_decode_cleanly(tmp_path: Path) -> None:
    exe = require("tshark")
    msgs = messages()
    wires = [m.encode() for m in msgs]
    for w in wires:  # the codec's own view first
        assert R.decode_message(w).encode() == w
    port = _free_port()
    pcap = tmp_path / "reload.pcap"
    async with capture(exe, port, pcap):
        await exchange([port], wires)

    problems = _read(exe, pcap, port, "-Y", PROBLEMS)
    assert problems.strip() == "", "malformed or error-level packets:\n" + problems

    # One frame per TCP segment, in both directions.
    seg = _read(exe, pcap, port, "-Y", f"tcp.len > 0 && tcp.port == {port}",
                "-T", "fields", "-e", "tcp.dstport", "-e", "tcp.len")
    rows = [line.split() for line in seg.splitlines() if line.strip()]
    to_server = [int(n) for dst, n in rows if int(dst) == port]
    to_client = [int(n) for dst, n in rows if int(dst) != port]
    assert to_server == [8 + len(w) for w in wires], to_server
    assert to_client == [9] * len(wires), to_client

    codes = _read(exe, pcap, port, "-Y", "reload", "-T", "fields", "-e", "reload.message.code")
    got = Counter(int(c, 0) for c in codes.split())
    assert got == Counter(m.contents.code for m in msgs), got

    ftypes = _read(exe, pcap, port, "-Y", "reload_framing.type", "-T", "fields",
                   "-e", "reload_framing.type")
    assert Counter(ftypes.split()) == Counter({"128": len(wires), "129": len(wires)}), ftypes

    tids = _read(exe, pcap, port, "-Y", "reload", "-T", "fields",
                 "-e", "reload.forwarding.trans_id")
    assert sorted(int(t, 0) for t in tids.split()) == [0x1000 + i for i in range(len(msgs))]
