"""SIP speed: sipmesh.sip vs sippy and pyVoIP, on CPython, in one run.

Parse section: for a ~900-byte INVITE with SDP and a 200 OK to REGISTER
(bench/sip_samples.py), the rate of

- ours LAZY: ``parse_message`` plus what a proxy routes on (start line,
  Call-ID, CSeq, top Via branch); sippy's lazy path is constructing
  ``SipRequest``/``SipResponse`` (header bodies left unparsed);
- ours FULL: ``parse_message`` plus ``validate()`` (every known header and
  the Request-URI parsed) and the body read as bytes; sippy's full parse
  forces every header body and the SDP; pyVoIP parses everything when
  ``SIPMessage`` is constructed;
- serialization of a parsed message, and parse + serialize together.

It prints rates, microseconds per message and ratios ours/anchor, and
checks the goals of the issue (FULL >= 3x sippy full, LAZY >= sippy lazy).

The script is built from sections (``SECTIONS``): each is a function that
measures and returns figures, and one that formats them. Add a section
(the call rate, say) by appending to ``SECTIONS``; ``--only NAME`` runs one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from harness import HERE, best_rate
from sip_load import load_figures, report_load
from sippy.SipRequest import SipRequest
from sippy.SipResponse import SipResponse

from sipmesh.sip.message import Request
from sipmesh.sip.parser import parse_message

sys.path.insert(0, str(HERE))
import sip_samples  # noqa: E402

FULL_GOAL = 3.0  # ours FULL / sippy full
LAZY_GOAL = 1.0  # ours LAZY / sippy lazy


def _pyvoip_message() -> type:
    """pyVoIP's SIPMessage class.

    pyVoIP 1.6.8 cannot be imported starting from pyVoIP.SIP: SIP.py imports
    pyVoIP.VoIP, which needs SIP.SIPMessage before SIP.py has defined it
    (AttributeError: partially initialized module 'pyVoIP.SIP'). Importing
    pyVoIP.VoIP first, as its phone API does, works.
    """
    import pyVoIP.VoIP  # noqa: F401
    from pyVoIP.SIP import SIPMessage

    return SIPMessage


# --- the operations, one function per implementation and path --------------


def ours_lazy(raw: bytes) -> object:
    """What a proxy needs to route: start line, Call-ID, CSeq, top Via branch."""
    msg = parse_message(raw)
    if isinstance(msg, Request):
        start: tuple[object, ...] = (msg.method, msg.uri_text)
    else:
        start = (msg.status, msg.reason)
    top = msg.top_via
    return start, msg.call_id, msg.cseq, top.branch if top else None


def ours_full(raw: bytes) -> object:
    """Every known header and the Request-URI parsed and checked; body as bytes (no SDP parser)."""
    msg = parse_message(raw)
    return msg.validate(), msg.body


def ours_parse_serialize(raw: bytes) -> bytes:
    return parse_message(raw).to_bytes()


def sippy_lazy(raw: bytes) -> object:
    """sippy's constructor: start line (Request-URI included) parsed, header bodies kept as text.

    sippy takes str; its transaction manager decodes each datagram first, so
    the decode is counted.
    """
    text = raw.decode()
    if text.startswith("SIP/"):
        return SipResponse(buf=text)
    return SipRequest(buf=text)


def sippy_lazy_route(raw: bytes) -> object:
    """The same reads as ours LAZY, on top of sippy's constructor."""
    msg = sippy_lazy(raw)
    start = (msg.method, msg.ruri) if isinstance(msg, SipRequest) else (msg.scode, msg.reason)
    return (start, str(msg.getHFBody("call-id")), msg.getHFBody("cseq").getCSeq(),
            msg.getHFBody("via").getBranch())


def sippy_full_headers(raw: bytes) -> object:
    """sippy's constructor, then every header body parsed; the body left as text."""
    msg = sippy_lazy(raw)
    for header in msg.headers:
        header.getBody()
    return msg


def sippy_full(raw: bytes) -> object:
    """Every header body parsed (Content-Type and Content-Length are parsed by the
    constructor already), then the body: MsgBody.parse() builds an SdpBody."""
    msg = sippy_full_headers(raw)
    if msg.body is not None:
        msg.body.parse()
    return msg


def sippy_serialize(msg: SipRequest | SipResponse) -> bytes:
    return str(msg).encode()


