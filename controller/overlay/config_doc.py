"""The RELOAD overlay configuration document (RFC 6940 §11.1).

One XML document (``application/p2p-overlay+xml``) tells a node everything
it needs to join an overlay: the Chord parameters, the root certificates,
the enrollment servers, the bootstrap nodes and the Kinds every member must
support. :func:`to_xml` writes one signed ``<configuration>`` element;
:func:`parse` reads and verifies one.

Signatures (§11.1): the ``<configuration>`` element is a binary blob "from,
and including, the first < at the start of <configuration> up to and
including the > in </configuration>"; its signature is a SecurityBlock
(§6.3.4), base64 (RFC 4648), in the ``<signature>`` element that follows
it. Each ``<kind>`` element is signed the same way into the
``<kind-signature>`` of its ``<kind-block>``. The RFC names the signed
bytes but not how the SecurityBlock's signature covers them; we sign
exactly those bytes, as sent (no canonicalisation, no SignerIdentity
appended), with Ed25519 (SignatureAndHashAlgorithm hash 8 / signature 7,
ARCHITECTURE rule 2). The SecurityBlock carries the signer's certificate;
its SignerIdentity is the cert_hash (SHA-256) of it.

Who may sign (§11.1): a configuration must be signed by a certificate
holding a Node-ID listed in ``configuration-signer`` of the previous extant
configuration (or, for the first one a node sees, of the document itself,
which it fetched over HTTPS, §11.2); a Kind by a ``kind-signer`` of the
current one. The signer's certificate must chain to a trusted root.

Limits: a document is at most :data:`MAX_DOCUMENT` bytes, nests at most
:data:`MAX_DEPTH` elements and holds at most :data:`MAX_ELEMENTS`. DTDs and
entity declarations are refused (no entity expansion bombs, no external
entities): the format never needs them. Elements of namespaces we do not
know are ignored, as the grammar's ``foreign-elements`` allows. Every
problem raises :class:`ConfigError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sipmesh.overlay import security
from sipmesh.overlay.kinds import KindDef
from sipmesh.proto import reload as rl

CONTENT_TYPE = "application/p2p-overlay+xml"  # §11.1, registered in §14.16
NS_BASE = "urn:ietf:params:xml:ns:p2p:config-base"
NS_CHORD = "urn:ietf:params:xml:ns:p2p:config-chord"
# Our own foreign elements (allowed by the grammar's foreign-elements): the
# name of a privately numbered Kind, which the <kind id="..."> form lacks.
NS_SIPMESH = "urn:x-sipmesh:p2p-config"

# A real document is a few KB per root certificate and Kind; 1 MB leaves
# room for hundreds of both and still bounds memory for a hostile server.
MAX_DOCUMENT = 1 << 20
MAX_DEPTH = 32
MAX_ELEMENTS = 20_000
MAX_KINDS = 1024
MAX_ROOT_CERTS = 32

DEFAULT_BOOTSTRAP_PORT = 6084  # §11.1 bootstrap-node
MAX_SEQUENCE = 0xFFFE  # §11.1: "between 0 and 2^16-2"

# RELOAD Data Kind-ID registry (§14.6, RFC 7904 §9.1): the names a
# <kind name="..."> may use instead of an id.
IANA_KINDS: dict[str, int] = {
    "SIP-REGISTRATION": 0x1,
    "TURN-SERVICE": 0x2,
    "CERTIFICATE_BY_NODE": 0x3,
    "CERTIFICATE_BY_USER": 0x10,
}
_IANA_NAMES = {v: k for k, v in IANA_KINDS.items()}

_SUPPORTED_EXTENSIONS = frozenset({NS_SIPMESH})
# xsd:int and friends: ASCII digits with an optional sign (int() alone would
# also take "1_000" and non-ASCII digits).
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


class ConfigError(ValueError):
    """The configuration document is malformed, too big, badly signed, older
    than the one held, expired, or asks for something we cannot do."""


@dataclass(frozen=True)
class OverlayConfig:
    """One ``<configuration>`` element (§11.1); defaults are the RFC's.

    Node-IDs (signers, bad nodes) are bytes; intervals are in seconds
    (§10.7), ``overlay_reliability_timer`` in milliseconds (§6.2.1).
    """

    instance_name: str
    sequence: int = 0
    expiration: datetime.datetime | None = None
    topology_plugin: str = "CHORD-RELOAD"
    node_id_length: int = rl.NODE_ID_LEN
    root_certs: tuple[x509.Certificate, ...] = ()
    enrollment_servers: tuple[str, ...] = ()
    self_signed_permitted: bool = False
    self_signed_digest: str = "sha256"
    bootstrap_nodes: tuple[tuple[str, int], ...] = ()
    turn_density: int = 1
    clients_permitted: bool = True
    no_ice: bool = False
    chord_update_interval: int = 600
    chord_ping_interval: int = 30
    chord_reactive: bool = True
    max_message_size: int = 5000
    initial_ttl: int = 100
    overlay_reliability_timer: int = 3000
    overlay_link_protocols: tuple[str, ...] = ("TLS",)
    configuration_signers: tuple[bytes, ...] = ()
    kind_signers: tuple[bytes, ...] = ()
    bad_nodes: tuple[bytes, ...] = ()
    mandatory_extensions: tuple[str, ...] = ()
    kinds: tuple[KindDef, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.instance_name:
            raise ConfigError("configuration without instance-name")
        if not 0 <= self.sequence <= MAX_SEQUENCE:
            raise ConfigError(f"sequence {self.sequence} outside 0..{MAX_SEQUENCE}")
        if self.expiration is not None and self.expiration.tzinfo is None:
            raise ConfigError("expiration must be a UTC time (RFC 3339)")
        if self.node_id_length != rl.NODE_ID_LEN:
            raise ConfigError(
                f"node-id-length {self.node_id_length} not supported (this overlay "
                f"uses {rl.NODE_ID_LEN}-byte Node-IDs)"
            )
        if self.topology_plugin != "CHORD-RELOAD":
            raise ConfigError(f"topology plug-in {self.topology_plugin!r} not supported")
        if self.overlay_reliability_timer < 200:
            raise ConfigError("overlay-reliability-timer below 200 ms (§11.1)")
        for url in self.enrollment_servers:
            if not url.lower().startswith("https://"):
                raise ConfigError(f"enrollment-server {url!r} is not an https: URL")
        for nid in (*self.configuration_signers, *self.kind_signers, *self.bad_nodes):
            if len(nid) != self.node_id_length:
                raise ConfigError(f"Node-ID {nid.hex()} is not {self.node_id_length} bytes")
        ids = [k.kind_id for k in self.kinds]
        if len(set(ids)) != len(ids):
            raise ConfigError("a Kind is defined twice")

    def kind(self, kind_id: int) -> KindDef | None:
        """The definition of ``kind_id``, or None when the overlay does not have it."""
        for k in self.kinds:
            if k.kind_id == kind_id:
                return k
        return None

    def expired(self, now: datetime.datetime | None = None) -> bool:
        """Whether the expiration time (§11.1) has passed."""
        t = now if now is not None else datetime.datetime.now(datetime.UTC)
        return self.expiration is not None and t >= self.expiration


# ---------------------------------------------------------------- writing


def _rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64_lines(data: bytes, indent: str) -> str:
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n" + "".join(f"{indent}{line}\n" for line in lines) + indent[:-2]


def _security_block(blob: bytes, signer: security.Identity) -> bytes:
    sig = rl.Signature(
        signer.signer_identity(),
        signer.signing_key.sign(blob).signature,
        security.HASH_INTRINSIC,
        security.SIG_ED25519,
    )
    cert = rl.GenericCertificate(security.CERT_X509, signer.cert_der)
    return rl.SecurityBlock(sig, [cert]).encode()


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _el(name: str, text: object, indent: str = "    ") -> str:
    return f"{indent}<{name}>{escape(str(text))}</{name}>\n"


def _kind_xml(k: KindDef) -> bytes:
    if IANA_KINDS.get(k.name) == k.kind_id:
        head, own_name = f"<kind name={quoteattr(k.name)}>\n", ""
    else:
        head = f'<kind id="{k.kind_id}">\n'
        own_name = _el("sm:kind-name", k.name, "          ")
    ind = "          "
    body = (
        _el("data-model", k.model.upper(), ind)
        + _el("access-control", k.policy, ind)
        + _el("max-count", k.max_count, ind)
        + _el("max-size", k.max_size, ind)
        + (_el("max-node-multiple", k.max_node_multiple, ind) if k.max_node_multiple else "")
        + own_name
    )
    return (head + body + "        </kind>").encode("utf-8")


def _configuration_xml(c: OverlayConfig, signer: security.Identity) -> bytes:
    attrs = f"instance-name={quoteattr(c.instance_name)} sequence=\"{c.sequence}\""
    if c.expiration is not None:
        attrs += f' expiration="{_rfc3339(c.expiration)}"'
    out = [f"<configuration {attrs}>\n"]
    out.append(_el("topology-plugin", c.topology_plugin))
    out.append(_el("node-id-length", c.node_id_length))
    for cert in c.root_certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        out.append(f"    <root-cert>{_b64_lines(der, '      ')}</root-cert>\n")
    out += [_el("enrollment-server", u) for u in c.enrollment_servers]
    if c.self_signed_permitted:  # §11.1: "Otherwise, it SHOULD be absent"
        out.append(
            f"    <self-signed-permitted digest={quoteattr(c.self_signed_digest)}>true"
            "</self-signed-permitted>\n"
        )
    for addr, port in c.bootstrap_nodes:
        out.append(f"    <bootstrap-node address={quoteattr(addr)} port=\"{port}\"/>\n")
    out.append(_el("turn-density", c.turn_density))
    out.append(_el("clients-permitted", _bool(c.clients_permitted)))
    out.append(_el("no-ice", _bool(c.no_ice)))
    out.append(_el("chord:chord-update-interval", c.chord_update_interval))
    out.append(_el("chord:chord-ping-interval", c.chord_ping_interval))
    out.append(_el("chord:chord-reactive", _bool(c.chord_reactive)))
    out.append(_el("max-message-size", c.max_message_size))
    out.append(_el("initial-ttl", c.initial_ttl))
    if c.overlay_reliability_timer != 3000:
        out.append(_el("overlay-reliability-timer", c.overlay_reliability_timer))
    out += [_el("overlay-link-protocol", p) for p in c.overlay_link_protocols]
    out += [_el("configuration-signer", n.hex()) for n in c.configuration_signers]
    out += [_el("kind-signer", n.hex()) for n in c.kind_signers]
    out += [_el("bad-node", n.hex()) for n in c.bad_nodes]
    out += [_el("mandatory-extension", m) for m in c.mandatory_extensions]
    if c.kinds:
        out.append("    <required-kinds>\n")
        for k in c.kinds:
            kind = _kind_xml(k).decode("utf-8")
            sig = _b64_lines(_security_block(kind.encode("utf-8"), signer), "          ")
            out.append(
                f"      <kind-block>\n        {kind}\n"
                f"        <kind-signature>{sig}</kind-signature>\n      </kind-block>\n"
            )
        out.append("    </required-kinds>\n")
    out.append("  </configuration>")
    return "".join(out).encode("utf-8")


def to_xml(config: OverlayConfig, signer: security.Identity) -> bytes:
    """The signed configuration document (§11.1) for one overlay.

    ``signer`` signs the ``<configuration>`` element and every ``<kind>``;
    its Node-ID should be listed in ``configuration_signers`` and
    ``kind_signers`` or receivers will refuse the document.
    """
    conf = _configuration_xml(config, signer)
    sig = _b64_lines(_security_block(conf, signer), "    ")
    return b"".join(
        (
            b'<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<overlay xmlns="{NS_BASE}" xmlns:chord="{NS_CHORD}" '
            f'xmlns:sm="{NS_SIPMESH}">\n  '.encode(),
            conf,
            f"\n  <signature>{sig}</signature>\n</overlay>\n".encode(),
        )
    )


# ---------------------------------------------------------------- reading


def _tag_end(data: bytes, pos: int) -> int:
    # Index just past the '>' that closes the tag starting at pos; a '>'
    # inside a quoted attribute value does not count.
    quote = 0
    for i in range(pos, len(data)):
        b = data[i]
        if quote:
            if b == quote:
                quote = 0
        elif b in (0x22, 0x27):
            quote = b
        elif b == 0x3E:
            return i + 1
    raise ConfigError("unterminated tag")


def _qname(name: str) -> str:
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


class _Node:
    __slots__ = ("tag", "attrib", "children", "text", "span")

    def __init__(self, tag: str, attrib: dict[str, str], start: int):
        self.tag = tag
        self.attrib = attrib
        self.children: list[_Node] = []
        self.text: list[str] = []
        self.span = (start, start)


def _tree(data: bytes) -> _Node:
    """Parse with expat, keeping each element's byte span (for signatures)."""
    if len(data) > MAX_DOCUMENT:
        raise ConfigError(f"document larger than {MAX_DOCUMENT} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ConfigError("DTDs and entity declarations are not accepted")
    p = expat.ParserCreate("UTF-8", namespace_separator=" ")
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    roots: list[_Node] = []
    count = 0

    def refuse(*_args: object) -> None:
        raise ConfigError("DTDs and entity declarations are not accepted")

    def xml_decl(_version: str, encoding: str | None, _standalone: int) -> None:
        if encoding is not None and encoding.upper().replace("_", "-") not in ("UTF-8", "UTF8"):
            raise ConfigError(f"document encoding {encoding!r}: §11.1 requires UTF-8")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS or len(stack) >= MAX_DEPTH:
            raise ConfigError("document too deep or with too many elements")
        node = _Node(_qname(name), {_qname(k): v for k, v in attrs.items()}, p.CurrentByteIndex)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_name: str) -> None:
        node = stack.pop()
        node.span = (node.span[0], _tag_end(data, p.CurrentByteIndex))

    def chars(text: str) -> None:
        if stack:
            stack[-1].text.append(text)

    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse
    p.XmlDeclHandler = xml_decl
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    try:
        p.Parse(data, True)
    except expat.ExpatError as e:
        raise ConfigError(f"not well-formed XML: {e}") from e
    return roots[0]


