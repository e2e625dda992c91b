"""RELOAD security: certificates, message and stored-data signatures (RFC 6940).

Certificates follow the enrollment rules of RFC 6940 section 11.3 (which
section 13 relies on): the enrollment server (a CA) assigns the Node-ID(s)
and puts them in the subjectAltName as uniformResourceIdentifier values
holding a RELOAD URI (section 14.15) whose destination is a Destination
List with a single node_id entry, ``reload://0110<node-id hex>@<overlay>/``,
and the user name as an rfc822Name.

Signatures (section 6.3.4 for messages, 7.1 for stored values) use Ed25519
(ARCHITECTURE rule 2): SignatureAndHashAlgorithm hash 8 (intrinsic) /
signature 7. The SignerIdentity is ``cert_hash`` with hash_alg SHA-256
(TLS HashAlgorithm 4) over the DER certificate; the certificate itself is
carried in the message's SecurityBlock (type X.509 = 0, RFC 6091).

Every verification failure raises :class:`SecurityError` carrying the
RELOAD error code to answer with: Error_Forbidden (0x2, section 14.9).
The RFC uses Error_Forbidden wherever a signer is not entitled to what it
sent: a stored value whose signature is not valid, or whose signer may not
write it (7.4.1.1), a Node-ID the sender has not proven (6.1.2), a
JoinReq/LeaveReq Node-ID that differs from the signing one (6.4.2). A
message signature that does not verify, an unknown signer or a certificate
the overlay's CA did not issue (or that expired) is the same case: the
request is not authorised. Error_Invalid_Message (0x14) stays with the
codec for malformed bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from sipmesh.proto import reload as rl
from sipmesh.proto.reload_storage import stored_data_signed_bytes

CERT_X509 = 0  # RFC 6091 CertificateType x509
HASH_SHA256 = rl.HASH_SHA256  # TLS HashAlgorithm sha256 (4)
HASH_INTRINSIC = rl.HASH_INTRINSIC  # 8
SIG_ED25519 = rl.SIG_ED25519  # 7
ERROR_FORBIDDEN = rl.ERROR_FORBIDDEN  # 14.9: 0x2

_URI_PREFIX = "reload://"
CLOCK_SKEW = datetime.timedelta(hours=1)


class SecurityError(Exception):
    """A signature or certificate check failed; ``code`` is the RELOAD error
    code (section 14.9) to answer with."""

    def __init__(self, reason: str, code: int = ERROR_FORBIDDEN):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class CertInfo:
    """What a verified certificate says (section 11.3)."""

    user_name: str | None
    node_ids: tuple[bytes, ...]
    overlays: tuple[str, ...]
    certificate: x509.Certificate


@dataclass
class CA:
    """An enrollment server's CA (section 11.3): Ed25519 key and self-signed certificate."""

    signing_key: nacl.signing.SigningKey
    certificate: x509.Certificate
    overlay_name: str


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _crypto_key(key: nacl.signing.SigningKey) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(key))


def node_id_uri(node_id: bytes, overlay_name: str) -> str:
    """RELOAD URI (14.15) naming one Node-ID: a one-entry Destination List, hex."""
    if len(node_id) != rl.NODE_ID_LEN:
        raise ValueError(f"Node-ID must be {rl.NODE_ID_LEN} bytes")
    return f"{_URI_PREFIX}{rl.Destination.node(node_id).encode().hex()}@{overlay_name}/"


def parse_node_id_uri(uri: str) -> tuple[bytes, str] | None:
    """(Node-ID, overlay) from a RELOAD URI with a single node_id destination, else None."""
    if not uri.startswith(_URI_PREFIX) or "@" not in uri:
        return None
    dest, _, rest = uri[len(_URI_PREFIX) :].partition("@")
    overlay, _, _spec = rest.partition("/")
    try:
        raw = bytes.fromhex(dest)
    except ValueError:
        return None
    if len(raw) != 2 + rl.NODE_ID_LEN or raw[0] != rl.DEST_NODE or raw[1] != rl.NODE_ID_LEN:
        return None
    return raw[2:], overlay