def sippy_parse_serialize(raw: bytes) -> bytes:
    return str(sippy_lazy(raw)).encode()


# --- parse section ----------------------------------------------------------


def _check(key: str, raw: bytes, pyvoip: type) -> None:
    """Every parser must read the sample, and read the same routing fields."""
    msg = parse_message(raw)
    problems = msg.validate()
    if problems:
        raise SystemExit(f"{key}: our validate() reports {problems}")
    if msg.to_bytes() != raw:
        raise SystemExit(f"{key}: our to_bytes() does not give back the input")
    _, call_id, cseq, branch = ours_lazy(raw)
    _, s_call_id, s_cseq, s_branch = sippy_lazy_route(raw)
    if (str(call_id), cseq.seq, branch) != (s_call_id, s_cseq[0], s_branch):
        raise SystemExit(f"{key}: sippy reads other routing fields than ours")
    full = sippy_full(raw)
    if full.body is not None and type(full.body.content).__name__ != "SdpBody":
        raise SystemExit(f"{key}: sippy did not parse the SDP")
    p = pyvoip(raw)
    if p.headers["Via"][0].get("branch") != branch or p.headers["Call-ID"] != call_id:
        raise SystemExit(f"{key}: pyVoIP reads other routing fields than ours")
    if msg.body and not p.body.get("m"):
        raise SystemExit(f"{key}: pyVoIP did not parse the SDP")


def parse_figures() -> dict[str, float]:
    """Rates (calls/s) of every operation on every sample, plus sizes and flags."""
    pyvoip = _pyvoip_message()
    out: dict[str, float] = {}
    for key, (_, raw) in sip_samples.MESSAGES.items():
        _check(key, raw, pyvoip)
        ours_msg = parse_message(raw)
        sippy_msg = sippy_lazy(raw)
        out[f"{key}.size"] = len(raw)
        out[f"{key}.body_size"] = len(ours_msg.body)
        out[f"{key}.sippy.serialize_identical"] = float(sippy_serialize(sippy_msg) == raw)
        out[f"{key}.ours.lazy"] = best_rate(lambda r=raw: ours_lazy(r))
        out[f"{key}.ours.full"] = best_rate(lambda r=raw: ours_full(r))
        out[f"{key}.ours.serialize"] = best_rate(lambda m=ours_msg: m.to_bytes())
        out[f"{key}.ours.parse_serialize"] = best_rate(lambda r=raw: ours_parse_serialize(r))
        out[f"{key}.sippy.lazy"] = best_rate(lambda r=raw: sippy_lazy(r))
        out[f"{key}.sippy.lazy_route"] = best_rate(lambda r=raw: sippy_lazy_route(r))
        out[f"{key}.sippy.full"] = best_rate(lambda r=raw: sippy_full(r))
        if ours_msg.body:
            out[f"{key}.sippy.full_headers"] = best_rate(lambda r=raw: sippy_full_headers(r))
        out[f"{key}.sippy.serialize"] = best_rate(lambda m=sippy_msg: sippy_serialize(m))
        out[f"{key}.sippy.parse_serialize"] = best_rate(lambda r=raw: sippy_parse_serialize(r))
        out[f"{key}.pyvoip.full"] = best_rate(lambda r=raw, c=pyvoip: c(r))
    return out


# (label, our op, sippy op or None, pyVoIP op or None)
ROWS = [
    ("LAZY (route fields)", "lazy", "lazy", None),
    ("LAZY, sippy same reads", "lazy", "lazy_route", None),
    ("FULL", "full", "full", "full"),
    ("FULL, sippy SDP as text", "full", "full_headers", None),
    ("serialize", "serialize", "serialize", None),
    ("parse+serialize", "parse_serialize", "parse_serialize", None),
]


def _cells(ours: float, theirs: float | None) -> str:
    if theirs is None:
        return f"{'-':>9} {'-':>7} {'-':>6}"
    return f"{theirs:>9,.0f} {1e6 / theirs:>7.1f} {ours / theirs:>6.2f}"


def _goal(label: str, what: str, ratio: float, goal: float) -> str:
    head = f"  {label:<18} {what}: ours/sippy = {ratio:.2f} (goal >= {goal:g}):"
    if ratio >= goal:
        return f"{head} goal met"
    return (f"{head} goal missed by {(1 - ratio / goal) * 100:.0f}% "
            f"(ours must get {goal / ratio:.2f}x faster)")