def _text(node: _Node) -> str:
    return "".join(node.text).strip()


def _int(node: _Node, low: int, high: int) -> int:
    t = _text(node)
    if not _INTEGER.fullmatch(t):
        raise ConfigError(f"<{_local(node)}> is not an integer: {t!r}")
    v = int(t, 10)
    if not low <= v <= high:
        raise ConfigError(f"<{_local(node)}> {v} outside {low}..{high}")
    return v


def _boolean(node: _Node) -> bool:
    t = _text(node)
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise ConfigError(f"<{_local(node)}> is not an xsd:boolean: {t!r}")


def _b64(node: _Node) -> bytes:
    try:
        return base64.b64decode("".join(_text(node).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"<{_local(node)}> is not base64") from None


def _node_id(node: _Node) -> bytes:
    try:
        return bytes.fromhex(_text(node))
    except ValueError:
        raise ConfigError(f"<{_local(node)}> is not a hexadecimal Node-ID") from None


def _local(node: _Node) -> str:
    return node.tag.rpartition("}")[2]


def _datetime(text: str) -> datetime.datetime:
    try:
        t = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"expiration {text!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise ConfigError("expiration without a UTC offset")
    return t.astimezone(datetime.UTC)


def _verify_block(
    sig_b64: bytes,
    blob: bytes,
    anchors: tuple[x509.Certificate, ...],
    signers: tuple[bytes, ...],
    bad: tuple[bytes, ...],
    now: datetime.datetime | None,
    what: str,
) -> None:
    """Check a base64 SecurityBlock over ``blob``: Ed25519, certificate carried,
    chained to an anchor, holding a Node-ID from ``signers`` (§11.1)."""
    try:
        r = rl._Reader(sig_b64)
        block = rl._decode_security(r)
        r.done("SecurityBlock")
    except rl.ReloadDecodeError as e:
        raise ConfigError(f"{what} signature is not a SecurityBlock: {e}") from e
    sig = block.signature
    if sig.hash_alg != security.HASH_INTRINSIC or sig.sig_alg != security.SIG_ED25519:
        raise ConfigError(f"{what} signature algorithm {sig.hash_alg}/{sig.sig_alg} not Ed25519")
    ident = sig.identity
    if ident.type != rl.ID_CERT_HASH or ident.hash_alg != security.HASH_SHA256:
        raise ConfigError(f"{what} signer identity is not a SHA-256 cert_hash")
    der = next(
        (c.data for c in block.certificates
         if c.type == security.CERT_X509 and hashlib.sha256(c.data).digest() == ident.hash),
        None,
    )
    if der is None:
        raise ConfigError(f"{what} signature carries no certificate matching its signer")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise ConfigError(f"{what} signer certificate does not parse") from e
    info = None
    for anchor in anchors:
        try:
            info = security.check_certificate(cert, anchor, now)
            break
        except security.SecurityError:
            continue
    if info is None:
        raise ConfigError(f"{what} signer certificate does not chain to a trusted root")
    if not set(info.node_ids) & set(signers):
        raise ConfigError(f"{what} signed by a certificate whose Node-ID is not an allowed signer")
    if set(info.node_ids) & set(bad):
        raise ConfigError(f"{what} signer is listed as a bad-node")
    pub = cert.public_key()
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{what} signer key is not Ed25519")
    vk = nacl.signing.VerifyKey(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    try:
        vk.verify(blob, sig.value)
    except (nacl.exceptions.BadSignatureError, ValueError) as e:
        raise ConfigError(f"{what} signature does not verify") from e


def _kind(node: _Node) -> KindDef:
    name_attr, id_attr = node.attrib.get("name"), node.attrib.get("id")
    if (name_attr is None) == (id_attr is None):
        raise ConfigError("<kind> needs exactly one of name= and id=")
    values: dict[str, _Node] = {}
    own_name = None
    for ch in node.children:
        if ch.tag == f"{{{NS_SIPMESH}}}kind-name":
            own_name = _text(ch)
        elif ch.tag.startswith(f"{{{NS_BASE}}}"):
            values[_local(ch)] = ch
    if name_attr is not None:
        if name_attr.strip() not in IANA_KINDS:
            raise ConfigError(f"kind name {name_attr!r} is not a registered Kind")
        kind_id, name = IANA_KINDS[name_attr.strip()], name_attr.strip()
    else:
        if not _INTEGER.fullmatch(id_attr.strip()):
            raise ConfigError(f"kind id {id_attr!r} is not an integer")
        kind_id = int(id_attr.strip(), 10)
        name = own_name or _IANA_NAMES.get(kind_id, f"KIND-{kind_id:#x}")
    for need in ("data-model", "access-control", "max-count", "max-size"):
        if need not in values:
            raise ConfigError(f"kind {kind_id}: <{need}> missing")
    u32 = 0xFFFFFFFF
    nm = values.get("max-node-multiple")
    try:
        return KindDef(
            kind_id=kind_id,
            name=name,
            model=_text(values["data-model"]).lower(),
            policy=_text(values["access-control"]),
            max_count=_int(values["max-count"], 0, u32),
            max_size=_int(values["max-size"], 0, u32),
            max_node_multiple=_int(nm, 0, u32) if nm is not None else 0,
        )
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"kind {kind_id}: {e}") from e


def _select(root: _Node, overlay_name: str | None) -> tuple[_Node, _Node | None]:
    if root.tag != f"{{{NS_BASE}}}overlay":
        raise ConfigError(f"root element is {root.tag}, not the config-base <overlay>")
    pairs: list[tuple[_Node, _Node | None]] = []
    for ch in root.children:
        if ch.tag == f"{{{NS_BASE}}}configuration":
            pairs.append((ch, None))
        elif ch.tag == f"{{{NS_BASE}}}signature" and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], ch)
    if overlay_name is not None:
        pairs = [p for p in pairs if p[0].attrib.get("instance-name") == overlay_name]
        if not pairs:
            raise ConfigError(f"no configuration for overlay {overlay_name!r}")
    if len(pairs) != 1:
        raise ConfigError(f"expected one configuration element, found {len(pairs)}")
    return pairs[0]


