"""What changed between two trunk configurations, in sentences an operator reads.

A provider publishes a new capability set (RFC 10006 §5 polling, §8); before
it replaces the one in force, ``sipmesh`` logs and shows what it changes.
One sentence per change; passwords are never printed, only that one
changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from sipmesh.autopeer.trunk import CALLER_HEADERS, DTMF_MODES
from sipmesh.autopeer.trunk_config import TrunkConfig, number_runs


def changes(old: TrunkConfig | None, new: TrunkConfig) -> list[str]:
    """One sentence per difference from ``old`` to ``new``; [] when equal.

    ``old`` None (a first capability set) gives one "new trunk: ..." summary.
    """
    if old is None:
        return [_summary(new)]
    if old == new:
        return []
    out: list[str] = []
    _value(out, "capability set variant", old.variant, new.variant)
    if old.not_before != new.not_before:
        out.append(f"valid from {old.not_before:%Y-%m-%d %H:%M:%S} UTC -> "
                   f"{new.not_before:%Y-%m-%d %H:%M:%S} UTC")
    _value(out, "revision location", old.revision_location, new.revision_location)
    _value(out, "mode", old.mode, new.mode)
    _items(out, "transport", [t.upper() for t in old.transports],
           [t.upper() for t in new.transports])
    _flag(out, "TLS signaling", old.signaling_secure, new.signaling_secure)
    _items(out, "TLS version", old.tls_versions, new.tls_versions, ordered=False)
    _items(out, "registrar", old.registrars, new.registrars)
    _items(out, "call-control server", old.call_control, new.call_control)
    _items(out, "outbound proxy", old.outbound_proxies, new.outbound_proxies)
    _items(out, "DNS server", old.dns_servers, new.dns_servers)
    _credentials(out, old, new)
    _codecs(out, old, new)
    _items(out, "fax protocol", old.fax, new.fax)
    _flag(out, "sending the first RTP packet (RTP trigger)", old.rtp_trigger, new.rtp_trigger)
    _flag(out, "symmetric RTP", old.symmetric_rtp, new.symmetric_rtp)
    _flag(out, "symmetric RTCP", old.symmetric_rtcp, new.symmetric_rtcp)
    _flag(out, "RTCP feedback", old.rtcp_feedback, new.rtcp_feedback)
    _value(out, "DTMF mode", DTMF_MODES.get(old.dtmf.mode or ""),
           DTMF_MODES.get(new.dtmf.mode or ""))
    _value(out, "DTMF payload type", old.dtmf.payload_type, new.dtmf.payload_type)
    _flag(out, "early media", old.early_media, new.early_media)
    _flag(out, "signaling forking", old.signaling_forking, new.signaling_forking)
    _items(out, "method", old.methods, new.methods, ordered=False)
    _flag(out, "caller ID in E.164", old.caller_id.e164, new.caller_id.e164)
    _value(out, "caller ID header", CALLER_HEADERS.get(old.caller_id.method or ""),
           CALLER_HEADERS.get(new.caller_id.method or ""))
    _numbers(out, old, new)
    _items(out, "media key management", [k.upper() for k in old.key_management],
           [k.upper() for k in new.key_management], ordered=False)
    _value(out, "certificate location", old.certificate_location, new.certificate_location)
    _flag(out, "STIR compliance", old.stir.compliance, new.stir.compliance)
    _flag(out, "STIR certificate delegation", old.stir.certificate_delegation,
          new.stir.certificate_delegation)
    _value(out, "ACME directory", old.stir.acme_directory, new.stir.acme_directory)
    _items(out, "SIP extension", old.extensions, new.extensions, ordered=False)
    _vendor(out, old, new)
    return out


def _summary(cfg: TrunkConfig) -> str:
    where = cfg.registrars or cfg.call_control or cfg.outbound_proxies
    parts = [
        f"{cfg.mode} via {', '.join(map(str, where))}",
        f"transports {', '.join(t.upper() for t in cfg.transports) or 'not stated'}",
        f"codecs {', '.join(c.name for c in cfg.codecs) or 'not stated'}",
        f"{len(cfg.dids)} inbound numbers",
    ]
    if cfg.problems:
        parts.append(f"{len(cfg.problems)} warning{'s' if len(cfg.problems) > 1 else ''}")
    return "new trunk: " + "; ".join(parts)


def _show(value: Any) -> str:
    return "not stated" if value is None else str(value)


def _value(out: list[str], what: str, old: Any, new: Any) -> None:
    if old == new:
        return
    if old is None:
        out.append(f"{what} set to {new}")
    elif new is None:
        out.append(f"{what} no longer stated (was {old})")
    else:
        out.append(f"{what} {old} -> {new}")


def _flag(out: list[str], what: str, old: bool | None, new: bool | None) -> None:
    if old == new:
        return
    if new is None:
        out.append(f"{what} no longer stated (was {'on' if old else 'off'})")
    else:
        out.append(f"{what} turned {'on' if new else 'off'}")


def _items(out: list[str], what: str, old: Sequence[Hashable], new: Sequence[Hashable],
           *, ordered: bool = True) -> None:
    """Added and removed items, then (for preference lists) a change of order."""
    out.extend(f"{what} {v} removed" for v in old if v not in new)
    out.extend(f"{what} {v} added" for v in new if v not in old)
    kept_old = [v for v in old if v in new]
    kept_new = [v for v in new if v in old]
    if ordered and kept_old != kept_new:
        out.append(f"{what} order changed: {', '.join(map(str, kept_old))} -> "
                   f"{', '.join(map(str, kept_new))}")


def _keyed(out: list[str], what: str, old: Sequence, new: Sequence, key: Callable,
           show: Callable, compare: Callable[[Any, Any], list[str]]) -> None:
    olds, news = {key(o): o for o in old}, {key(n): n for n in new}
    out.extend(f"{what} {show(o)} removed" for k, o in olds.items() if k not in news)
    out.extend(f"{what} {show(n)} added" for k, n in news.items() if k not in olds)
    for k, o in olds.items():
        if k in news:
            out.extend(compare(o, news[k]))


def _credentials(out: list[str], old: TrunkConfig, new: TrunkConfig) -> None:
    def compare(o, n) -> list[str]:
        said = []
        if o.username != n.username:
            said.append(f"username for realm {n.realm} {_show(o.username)} -> "
                        f"{_show(n.username)}")
        if (o.password, o.crypt_hash) != (n.password, n.crypt_hash):
            said.append(f"password for realm {n.realm} changed")
        return said

    _keyed(out, "realm", old.credentials, new.credentials, lambda c: c.realm,
           lambda c: c.realm, compare)


def _codecs(out: list[str], old: TrunkConfig, new: TrunkConfig) -> None:
    def compare(o, n) -> list[str]:
        said = []
        if o.rate != n.rate:
            said.append(f"{n.name} rate {_show(o.rate)} -> {_show(n.rate)} Hz")
        if o.ptime != n.ptime:
            said.append(f"{n.name} ptime {_show(o.ptime)} -> {_show(n.ptime)} ms")
        if o.parameters != n.parameters:
            said.append(f"{n.name} parameters {o.parameters or 'none'} -> "
                        f"{n.parameters or 'none'}")
        if o.payload_type != n.payload_type:
            said.append(f"{n.name} payload type {_show(o.payload_type)} -> "
                        f"{_show(n.payload_type)}")
        return said

    _keyed(out, "codec", old.codecs, new.codecs, lambda c: c.name, lambda c: c.name, compare)
    kept_old = [c.name for c in old.codecs if c.name in {n.name for n in new.codecs}]
    kept_new = [c.name for c in new.codecs if c.name in {o.name for o in old.codecs}]
    if kept_old != kept_new:
        out.append(f"codec order changed: {', '.join(kept_old)} -> {', '.join(kept_new)}")


def _numbers(out: list[str], old: TrunkConfig, new: TrunkConfig) -> None:
    """Inbound numbers as runs; number-list references; else a rewrite with the same numbers."""
    before = len(out)
    olds, news = set(old.dids), set(new.dids)
    removed = [n for n in old.dids if n not in news]
    added = [n for n in new.dids if n not in olds]
    if added:
        out.append(f"inbound numbers added: {', '.join(number_runs(added))}")
    if removed:
        out.append(f"inbound numbers removed: {', '.join(number_runs(removed))}")
    refs_old = [u for r in old.number_ranges if r.type == "reference" for u in r.values]
    refs_new = [u for r in new.number_ranges if r.type == "reference" for u in r.values]
    _items(out, "number list reference", refs_old, refs_new, ordered=False)
    if len(out) == before and old.number_ranges != new.number_ranges:
        out.append("number ranges rewritten with the same inbound numbers")


def _vendor(out: list[str], old: TrunkConfig, new: TrunkConfig) -> None:
    def compare(o, n) -> list[str]:
        said = []
        if o.data != n.data:
            said.append(f"vendor data {n.path} changed")
        if o.validated != n.validated:
            said.append(f"vendor data {n.path} "
                        f"{'now validated' if n.validated else 'no longer validated'}")
        return said

    _keyed(out, "vendor data", old.vendor, new.vendor, lambda v: v.path,
           lambda v: v.path, compare)