def report_parse(figs: dict[str, float]) -> str:
    lines = [
        f"SIP parsing: sipmesh.sip vs sippy {version('sippy')} and pyVoIP {version('pyVoIP')}; "
        f"CPython {platform.python_version()} ({platform.machine()})",
        "rates are calls/s (best of 5 timeit runs of >= 0.2 s), us = microseconds per call",
        "",
        f"{'message':<18} {'op':<24} {'ours/s':>9} {'ours us':>7} "
        f"{'sippy/s':>9} {'sippy us':>7} {'o/sip':>6} "
        f"{'pyVoIP/s':>9} {'pyV us':>7} {'o/pyV':>6}",
    ]
    for key, (label, _) in sip_samples.MESSAGES.items():
        for row_label, ours_op, sippy_op, pyvoip_op in ROWS:
            sippy = figs.get(f"{key}.sippy.{sippy_op}") if sippy_op else None
            if sippy_op and sippy is None:
                continue  # no body: the row would repeat FULL
            ours = figs[f"{key}.ours.{ours_op}"]
            pyvoip = figs[f"{key}.pyvoip.{pyvoip_op}"] if pyvoip_op else None
            lines.append(f"{label:<18} {row_label:<24} {ours:>9,.0f} {1e6 / ours:>7.1f} "
                         f"{_cells(ours, sippy)} {_cells(ours, pyvoip)}")
            label = ""
        same = "byte-identical" if figs[f"{key}.sippy.serialize_identical"] else "not identical"
        lines.append(f"{'':<18} {int(figs[key + '.size'])} bytes "
                     f"({int(figs[key + '.body_size'])} of body); "
                     f"serialized: ours byte-identical, sippy {same}")
    lines += ["", "Goals (issue): ours FULL >= 3x sippy full parse; "
              "ours LAZY at least as fast as sippy lazy (constructor only):"]
    for key, (label, _) in sip_samples.MESSAGES.items():
        lines.append(_goal(label, "FULL", figs[f"{key}.ours.full"] / figs[f"{key}.sippy.full"],
                           FULL_GOAL))
        lines.append(_goal(label, "LAZY", figs[f"{key}.ours.lazy"] / figs[f"{key}.sippy.lazy"],
                           LAZY_GOAL))
    lines += [
        "",
        "What each path does:",
        "  ours LAZY: parse_message() (start line and header rows split, Content-Length read),",
        "    then Call-ID, CSeq and the top Via parsed and its branch read; the",
        "    Request-URI stays text.",
        "  ours FULL: parse_message() + validate(): every known header and the Request-URI",
        "    parsed and checked; the body is read as bytes. We do not parse SDP yet, so",
        "    on the INVITE ours FULL does less than sippy full and pyVoIP, which parse the",
        "    SDP; the 'sippy SDP as text' row compares header work only.",
        "  sippy lazy: SipRequest/SipResponse(buf=raw.decode()): the start line (Request-URI",
        "    included), Content-Length and Content-Type parsed, other header bodies kept as",
        "    text (comma lists such as Via or Contact split into one object each).",
        "    The decode is counted: sippy takes str, its transaction manager decodes first.",
        "  sippy same reads: lazy + getHFBody() of Call-ID, CSeq and the top Via's branch.",
        "  sippy full: lazy + header.getBody() on every header (parses each body) +",
        "    msg.body.parse() (MsgBody -> SdpBody).",
        "  pyVoIP: SIPMessage(raw) parses everything at construction, to dicts and strings",
        "    (Contact, Max-Forwards, Expires stay text; no URI parser; no checks).",
        "    It has no serializer (it keeps the raw bytes), hence no serialize rows.",
        "  serialize: ours to_bytes() of a parsed message; sippy str(msg).encode() of a",
        "    message from its constructor (unparsed bodies are written back as text).",
    ]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------

Section = tuple[str, Callable[[], dict[str, float]], Callable[[dict[str, float]], str]]
SECTIONS: list[Section] = [
    ("parse", parse_figures, report_parse),
    ("load", load_figures, report_load),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    parser.add_argument("--only", choices=[name for name, _, _ in SECTIONS],
                        help="run one section only")
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, float]] = {}
    reports = []
    for name, measure, report in SECTIONS:
        if args.only and name != args.only:
            continue
        figures[name] = measure()
        reports.append(report(figures[name]))
    print("\n\n".join(reports))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
