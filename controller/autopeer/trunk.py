"""A valid RFC 10006 capability set turned into trunk settings (RFC 10006 §8).

§8 leaves the configuration blocks to the implementation; this module
decides them once, in ``map_capset``, so that the B2BUA, the CLI and the
store read typed fields instead of YANG paths. The dataclasses are in
``sipmesh.autopeer.trunk_config``; ``to_json``/``from_json`` store them and
``describe`` prints them for ``sipmesh trunk show``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sipmesh.autopeer.trunk_config import (
    MAX_DIDS,
    CallerId,
    Codec,
    Credentials,
    Dtmf,
    HostPort,
    NumberRange,
    Stir,
    TrunkConfig,
    VendorExtension,
    number_runs,
)
from sipmesh.autopeer.validate import MODULE, CapsetError, Issue, Validator, extensions_of

__all__ = [
    "CallerId", "Codec", "Credentials", "Dtmf", "HostPort", "NumberRange", "Stir",
    "TrunkConfig", "VendorExtension", "describe", "from_json", "map_capset", "to_json",
]

ROOT = f"{MODULE}:sip-auto-peering"
FORMAT = 1

# identity -> (SDP encoding name, static RTP payload type, sampling rates it
# holds for). RFC 3551 §6 table 4; G.722 samples at 16 kHz but its RTP clock
# is 8000 (§4.5.2), so both rates keep payload type 9.
CODECS: dict[str, tuple[str, int | None, frozenset[int]]] = {
    "pcmu": ("PCMU", 0, frozenset({8000})),
    "pcma": ("PCMA", 8, frozenset({8000})),
    "g722": ("G722", 9, frozenset({8000, 16000})),
    "g729": ("G729", 18, frozenset({8000})),
    "opus": ("opus", None, frozenset()),
}

# iana-sip-option-tags enum names that are not the option tag itself: YANG
# enum names are identifiers, the tags of RFC 3262 and RFC 6228 are digits.
OPTION_TAGS = {"one-hundred-rel": "100rel", "one-nine-nine": "199"}

# crypt(3) ids of iana-crypt-hash (its description's table).
HASHES = {"1": "MD5", "5": "SHA-256", "6": "SHA-512"}

REGISTRATION = "registration"
STATIC = "static"


def map_capset(doc: dict, *, validator: Validator | None = None) -> TrunkConfig:
    """The trunk settings of a capability set that already passed ``Validator.issues``.

    Mode (RFC 10006 §7.2 ``transport-info``): "registration" when registrars
    are listed (the trunk REGISTERs there, and the provider sends calls to
    the registered contact); otherwise "static": no REGISTER, our calls go
    to the call-control servers, or to the outbound proxy which "represents
    the default destination for all outbound SIP requests; therefore, the
    registrar and call-control lists can be omitted", and the provider
    sends calls to our address as provisioned. A set with no registrar, no
    call-control and no outbound proxy gives nowhere to send anything and
    raises CapsetError, as does one whose number ranges expand to more than
    MAX_DIDS numbers. Everything else maps; what the operator must fix by
    hand (a hashed password, a number list by reference) is in ``problems``.

    ``validator``: the one that validated ``doc``; its installed vendor
    modules make their data ``validated=True`` (RFC 10006 §7.3). Without
    it, all vendor data is listed as unvalidated.
    """
    root = doc[ROOT]
    transport = root.get("transport-info", {})
    call = root.get("call-spec", {})
    media = root.get("media", {})
    security = root.get("security", {})
    signaling = security.get("signaling", {})
    stir = security.get("secure-telephony-identity", {})
    registrars = _entities(transport, "registrar")
    call_control = _entities(transport, "call-control")
    proxies = _entities(transport, "outbound-proxy")
    if not (registrars or call_control or proxies):
        raise CapsetError([Issue(f"/{ROOT}/transport-info", "no registrar, call-control or "
                                 "outbound-proxy: the trunk has nowhere to send requests")])
    ranges = tuple(sorted(
        (NumberRange(r["index"], r.get("type"), r.get("count"), tuple(r.get("value", ())))
         for r in call.get("number-range", ())),
        key=lambda r: r.index,
    ))
    total = sum(len(r.values) if r.type == "collection" else (r.count or 0) for r in ranges)
    if total > MAX_DIDS:
        raise CapsetError([Issue(f"/{ROOT}/call-spec/number-range",
                                 f"the number ranges hold {total} numbers, more than {MAX_DIDS}")])
    if validator is not None:
        vendor = validator.extensions(doc)
    else:
        vendor = extensions_of(doc)
    dtmf = root.get("dtmf", {})
    caller = call.get("caller-id", {})
    return TrunkConfig(
        variant=_variant(root["variant"]),
        not_before=_utc(root["revision"]["not-before"]),
        revision_location=root["revision"]["location"],
        mode=REGISTRATION if registrars else STATIC,
        transports=tuple(_local(t).lower() for t in transport.get("transport", ())),
        signaling_secure=signaling.get("secure"),
        tls_versions=tuple(_tls(v) for v in signaling.get("version", ())),
        registrars=registrars,
        call_control=call_control,
        outbound_proxies=proxies,
        dns_servers=tuple(transport.get("dns-server", ())),
        credentials=tuple(_credentials(r) for r in transport.get("realm", ())),
        codecs=tuple(_codec(c) for c in media.get("media-type-audio", ())),
        fax=tuple(media.get("fax", {}).get("protocol", ())),
        rtp_trigger=media.get("rtp", {}).get("rtp-trigger"),
        symmetric_rtp=media.get("rtp", {}).get("symmetric-rtp"),
        symmetric_rtcp=media.get("rtcp", {}).get("symmetric-rtcp"),
        rtcp_feedback=media.get("rtcp", {}).get("rtcp-feedback"),
        dtmf=_dtmf(dtmf),
        early_media=call.get("early-media"),
        signaling_forking=call.get("signaling-forking"),
        methods=tuple(m.upper() for m in call.get("supported-method", ())),
        caller_id=CallerId(caller.get("e164-format"), caller.get("preferred-method")),
        number_ranges=ranges,
        key_management=tuple(security.get("media-security", {}).get("key-management", ())),
        certificate_location=security.get("certificate-location"),
        stir=Stir(stir.get("stir-compliance"), stir.get("certificate-delegation"),
                  stir.get("acme-directory")),
        extensions=tuple(OPTION_TAGS.get(e, e) for e in root.get("extension", ())),
        vendor=tuple(vendor),
    )


def _local(identity: str) -> str:
    """The identity name without its module (RFC 7951 §6.8)."""
    return identity.rpartition(":")[2]


def _variant(identity: str) -> str:
    """"ietf-sip-auto-peering:v1-0" -> "1.0" (the module: "variant 1.0"); others as sent."""
    module, _, name = identity.rpartition(":")
    m = re.fullmatch(r"v(\d+)-(\d+)", name)
    if m and module in ("", MODULE):
        return f"{m[1]}.{m[2]}"
    return identity


def _utc(text: str) -> datetime:
    """yang:date-and-time (RFC 3339) as an aware UTC datetime; a leap second rolls over."""
    text = text.upper()
    leap = text[17:19] == "60"
    if leap:
        text = text[:17] + "59" + text[19:]
    value = datetime.fromisoformat(text).astimezone(UTC)
    return value + timedelta(seconds=1) if leap else value


def _tls(identity: str) -> str:
    """ietf-tls-common "tls12" -> "1.2"; other identities keep their name."""
    m = re.fullmatch(r"tls(\d)(\d)", _local(identity))
    return f"{m[1]}.{m[2]}" if m else _local(identity)


def _entities(container: dict, name: str) -> tuple[HostPort, ...]:
    return tuple(HostPort(e["host"], e["port"]) for e in container.get(name, ()))


def _credentials(realm: dict) -> Credentials:
    """A realm's credentials; only the ``$0$`` (clear text) password form is usable.

    SIP digest (RFC 7616 §3.4.1) computes over the password or HA1; a
    crypt(3) hash ($1$ MD5, $5$ SHA-256, $6$ SHA-512 in iana-crypt-hash) is
    neither, so such a realm needs its password set locally.
    """
    name, user, stored = realm["name"], realm.get("username"), realm.get("password")
    fix = f"so set this realm's password locally (sipmesh trunk credentials {name})"
    if stored is None:
        return Credentials(name, user, None, f"the provider sent no password for realm {name}; "
                           f"{fix}" if user is not None else None)
    if stored.startswith("$0$"):
        return Credentials(name, user, stored[3:], None)
    ident = stored.split("$")[1] if stored.count("$") >= 2 else "?"
    algorithm = HASHES.get(ident, f"id {ident}")
    return Credentials(
        name, user, None,
        f"the provider sent the password for realm {name} as a {algorithm} crypt hash "
        f"(${ident}$); SIP digest needs the clear text, {fix}",
        crypt_hash=stored,
    )


def _codec(entry: dict) -> Codec:
    ident = _local(entry["media-format"])
    name, pt, rates = CODECS.get(ident, (ident.upper(), None, frozenset()))
    rate = entry.get("rate")
    if rate is not None and rate not in rates:
        pt = None
    return Codec(name, rate, entry.get("ptime"), entry.get("parameter"), pt)


def _dtmf(dtmf: dict) -> Dtmf:
    """DTMF relay; ``iteration`` picks the RFC.

    The module says of ``iteration``: "A value of true indicates that the
    service provider supports the newer standard while a value of false
    indicates that the service provider prefers the older standard", with
    the references RFC 4733 and RFC 2833: true -> "rfc4733" (RFC 4733
    obsoletes RFC 2833), false -> "rfc2833", absent -> None.
    ``payload-number`` is the dynamic payload type (96-127) of
    telephone-event.
    """
    iteration = dtmf.get("iteration")
    mode = None if iteration is None else "rfc4733" if iteration else "rfc2833"
    return Dtmf(mode, dtmf.get("payload-number"))


def to_json(cfg: TrunkConfig) -> dict:
    """A JSON object for storage; ``from_json`` gives back an equal TrunkConfig."""
    out: dict[str, Any] = {"format": FORMAT}
    for name in TrunkConfig.__dataclass_fields__:
        out[name] = _plain(getattr(cfg, name))
    out["not_before"] = cfg.not_before.isoformat()
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def from_json(d: dict) -> TrunkConfig:
    """The TrunkConfig stored by ``to_json``; ValueError for anything else."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"not a stored trunk configuration of format {FORMAT}")
    try:
        return TrunkConfig(
            variant=d["variant"],
            not_before=datetime.fromisoformat(d["not_before"]).astimezone(UTC),
            revision_location=d["revision_location"],
            mode=d["mode"],
            transports=tuple(d["transports"]),
            signaling_secure=d["signaling_secure"],
            tls_versions=tuple(d["tls_versions"]),
            registrars=tuple(HostPort(**e) for e in d["registrars"]),
            call_control=tuple(HostPort(**e) for e in d["call_control"]),
            outbound_proxies=tuple(HostPort(**e) for e in d["outbound_proxies"]),
            dns_servers=tuple(d["dns_servers"]),
            credentials=tuple(Credentials(**c) for c in d["credentials"]),
            codecs=tuple(Codec(**c) for c in d["codecs"]),
            fax=tuple(d["fax"]),
            rtp_trigger=d["rtp_trigger"],
            symmetric_rtp=d["symmetric_rtp"],
            symmetric_rtcp=d["symmetric_rtcp"],
            rtcp_feedback=d["rtcp_feedback"],
            dtmf=Dtmf(**d["dtmf"]),
            early_media=d["early_media"],
            signaling_forking=d["signaling_forking"],
            methods=tuple(d["methods"]),
            caller_id=CallerId(**d["caller_id"]),
            number_ranges=tuple(
                NumberRange(r["index"], r["type"], r["count"], tuple(r["values"]))
                for r in d["number_ranges"]
            ),
            key_management=tuple(d["key_management"]),
            certificate_location=d["certificate_location"],
            stir=Stir(**d["stir"]),
            extensions=tuple(d["extensions"]),
            vendor=tuple(VendorExtension(**v) for v in d["vendor"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"stored trunk configuration is damaged: {e!r}") from e


def _flag(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "not stated" if value is None else yes if value else no


def _list(values: tuple | list, empty: str = "not stated") -> str:
    return ", ".join(str(v) for v in values) or empty


def _codec_text(c: Codec) -> str:
    """"PCMU/8000 20 ms (PT 0)": how ``describe`` shows a codec."""
    text = c.name + (f"/{c.rate}" if c.rate is not None else "")
    if c.ptime is not None:
        text += f" {c.ptime} ms"
    if c.parameters:
        text += f" {c.parameters}"
    return text + (f" (PT {c.payload_type})" if c.payload_type is not None else "")


DTMF_MODES = {"rfc4733": "RFC 4733", "rfc2833": "RFC 2833"}
CALLER_HEADERS = {"from": "From", "p-asserted-identity": "P-Asserted-Identity"}


def describe(cfg: TrunkConfig) -> list[str]:
    """The lines ``sipmesh trunk show`` prints: warnings first, then one line per topic."""
    lines = [f"WARNING: {p}" for p in cfg.problems]
    lines.append(f"capability set {cfg.variant}, valid from "
                 f"{cfg.not_before:%Y-%m-%d %H:%M:%S} UTC, updates at {cfg.revision_location}")
    lines.append(f"mode: {cfg.mode}")
    if cfg.registrars:
        lines.append(f"registrars: {_list(cfg.registrars)}")
    if cfg.call_control:
        lines.append(f"call control: {_list(cfg.call_control)}")
    if cfg.outbound_proxies:
        lines.append(f"outbound proxies: {_list(cfg.outbound_proxies)}")
    lines.append(f"DNS servers: {_list(cfg.dns_servers, 'system resolver')}")
    lines.append(f"transports: {_list([t.upper() for t in cfg.transports])}")
    tls = f" (TLS {_list(cfg.tls_versions)})" if cfg.tls_versions else ""
    lines.append(f"TLS signaling: {_flag(cfg.signaling_secure)}{tls}")
    for c in cfg.credentials:
        pw = "password set" if c.password is not None else "password missing"
        lines.append(f"credentials: realm {c.realm}, user {c.username or '-'}, {pw}")
    lines.append(f"codecs: {_list([_codec_text(c) for c in cfg.codecs])}")
    dtmf = DTMF_MODES.get(cfg.dtmf.mode or "", "mode not stated")
    pt = cfg.dtmf.payload_type
    lines.append(f"DTMF: {dtmf}, payload type {pt if pt is not None else 'not stated'}")
    lines.append(f"fax: {_list(cfg.fax)}")
    lines.append(f"RTP: we send first {_flag(cfg.rtp_trigger)}, symmetric RTP "
                 f"{_flag(cfg.symmetric_rtp)}, symmetric RTCP {_flag(cfg.symmetric_rtcp)}, "
                 f"RTCP feedback {_flag(cfg.rtcp_feedback)}")
    lines.append(f"calls: early media {_flag(cfg.early_media)}, forking "
                 f"{_flag(cfg.signaling_forking)}")
    header = CALLER_HEADERS.get(cfg.caller_id.method or "", "any header")
    e164 = {True: "E.164", False: "any format", None: "format not stated"}[cfg.caller_id.e164]
    lines.append(f"caller ID: {e164} in {header}")
    lines.append(f"methods: {_list(cfg.methods)}")
    lines.append(f"SIP extensions: {_list(cfg.extensions)}")
    dids = cfg.dids
    lines.append(f"inbound numbers ({len(dids)}): {_list(number_runs(dids), 'none')}")
    lines.append(f"media security: {_list([k.upper() for k in cfg.key_management], 'none')}")
    if cfg.certificate_location:
        lines.append(f"provider certificates: {cfg.certificate_location}")
    acme = f", ACME {cfg.stir.acme_directory}" if cfg.stir.acme_directory else ""
    lines.append(f"STIR: compliant {_flag(cfg.stir.compliance)}, delegation "
                 f"{_flag(cfg.stir.certificate_delegation)}{acme}")
    for v in cfg.vendor:
        state = "validated" if v.validated else "not validated, module not installed"
        lines.append(f"vendor data {v.path} ({state})")
    return lines