def parse(
    xml: bytes,
    *,
    trusted: list[x509.Certificate] | None,
    previous: OverlayConfig | None = None,
    overlay_name: str | None = None,
    now: datetime.datetime | None = None,
    allow_expired: bool = False,
) -> OverlayConfig:
    """Read and verify one configuration (§11.1, §11.2).

    ``trusted``: the certificates the signer's certificate must chain to;
    None means the root-certs of ``previous`` or, when there is none, of the
    document itself (first fetch, trusted through the HTTPS server name,
    §11.2). The signer must hold a Node-ID listed as configuration-signer in
    ``previous`` (or the document, first fetch); a ``previous`` with a
    higher sequence makes the document stale. ``overlay_name`` picks one of
    several configurations. Raises :class:`ConfigError`.
    """
    conf, sig = _select(_tree(bytes(xml)), overlay_name)
    if sig is None:
        raise ConfigError("configuration is not followed by a <signature>")
    a = conf.attrib
    if not _INTEGER.fullmatch(a.get("sequence", "0").strip()):
        raise ConfigError("sequence is not an integer")
    sequence = int(a.get("sequence", "0").strip(), 10)
    kw: dict[str, object] = {
        "instance_name": a.get("instance-name", "").strip(),
        "sequence": sequence,
        "expiration": _datetime(a["expiration"]) if "expiration" in a else None,
    }
    lists: dict[str, list] = {
        k: []
        for k in ("root_certs", "enrollment_servers", "bootstrap_nodes", "overlay_link_protocols",
                  "configuration_signers", "kind_signers", "bad_nodes", "mandatory_extensions")
    }
    kind_blocks: list[_Node] = []
    scalar = {
        "node-id-length": ("node_id_length", 16, 20),
        "turn-density": ("turn_density", 0, 255),
        "max-message-size": ("max_message_size", 1, 0xFFFFFFFF),
        "initial-ttl": ("initial_ttl", 1, 255),
        "overlay-reliability-timer": ("overlay_reliability_timer", 0, 0xFFFFFFFF),
        "chord-update-interval": ("chord_update_interval", 1, 0x7FFFFFFF),
        "chord-ping-interval": ("chord_ping_interval", 1, 0x7FFFFFFF),
    }
    flags = {
        "clients-permitted": "clients_permitted",
        "no-ice": "no_ice",
        "chord-reactive": "chord_reactive",
    }
    for ch in conf.children:
        ns, _, local = ch.tag[1:].partition("}")
        if ns not in (NS_BASE, NS_CHORD) or (ns == NS_CHORD) != local.startswith("chord-"):
            continue  # foreign elements: ignored (§11.1.1 foreign-elements)
        if local in scalar:
            key, low, high = scalar[local]
            kw[key] = _int(ch, low, high)
        elif local in flags:
            kw[flags[local]] = _boolean(ch)
        elif local in ("topology-plugin", "topology-plug-in"):
            kw["topology_plugin"] = _text(ch)
        elif local == "root-cert":
            try:
                lists["root_certs"].append(x509.load_der_x509_certificate(_b64(ch)))
            except ValueError as e:
                raise ConfigError("a root-cert is not a DER X.509 certificate") from e
        elif local == "enrollment-server":
            lists["enrollment_servers"].append(_text(ch))
        elif local == "self-signed-permitted":
            kw["self_signed_permitted"] = _boolean(ch)
            kw["self_signed_digest"] = ch.attrib.get("digest", "sha1").strip()
        elif local == "bootstrap-node":
            lists["bootstrap_nodes"].append(_bootstrap(ch))
        elif local == "overlay-link-protocol":
            lists["overlay_link_protocols"].append(_text(ch))
        elif local in ("configuration-signer", "kind-signer", "bad-node"):
            lists[local.replace("-", "_") + "s"].append(_node_id(ch))
        elif local == "mandatory-extension":
            lists["mandatory_extensions"].append(_text(ch))
        elif local == "required-kinds":
            kind_blocks += [b for b in ch.children if b.tag == f"{{{NS_BASE}}}kind-block"]
    if len(lists["root_certs"]) > MAX_ROOT_CERTS or len(kind_blocks) > MAX_KINDS:
        raise ConfigError("too many root-cert or kind-block elements")
    for ext in lists["mandatory_extensions"]:
        if ext not in _SUPPORTED_EXTENSIONS:
            raise ConfigError(f"mandatory extension {ext!r} is not supported")
    for key, values in lists.items():
        if values or key != "overlay_link_protocols":
            kw[key] = tuple(values)
    draft = OverlayConfig(**kw)  # type: ignore[arg-type]

    if previous is not None:
        if previous.instance_name != draft.instance_name:
            raise ConfigError("configuration is for another overlay than the one held")
        if draft.sequence < previous.sequence:
            raise ConfigError(
                f"sequence {draft.sequence} is lower than the held {previous.sequence}"
            )
    ref = previous if previous is not None else draft
    anchors = tuple(trusted) if trusted is not None else ref.root_certs
    if not anchors:
        raise ConfigError("no trusted root to verify the configuration signature against")
    _verify_block(
        _b64(sig), bytes(xml[conf.span[0] : conf.span[1]]), anchors,
        ref.configuration_signers, draft.bad_nodes, now, "configuration",
    )
    if not allow_expired and draft.expired(now):
        raise ConfigError("configuration has expired")

    kinds = []
    for block in kind_blocks:
        kind_nodes = [c for c in block.children if c.tag == f"{{{NS_BASE}}}kind"]
        sigs = [c for c in block.children if c.tag == f"{{{NS_BASE}}}kind-signature"]
        if len(kind_nodes) != 1 or len(sigs) != 1:
            raise ConfigError("a kind-block needs one <kind> and one <kind-signature>")
        k = kind_nodes[0]
        _verify_block(
            _b64(sigs[0]), bytes(xml[k.span[0] : k.span[1]]), anchors,
            draft.kind_signers, draft.bad_nodes, now, "kind",
        )
        kinds.append(_kind(k))
    return OverlayConfig(**{**kw, "kinds": tuple(kinds)})  # type: ignore[arg-type]


def _bootstrap(node: _Node) -> tuple[str, int]:
    addr = node.attrib.get("address", "").strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(f"bootstrap-node address {addr!r} is not an IP address") from None
    text = node.attrib.get("port", str(DEFAULT_BOOTSTRAP_PORT)).strip()
    if not _INTEGER.fullmatch(text):
        raise ConfigError("bootstrap-node port is not an integer")
    port = int(text, 10)
    if not 0 < port < 65536:
        raise ConfigError(f"bootstrap-node port {port} out of range")
    return str(ip), port
