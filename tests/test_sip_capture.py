"""Wireshark's `sip` dissector judges a capture of sipp calling our UA.

tshark captures on loopback while `sipp -sn uac` places calls to our
answering UA (the set-up of test_sip_sipp.py), over UDP and over TCP. The
capture is then read back with the `sip` dissector forced onto our port:

- no packet may be malformed or carry an error-level expert item, and
  `-z expert` must list nothing in the "Malformed" group (warnings included);
- every SIP message of every call must be decoded (INVITE, 180, 200, ACK,
  BYE, 200; a 100 is optional), and every payload byte sent to or from our
  port must belong to a decoded SIP message: a message the dissector
  silently skipped is a failure too.

tshark exits 0 even when packets are malformed, so everything is counted.

A live capture is bounded by two facts seen with tshark 4.0.17:
- tshark prints "Capturing on 'Loopback: lo'" before dumpcap has opened the
  interface: a TCP handshake made right after that line is not captured.
  So the capture counts as started only once tshark has shown a probe
  datagram (sent over and over until it appears, on a marker port that the
  capture filter also lets through).
- Stopping with SIGINT loses what libpcap has not handed to dumpcap yet (the
  last call of 50 was missing). So an end marker datagram is sent after the
  calls and tshark is stopped only once it has shown it; loopback keeps
  order, so every earlier packet is then in the file.
Probes and the end marker are empty UDP datagrams: nothing to dissect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from judges import require
from test_sip_sipp import answering_ua, counters, run_sipp

CALLS = 50
START_TIMEOUT = 30  # seconds for tshark to capture a probe datagram
END_MARKER_TIMEOUT = 30  # seconds for the end marker to reach tshark
PROBLEMS = "_ws.malformed || _ws.expert.severity >= error"

# One call of `sipp -sn uac` answered by answering_ua(): (CSeq method, method or status).
CALL = Counter({
    ("INVITE", "INVITE"): 1, ("INVITE", "180"): 1, ("INVITE", "200"): 1,
    ("ACK", "ACK"): 1, ("BYE", "BYE"): 1, ("BYE", "200"): 1,
})
OPTIONAL = {("INVITE", "100")}


def tshark() -> str:
    return require("tshark")


@contextlib.asynccontextmanager
async def capture(exe: str, port: int | list[int], pcap: Path) -> AsyncIterator[None]:
    """Capture our port(s) (UDP and TCP) into pcap while the block runs.

    Enters once a probe datagram has been captured; leaves once the end
    marker sent after the block has been captured.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:
        marker.bind(("127.0.0.1", 0))
        prober.bind(("127.0.0.1", 0))
        marker_port = marker.getsockname()[1]
        probe_from = str(prober.getsockname()[1]).encode()
        end_from = str(marker_port).encode()
        ports = [port] if isinstance(port, int) else list(port)
        ours = " or ".join(f"udp port {p} or tcp port {p}" for p in ports)
        bpf = f"{ours} or udp port {marker_port}"
        proc = await asyncio.create_subprocess_exec(
            exe, "-i", "lo", "-f", bpf, "-w", str(pcap),
            # -P: also print each captured packet, here only its UDP ports,
            # line-buffered (-l): the probes and the end marker show up there.
            "-P", "-l", "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport",
            stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        seen_probe, seen_end = asyncio.Event(), asyncio.Event()
        stderr: list[str] = []

        async def read_stdout() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                src_dst = line.split()
                if src_dst == [probe_from, end_from]:
                    seen_probe.set()
                elif src_dst == [end_from, end_from]:
                    seen_end.set()

        async def read_stderr() -> None:
            assert proc.stderr is not None
            async for line in proc.stderr:
                stderr.append(line.decode(errors="replace"))

        async def probe() -> None:
            while not seen_probe.is_set() and proc.returncode is None:
                prober.sendto(b"", ("127.0.0.1", marker_port))
                try:  # probe interval while dumpcap opens lo, not a race
                    await asyncio.wait_for(seen_probe.wait(), 0.05)
                except TimeoutError:
                    pass

        readers = [asyncio.create_task(read_stdout()), asyncio.create_task(read_stderr())]
        exited = asyncio.create_task(proc.wait())
        try:
            started = asyncio.create_task(probe())
            await asyncio.wait([started, exited], timeout=START_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if not seen_probe.is_set():
                if proc.returncode is not None:
                    await asyncio.gather(*readers)
                    text = "".join(stderr)
                    if os.geteuid() != 0:
                        pytest.skip(f"tshark cannot capture on lo without root:\n{text}")
                    pytest.fail(f"tshark could not capture on lo (exit {proc.returncode}):\n"
                                + text)
                pytest.fail(f"tshark captured no probe within {START_TIMEOUT} s:\n"
                            + "".join(stderr))
            yield
            marker.sendto(b"", ("127.0.0.1", marker_port))
            try:
                await asyncio.wait_for(seen_end.wait(), END_MARKER_TIMEOUT)
            except TimeoutError:
                pytest.fail(f"tshark did not capture the end marker within "
                            f"{END_MARKER_TIMEOUT} s")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), 30)
                except TimeoutError:
                    proc.kill()
            await exited
            await asyncio.gather(*readers)
    assert proc.returncode == 0, f"tshark exited {proc.returncode}:\n" + "".join(stderr)