def make_ca(overlay_name: str, days: int = 3650, now: datetime.datetime | None = None) -> CA:
    """A self-signed Ed25519 CA certificate for the overlay's enrollment server (11.3)."""
    key = nacl.signing.SigningKey.generate()
    ck = _crypto_key(key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{overlay_name} enrollment CA")])
    start = _now(now) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ck.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ck, None)
    )
    return CA(key, cert, overlay_name)


def issue(
    ca: CA,
    public_key: nacl.signing.VerifyKey | bytes,
    user_name: str,
    node_id: bytes,
    overlay_name: str,
    days: int = 365,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """Issue a peer certificate (11.3): SAN rfc822Name = user name, URI = the Node-ID.

    Validity runs from ``now`` (default: the current time) for ``days``; a
    negative ``days`` or a past ``now`` gives an expired certificate.
    """
    pub = ed25519.Ed25519PublicKey.from_public_bytes(bytes(public_key))
    # Valid from an hour back: peers' clocks differ, and a certificate must
    # not be refused by a peer whose clock is a little behind the CA's.
    start = _now(now) - CLOCK_SKEW
    end = _now(now) + datetime.timedelta(days=days)
    if end < start:
        start, end = end - datetime.timedelta(days=1), end
    cert = (
        x509.CertificateBuilder()
        # §11.3: the subject name MUST be empty; the user name is in the SAN.
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.RFC822Name(user_name),
                    x509.UniformResourceIdentifier(node_id_uri(node_id, overlay_name)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(_crypto_key(ca.signing_key), None)
    )
    return cert


def cert_info(cert: x509.Certificate) -> CertInfo:
    """User name and Node-IDs from a certificate's subjectAltName (11.3)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return CertInfo(None, (), (), cert)
    names = san.get_values_for_type(x509.RFC822Name)
    ids, overlays = [], []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        parsed = parse_node_id_uri(uri)
        if parsed is not None:
            ids.append(parsed[0])
            overlays.append(parsed[1])
    return CertInfo(names[0] if len(names) == 1 else None, tuple(ids), tuple(overlays), cert)


@dataclass
class Identity:
    """A peer's Ed25519 key pair, its certificate, user name and Node-ID."""

    signing_key: nacl.signing.SigningKey
    certificate: x509.Certificate
    user_name: str
    node_id: bytes

    @classmethod
    def generate(
        cls, ca: CA, user_name: str, node_id: bytes, overlay: str | None = None, **kw
    ) -> Identity:
        """A fresh key pair enrolled by ``ca`` (for tests and the enrollment server)."""
        key = nacl.signing.SigningKey.generate()
        overlay = ca.overlay_name if overlay is None else overlay
        cert = issue(ca, key.verify_key, user_name, node_id, overlay, **kw)
        return cls(key, cert, user_name, bytes(node_id))

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def signer_identity(self) -> rl.SignerIdentity:
        """SignerIdentity cert_hash (6.3.4): SHA-256 over the DER certificate."""
        return rl.SignerIdentity(
            rl.ID_CERT_HASH, HASH_SHA256, hashlib.sha256(self.cert_der).digest()
        )


def _signature(identity: Identity, data_fn) -> rl.Signature:
    ident = identity.signer_identity()
    value = identity.signing_key.sign(data_fn(ident)).signature
    return rl.Signature(ident, value, HASH_INTRINSIC, SIG_ED25519)


def sign_message(msg: rl.Message, identity: Identity) -> rl.Message:
    """Fill ``msg.security`` (6.3.4): the certificate and an Ed25519 signature
    over ``overlay || transaction_id || MessageContents || SignerIdentity``."""
    msg.security = rl.SecurityBlock(
        rl.Signature(identity.signer_identity(), b""),
        [rl.GenericCertificate(CERT_X509, identity.cert_der)],
    )
    msg.security.signature = _signature(
        identity,
        lambda ident: rl.signed_bytes(
            msg.header.overlay, msg.header.transaction_id, msg.contents, ident
        ),
    )
    return msg


def _find_cert(sig: rl.Signature, certificates) -> x509.Certificate:
    if sig.hash_alg != HASH_INTRINSIC or sig.sig_alg != SIG_ED25519:
        raise SecurityError(f"unsupported signature algorithm {sig.hash_alg}/{sig.sig_alg}")
    ident = sig.identity
    if ident.type != rl.ID_CERT_HASH or ident.hash_alg != HASH_SHA256:
        raise SecurityError(f"unsupported signer identity {ident.type} (hash {ident.hash_alg})")
    for c in certificates:
        if c.type == CERT_X509 and hashlib.sha256(c.data).digest() == ident.hash:
            try:
                return x509.load_der_x509_certificate(c.data)
            except ValueError as e:
                raise SecurityError("signer certificate does not parse") from e
    raise SecurityError("no carried certificate matches the signer's cert_hash")


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    v = getattr(cert, "not_valid_after_utc", None)
    return v if v is not None else cert.not_valid_after.replace(tzinfo=datetime.UTC)


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    v = getattr(cert, "not_valid_before_utc", None)
    return v if v is not None else cert.not_valid_before.replace(tzinfo=datetime.UTC)


def check_certificate(
    cert: x509.Certificate,
    trusted_ca: CA | x509.Certificate,
    now: datetime.datetime | None = None,
) -> CertInfo:
    """Check that ``cert`` was issued by the overlay's CA and is in its validity period."""
    ca_cert = trusted_ca.certificate if isinstance(trusted_ca, CA) else trusted_ca
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise SecurityError("certificate not issued by the overlay's CA") from e
    t = _now(now)
    if t < _not_before(cert) or t > _not_after(cert):
        raise SecurityError("certificate outside its validity period")
    return cert_info(cert)


def _verify(
    sig: rl.Signature,
    certificates,
    data: bytes,
    trusted_ca,
    expected_node_id: bytes | None,
    now: datetime.datetime | None,
) -> CertInfo:
    cert = _find_cert(sig, certificates)
    info = check_certificate(cert, trusted_ca, now)
    pub = cert.public_key()
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise SecurityError("signer key is not Ed25519")
    vk = nacl.signing.VerifyKey(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    try:
        vk.verify(data, sig.value)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as e:
        raise SecurityError("signature does not verify") from e
    if expected_node_id is not None and bytes(expected_node_id) not in info.node_ids:
        raise SecurityError("certificate does not hold the expected Node-ID")
    return info


def verify_message(
    msg: rl.Message,
    trusted_ca: CA | x509.Certificate,
    *,
    expected_node_id: bytes | None = None,
    now: datetime.datetime | None = None,
) -> CertInfo:
    """Verify a message's signature (6.3.4) and its signer's certificate (11.3, 13).

    ``expected_node_id`` (e.g. the sending peer's Node-ID from the via list or
    the link) must be one of the certificate's Node-IDs. Raises SecurityError.
    """
    sec = msg.security
    return _verify(
        sec.signature,
        sec.certificates,
        rl.message_signed_bytes(msg),
        trusted_ca,
        expected_node_id,
        now,
    )


def sign_stored_data(stored, resource_id: bytes, kind: int, identity: Identity):
    """Sign a StoredData (7.1) over
    ``resource_id || kind || storage_time || StoredDataValue || SignerIdentity``."""
    stored.signature = _signature(
        identity,
        lambda ident: stored_data_signed_bytes(
            resource_id, kind, stored.storage_time, stored.value, ident
        ),
    )
    return stored


def verify_stored_data(
    stored,
    resource_id: bytes,
    kind: int,
    certificates,
    trusted_ca: CA | x509.Certificate,
    *,
    expected_node_id: bytes | None = None,
    now: datetime.datetime | None = None,
) -> CertInfo:
    """Verify a StoredData signature (7.1). ``certificates`` are GenericCertificates
    (e.g. from the carrying message's SecurityBlock) or x509 certificates."""
    certs = [
        rl.GenericCertificate(CERT_X509, c.public_bytes(serialization.Encoding.DER))
        if isinstance(c, x509.Certificate)
        else c
        for c in certificates
    ]
    data = stored_data_signed_bytes(
        resource_id, kind, stored.storage_time, stored.value, stored.signature.identity
    )
    return _verify(stored.signature, certs, data, trusted_ca, expected_node_id, now)


def key_pem(key: nacl.signing.SigningKey) -> bytes:
    """An Ed25519 signing key as unencrypted PKCS#8 PEM (for ``ssl`` and key files)."""
    return _crypto_key(key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Verifier:
    """Message and stored-data verification with a cache of checked certificates.

    Checking a certificate against the CA (11.3) costs far more than the
    Ed25519 verification itself, and a peer sees the same few dozen
    certificates all day, so a certificate is checked once and then found by
    its cert_hash (the SHA-256 the SignerIdentity carries, 6.3.4); only the
    validity period is checked again on each use. Peers that trust the same
    CA in one process may share one Verifier.
    """

    def __init__(self, trusted_ca: CA | x509.Certificate, max_entries: int = 4096):
        self.trusted_ca = trusted_ca
        self.max_entries = max_entries
        self._cache: dict[bytes, tuple[CertInfo, nacl.signing.VerifyKey, float, float]] = {}

    def _lookup(self, sig: rl.Signature, certificates) -> tuple[CertInfo, nacl.signing.VerifyKey]:
        if sig.hash_alg != HASH_INTRINSIC or sig.sig_alg != SIG_ED25519:
            raise SecurityError(f"unsupported signature algorithm {sig.hash_alg}/{sig.sig_alg}")
        ident = sig.identity
        if ident.type != rl.ID_CERT_HASH or ident.hash_alg != HASH_SHA256:
            raise SecurityError(f"unsupported signer identity {ident.type} (hash {ident.hash_alg})")
        entry = self._cache.get(ident.hash)
        if entry is None:
            cert = _find_cert(sig, certificates)
            info = check_certificate(cert, self.trusted_ca)
            pub = cert.public_key()
            if not isinstance(pub, ed25519.Ed25519PublicKey):
                raise SecurityError("signer key is not Ed25519")
            vk = nacl.signing.VerifyKey(
                pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
            # Keep a fresh, unparsed copy: the checked one holds its parsed
            # extensions (about 1.5 KB), and a host of many peers caches
            # thousands of certificates.
            slim = dataclasses.replace(
                info,
                certificate=x509.load_der_x509_certificate(
                    cert.public_bytes(serialization.Encoding.DER)
                ),
            )
            entry = (slim, vk, _not_before(cert).timestamp(), _not_after(cert).timestamp())
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            self._cache[bytes(ident.hash)] = entry
        else:
            now = _now(None).timestamp()
            if now < entry[2] or now > entry[3]:
                raise SecurityError("certificate outside its validity period")
        return entry[0], entry[1]

    def _check(self, sig, certificates, data: bytes, expected_node_id) -> CertInfo:
        info, vk = self._lookup(sig, certificates)
        try:
            vk.verify(data, sig.value)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as e:
            raise SecurityError("signature does not verify") from e
        if expected_node_id is not None and bytes(expected_node_id) not in info.node_ids:
            raise SecurityError("certificate does not hold the expected Node-ID")
        return info

    def verify_message(self, msg: rl.Message, *, expected_node_id: bytes | None = None) -> CertInfo:
        """As :func:`verify_message`, with the certificate cache."""
        sec = msg.security
        return self._check(
            sec.signature, sec.certificates, rl.message_signed_bytes(msg), expected_node_id
        )

    def verify_stored_data(self, stored, resource_id: bytes, kind: int, certificates) -> CertInfo:
        """As :func:`verify_stored_data`, with the certificate cache."""
        data = stored_data_signed_bytes(
            resource_id, kind, stored.storage_time, stored.value, stored.signature.identity
        )
        return self._check(stored.signature, certificates, data, None)
