"""`sipmesh sip lint`: judge raw SIP messages as captured, byte for byte.

The tool an administrator runs on a message a provider rejected: every
problem the parser finds, with where it is, instead of a guess.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sipmesh.sip.errors import SIPParseError
from sipmesh.sip.message import Message
from sipmesh.sip.parser import parse_message


@dataclass
class Problem:
    """One problem in a message: the status a server would answer and why."""

    status: int
    reason: str
    header: str | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = []
        if self.header:
            where.append(f"header {self.header}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{self.status} {self.reason}" + (f" ({', '.join(where)})" if where else "")


@dataclass
class Report:
    """The verdict on one message."""

    source: str
    kind: str = "unknown"
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem(e: SIPParseError) -> Problem:
    return Problem(e.status, e.reason, e.header, e.offset)


def lint_bytes(data: bytes, source: str = "-") -> Report:
    """Parse data as one datagram message and list every problem found."""
    report = Report(source)
    msg: object | None
    try:
        msg = parse_message(data)
    except SIPParseError as e:
        report.problems.append(_problem(e))
        msg = e.message
    if isinstance(msg, Message):
        report.kind = f"request {msg.method}" if hasattr(msg, "method") else (
            f"response {msg.status}")
        seen = {(p.reason, p.header) for p in report.problems}
        for e in msg.validate():
            if (e.reason, e.header) not in seen:
                report.problems.append(_problem(e))
    return report


def run(paths: list[str], as_json: bool) -> int:
    """Lint each path ('-' is standard input); return the exit status (1 if any is bad)."""
    reports = []
    for path in paths:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        reports.append(lint_bytes(data, path))
    if as_json:
        out = [
            {"source": r.source, "kind": r.kind, "ok": r.ok,
             "problems": [asdict(p) for p in r.problems]}
            for r in reports
        ]
        print(json.dumps(out, indent=2))
    else:
        for r in reports:
            if r.ok:
                print(f"{r.source}: ok ({r.kind})")
            for p in r.problems:
                print(f"{r.source}: {p}")
    return 0 if all(r.ok for r in reports) else 1