def read(exe: str, pcap: Path, port: int, *args: str) -> str:
    """tshark -r pcap with the sip dissector on our port (UDP and TCP), stdout as text."""
    out = subprocess.run(
        [exe, "-r", str(pcap), "-d", f"udp.port=={port},sip", "-d", f"tcp.port=={port},sip",
         *args],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def sip_messages(exe: str, pcap: Path, port: int) -> list[tuple[int, str, str, str]]:
    """(frame, Call-ID, CSeq method, method or status) of every decoded SIP message.

    PDML has one <proto name="sip"> per message, so several messages in one
    TCP segment are counted one by one.
    """
    root = ET.fromstring(read(exe, pcap, port, "-Y", "sip", "-T", "pdml"))
    found = []
    for packet in root.iter("packet"):
        frame = packet.find("proto[@name='frame']/field[@name='frame.number']")
        number = int(frame.get("show", "0")) if frame is not None else 0
        for sip in packet.iter("proto"):
            if sip.get("name") != "sip":
                continue
            fields = {f.get("name"): f.get("show", "") for f in sip.iter("field")}
            kind = fields.get("sip.Method") or fields.get("sip.Status-Code", "?")
            found.append((number, fields.get("sip.Call-ID", "?"),
                          fields.get("sip.CSeq.method", "?"), kind))
    return found


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_capture_of_sipp_calls_has_no_malformed_sip(
        transport: str, tmp_path: Path) -> None:
    exe = tshark()
    name = "udp" if transport == "u1" else "tcp"
    pcap = tmp_path / f"sipp-uac-{name}.pcapng"
    ua = await answering_ua()
    port = ua.transport.ports["udp"]  # TCP listens on the same port number
    try:
        async with capture(exe, port, pcap):
            code, out = await run_sipp(
                "-sn", "uac", "-t", transport, "-i", "127.0.0.1", "-p", "0", "-m", str(CALLS),
                "-r", "50", "-l", "50", f"127.0.0.1:{port}", timeout=60)
            await ua.close()  # inside the capture: the TCP teardown is captured whole
    finally:
        await ua.close()
    assert code == 0, out[-3000:]
    assert counters(out) == {"Successful call": CALLS, "Failed call": 0}, out[-3000:]
    assert ua.calls_answered == CALLS

    # 1. No malformed packet, no error-level expert item.
    expert = read(exe, pcap, port, "-q", "-z", "expert")
    problems = read(exe, pcap, port, "-Y", PROBLEMS).splitlines()
    if problems:
        detail = read(exe, pcap, port, "-Y", PROBLEMS, "-T", "fields", "-e", "frame.number",
                      "-e", "_ws.expert.message", "-E", "occurrence=a")
        pytest.fail(f"{len(problems)} malformed packet(s) in {pcap}:\n" + "\n".join(problems)
                    + f"\n\nexpert items per frame:\n{detail}\n-z expert:\n{expert}")

    # 2. Nothing in the "Malformed" expert group, at any severity.
    malformed = [line for line in expert.splitlines()
                 if re.match(r"\s*\d+\s+Malformed\s", line)]
    assert not malformed, f"-z expert lists Malformed entries:\n{expert}"

    # 3. Every message of every call decoded.
    messages = sip_messages(exe, pcap, port)
    unique = {m[1:] for m in messages}  # a retransmission is the same message again
    calls: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for call_id, cseq_method, kind in unique:
        calls[call_id][(cseq_method, kind)] += 1
    totals: Counter[tuple[str, str]] = sum(calls.values(), Counter())
    decoded = Counter(m[2:] for m in messages)
    summary = (f"{len(messages)} SIP messages decoded {dict(sorted(decoded.items()))}; "
               f"{len(unique)} distinct in {len(calls)} calls")
    assert len(calls) == CALLS, summary
    wrong = {call_id: dict(kinds) for call_id, kinds in calls.items()
             if Counter({k: v for k, v in kinds.items() if k not in OPTIONAL}) != CALL}
    assert not wrong, f"calls missing messages or with extra ones: {wrong}\n{summary}"
    assert totals[("INVITE", "INVITE")] == CALLS
    assert totals[("INVITE", "180")] == CALLS
    assert totals[("INVITE", "200")] + totals[("BYE", "200")] == 2 * CALLS
    assert totals[("ACK", "ACK")] == CALLS
    assert totals[("BYE", "BYE")] == CALLS

    # 4. The whole exchange is in the capture, from the TCP handshake on.
    if name == "tcp":
        syn = read(exe, pcap, port, "-Y",
                   f"tcp.dstport == {port} && tcp.flags.syn == 1 && tcp.flags.ack == 0")
        assert syn.strip(), f"sipp's TCP handshake is not in the capture\n{summary}"

    # 5. No payload on our port left undecoded (silently skipped by the dissector).
    undecoded = read(exe, pcap, port, "-Y",
                     f"(udp.port == {port} && !sip) || "
                     f"(tcp.port == {port} && tcp.len > 0 && !sip && !tcp.reassembled_in)")
    assert not undecoded.strip(), f"payload not decoded as SIP:\n{undecoded}\n{summary}"
    print(summary)
