"""The controller's end of a board's management line (USB serial).

Frames are those of docs/framing.md (`sipmesh.proto.frame`), payloads the
CBOR maps of `sipmesh.proto.mgmt`. A request carries a sequence number and
the answer is the RESPONSE frame with the same number; EVENT and LOG
frames the board sends meanwhile (its boot event, log lines) are handed to
a callback, and anything else on the line (REPL text, garbage, a reply to
an older request) is skipped, so a line that starts mid-stream still works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import serial

from sipmesh.proto import frame, mgmt

#: on_frame(frame) for every EVENT or LOG frame received while waiting.
FrameCallback = Callable[[frame.Frame], None]

# The board answers in milliseconds; this only bounds how long one read
# blocks, so a deadline is checked often.
_POLL = 0.05


IDEMPOTENT = frozenset(("hello", "info", "get", "logs", "ping"))
RESEND = 1.0


class SerialError(Exception):
    """The one error of the management line.

    ``code`` is the board's error code (one of ``mgmt.CODES``) when the
    board answered with an error, else None: the port is missing, the board
    did not answer, or its answer was not a response.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def answered(self) -> bool:
        """True when the board itself refused the request."""
        return self.code is not None and self.code != mgmt.BAD_RESPONSE


class SerialLink:
    """One open management line to a board.

    Sends one 0x00 on open (docs/framing.md: closes whatever partial frame
    the board holds). ``timeout`` is the default wait for each answer.
    """

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        timeout: float = 5.0,
        *,
        on_frame: FrameCallback | None = None,
    ) -> None:
        self.port_name = port
        self.timeout = timeout
        self.on_frame = on_frame
        self._decoder = frame.FrameDecoder()
        self._seq = 0
        try:
            self._port = serial.Serial(port, baud, timeout=_POLL, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise SerialError(f"cannot open {port}: {e}") from e
        self._write(b"\x00")

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as e:
            raise SerialError(f"cannot write to {self.port_name}: {e}") from e

    def _read(self) -> bytes:
        try:
            return self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise SerialError(f"cannot read from {self.port_name}: {e}") from e

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _frame(self, payload: bytes) -> tuple[int, bytes]:
        """(seq, wire bytes) of the next request frame, holding no 0x03 and no 0x04
        when a sequence number can make it so.

        The first request may reach a board that is still booting, whose line
        is the REPL's until the agent takes it: there 0x03 is Ctrl-C (it
        would stop main.py) and 0x04 Ctrl-D (a soft reset). With a sequence
        number below 256 every frame would open with 0x03, the COBS code of
        the header's first block. A short request (hello, info) always finds
        a number that keeps both bytes out; a long one (provision, set) comes
        after an answer, to an agent that owns the line, and goes as it is.
        """
        first = None
        for _ in range(512):
            seq = self._next_seq()
            if seq < 0x100:
                continue
            data = frame.encode(frame.REQUEST, seq, payload)
            if 3 not in data and 4 not in data:
                return seq, data
            if first is None:
                first = seq, data
            if len(data) > 64:
                break
        assert first is not None
        return first

    def request(self, op: str, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send ``{"op": op, **args}`` and return the board's ok answer as a dict.

        Raises SerialError: with the board's ``code`` when it answered an
        error, with code None when no answer came within the timeout.
        """
        try:
            payload = mgmt.request(op, **args)
        except mgmt.MgmtError as e:
            raise SerialError(f"bad request {op}: {e.message}", e.code) from e
        seq, data = self._frame(payload)
        self._write(data)
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        # A board that is still booting loses what arrives before its agent
        # opens the line: questions that change nothing are asked again.
        resend = time.monotonic() + RESEND if op in IDEMPOTENT else None
        while True:
            if resend is not None and time.monotonic() >= resend:
                self._write(b"\x00" + data)
                resend = time.monotonic() + RESEND
            for f in self._decoder.feed(self._read()):
                if f.type == frame.RESPONSE and f.seq == seq:
                    try:
                        return mgmt.parse_response(f.payload)
                    except mgmt.MgmtError as e:
                        raise SerialError(f"{op}: {e.message}", e.code) from e
                if f.type in (frame.EVENT, frame.LOG) and self.on_frame is not None:
                    self.on_frame(f)
            if time.monotonic() >= deadline:
                raise SerialError(
                    f"no answer from the board on {self.port_name} within {wait:g}s"
                )

    def poll(self, duration: float) -> None:
        """Read for ``duration`` seconds, handing EVENT/LOG frames to the callback."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            for f in self._decoder.feed(self._read()):
                if f.type in (frame.EVENT, frame.LOG) and self.on_frame is not None:
                    self.on_frame(f)

    def close(self) -> None:
        """Close the port (the board keeps running)."""
        self._port.close()
