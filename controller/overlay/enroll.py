"""RELOAD enrollment over HTTPS: configuration server and certificate requests
(RFC 6940 §11.2, §11.3).

The server hands out the signed configuration document (§11.1) at the
well-known URI ``/.well-known/reload-config`` (§11.2, registered in §14.1)
and runs RELOAD's "trivial certificate request protocol" (§11.3) at the
URL its document names in ``enrollment-server``: an HTTPS POST of
``multipart/form-data`` (RFC 2388; ``application/x-www-form-urlencoded`` is
accepted too) with ``username``, ``password``, optional ``nodeids`` and a
``csr`` part of type ``application/pkcs10``, answered with one bare
``application/pkix-cert`` (DER) and 200, or 403 with a ``text/plain``
token: ``failed_authentication``, ``username_not_available``,
``Node-IDs_not_available`` or ``bad_CSR``. A request missing a form
parameter is not a certificate processing error but a malformed HTTP
request: 400.

Node-IDs are 128 random bits (RFC 4086 quality: :func:`secrets.token_bytes`),
drawn after authentication, never given to two users, and kept per user in
SQLite (one transaction per assignment) so that a returning user gets the
same Node-ID back, as §11.3 recommends, across restarts. Passwords are kept
as scrypt hashes.

The client side, :func:`enroll`, fetches and verifies the document, makes
a fresh Ed25519 key, sends a CSR, and checks the certificate chains to a
root-cert of the document and names the user and the Node-ID(s) (§11.3).
:class:`Enrollment` saves key, certificate and document in one 0600 file
(temp + rename) so a restarted peer keeps its identity. Every client-side
failure raises :class:`EnrollmentError`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nacl.signing
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sipmesh.overlay import config_doc, security
from sipmesh.overlay.config_doc import ConfigError, OverlayConfig

WELL_KNOWN_PATH = "/.well-known/reload-config"  # §11.2
# The same document under the name the pre-RFC drafts and our issue tracker
# use; clients of either spelling find it.
LEGACY_PATH = "/.well-known/p2psip-enroll"
ENROLL_PATH = "/enroll"
CERT_CONTENT_TYPE = "application/pkix-cert"  # RFC 2585, §11.3
CSR_CONTENT_TYPE = "application/pkcs10"  # §11.3

FAILED_AUTHENTICATION = "failed_authentication"
USERNAME_NOT_AVAILABLE = "username_not_available"
NODE_IDS_NOT_AVAILABLE = "Node-IDs_not_available"
BAD_CSR = "bad_CSR"

# security.issue() puts one Node-ID in a certificate, and a sipmesh peer
# uses one; a request for more is answered Node-IDs_not_available (§11.3).
MAX_NODE_IDS = 1
# A CSR with an Ed25519 key is ~300 bytes; 64 KiB bounds a request body.
MAX_REQUEST = 64 * 1024
MAX_CERTIFICATE = 64 * 1024
# scrypt cost (RFC 7914): N=2^14, r=8 takes ~50 ms and 16 MB, the common
# interactive-login setting.
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "maxmem": 64 << 20, "dklen": 32}
# §11.3: "allow only legal characters in the name (e.g., no embedded NULs)".
_USER_NAME = re.compile(r"[A-Za-z0-9._%+-]{1,64}(@[A-Za-z0-9.-]{1,190})?")
_STATE_FILE = "enrollment.json"


class EnrollmentError(Exception):
    """Enrolling failed; ``token`` is the server's §11.3 error token (or None),
    ``status`` its HTTP status (or None when no answer came)."""

    def __init__(self, reason: str, *, token: str | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.token = token
        self.status = status


class _Refused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)


class _Accounts:
    """Users (scrypt hashes) and Node-ID assignments in one SQLite file."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        with self.db:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, salt BLOB NOT NULL,"
                " hash BLOB NOT NULL)"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS node_ids (node_id BLOB PRIMARY KEY, user TEXT,"
                " assigned TEXT NOT NULL)"
            )

    def add_user(self, name: str, password: str) -> None:
        salt = secrets.token_bytes(16)
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
                (name, salt, _hash_password(password, salt)),
            )

    async def check(self, name: str, password: str) -> bool:
        row = self.db.execute("SELECT salt, hash FROM users WHERE name = ?", (name,)).fetchone()
        salt, want = row if row else (b"\0" * 16, b"")
        # scrypt takes ~50 ms: off the event loop. Unknown users cost the same.
        got = await asyncio.to_thread(_hash_password, password, salt)
        return row is not None and hmac.compare_digest(got, want)

    def node_ids(self, user: str | None) -> list[bytes]:
        rows = self.db.execute(
            "SELECT node_id FROM node_ids WHERE user IS ? ORDER BY rowid", (user,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def all_node_ids(self) -> set[bytes]:
        return {bytes(r[0]) for r in self.db.execute("SELECT node_id FROM node_ids")}

    def assign(self, user: str | None, count: int, reserve: bytes | None = None) -> list[bytes]:
        """The user's first ``count`` Node-IDs, drawing new ones as needed."""
        now = datetime.datetime.now(datetime.UTC).isoformat()
        with self.db:
            if reserve is not None:
                self.db.execute(
                    "INSERT OR IGNORE INTO node_ids VALUES (?, ?, ?)", (reserve, user, now)
                )
            have = self.node_ids(user)
            while len(have) < count:
                nid = secrets.token_bytes(16)
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO node_ids VALUES (?, ?, ?)", (nid, user, now)
                )
                if cur.rowcount == 1:
                    have.append(nid)
        return have[:count]

    def close(self) -> None:
        self.db.close()


class EnrollmentServer:
    """Configuration and enrollment server of one overlay (§11.2, §11.3).

    ``config`` is completed at :meth:`start`: an empty ``enrollment_servers``
    becomes this server's :attr:`enroll_url`, empty ``root_certs`` the CA's
    certificate, empty signer lists ``signer``'s Node-ID. ``signer`` (a
    certificate of ``ca``) signs the document; keep it across restarts or
    nodes holding the old document will refuse the next one (§11.1).
    """

    def __init__(
        self,
        *,
        ca: security.CA,
        config: OverlayConfig,
        signer: security.Identity,
        data_dir: Path,
        ssl_context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if config.instance_name != ca.overlay_name:
            raise ValueError("config and CA are for different overlays")
        self.ca = ca
        self.signer = signer
        self._base_config = config
        self._config: OverlayConfig | None = None
        self._document = b""
        self._ssl = ssl_context
        self._host = host
        self._port = port
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._accounts = _Accounts(data_dir / "enrollment.sqlite3")
        self._runner: web.AppRunner | None = None

    def add_user(self, name: str, password: str) -> None:
        """Create or update an account (persisted, password hashed)."""
        if not _USER_NAME.fullmatch(name):
            raise ValueError(f"user name {name!r} has characters not allowed in an rfc822Name")
        self._accounts.add_user(name, password)

    def node_ids(self, user: str) -> tuple[bytes, ...]:
        """The Node-IDs assigned to ``user`` so far."""
        return tuple(self._accounts.node_ids(user))

    def assigned_node_ids(self) -> set[bytes]:
        """Every Node-ID ever handed out or reserved (the signer's)."""
        return self._accounts.all_node_ids()

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self._port}"

    @property
    def config_url(self) -> str:
        return self.url + WELL_KNOWN_PATH

    @property
    def enroll_url(self) -> str:
        return self.url + ENROLL_PATH

    @property
    def config(self) -> OverlayConfig:
        if self._config is None:
            raise RuntimeError("server not started")
        return self._config

    @property
    def document(self) -> bytes:
        """The signed configuration document served (§11.1)."""
        return self._document

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_get(WELL_KNOWN_PATH, self._get_config)
        app.router.add_get(LEGACY_PATH, self._get_config)
        app.router.add_post(ENROLL_PATH, self._enroll)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._accounts.assign(None, 0, reserve=self.signer.node_id)
        cfg = self._base_config
        fill = {
            "enrollment_servers": (self.enroll_url,),
            "root_certs": (self.ca.certificate,),
            "configuration_signers": (self.signer.node_id,),
            "kind_signers": (self.signer.node_id,),
        }
        self._config = dataclasses.replace(
            cfg, **{k: v for k, v in fill.items() if not getattr(cfg, k)}
        )
        self._document = config_doc.to_xml(self._config, self.signer)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._accounts.close()

    async def _get_config(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._document, content_type=config_doc.CONTENT_TYPE)

    async def _enroll(self, request: web.Request) -> web.Response:
        try:
            der = await self._issue(request)
        except _Refused as e:
            return web.Response(status=e.status, text=e.text, content_type="text/plain")
        return web.Response(body=der, content_type=CERT_CONTENT_TYPE)

    async def _issue(self, request: web.Request) -> bytes:
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError) as e:
            raise _Refused(400, f"malformed form data: {e}") from e
        fields: dict[str, bytes | str] = {}
        for name in ("username", "password", "csr", "nodeids"):
            value = form.get(name)
            if isinstance(value, web.FileField):
                value = value.file.read(MAX_REQUEST)
            elif isinstance(value, bytearray):  # a part that is not text/*
                value = bytes(value)
            if value is None:
                if name != "nodeids":
                    raise _Refused(400, f"missing form parameter {name!r} (RFC 6940 11.3)")
                value = "1"
            fields[name] = value
        try:
            user, password, nodeids = (
                v.decode("utf-8") if isinstance(v, bytes) else v
                for v in (fields["username"], fields["password"], fields["nodeids"])
            )
        except UnicodeDecodeError:
            raise _Refused(400, "username, password and nodeids must be UTF-8") from None
        if not await self._accounts.check(user, password):
            raise _Refused(403, FAILED_AUTHENTICATION)
        count = int(nodeids) if re.fullmatch(r"[0-9]{1,4}", nodeids.strip()) else 0
        if not 1 <= count <= MAX_NODE_IDS:
            raise _Refused(403, NODE_IDS_NOT_AVAILABLE)
        public = _csr_key(fields["csr"], user)
        (node_id,) = self._accounts.assign(user, count)
        cert = security.issue(self.ca, public, user, node_id, self.ca.overlay_name)
        return cert.public_bytes(serialization.Encoding.DER)


def _csr_key(raw: bytes | str, user: str) -> bytes:
    """The Ed25519 public key of a self-consistent PKCS#10 request for ``user``."""
    data = raw.encode("ascii", "replace") if isinstance(raw, str) else raw
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        key = csr.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise _Refused(403, BAD_CSR)
        if not csr.is_signature_valid:
            raise _Refused(403, BAD_CSR)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            wanted = san.get_values_for_type(x509.RFC822Name)
        except x509.ExtensionNotFound:
            wanted = []
    except (ValueError, TypeError):
        raise _Refused(403, BAD_CSR) from None
    if any(w != user for w in wanted):
        raise _Refused(403, USERNAME_NOT_AVAILABLE)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------- client


def write_private(path: Path, data: bytes) -> None:
    """temp + fsync + rename, created 0600, directory synced: never a
    half-written key file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _check_issued(
    cert: x509.Certificate,
    config: OverlayConfig,
    public: bytes,
    user: str | None,
    now: datetime.datetime | None = None,
) -> security.CertInfo:
    """§11.3: the certificate chains to a root-cert (a CA by BasicConstraints),
    is not itself a CA, holds our key, one user name and Node-IDs of this overlay."""
    info, why = None, "no root-cert is a CA (BasicConstraints)"
    for root in config.root_certs:
        try:
            if not root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
            info = security.check_certificate(cert, root, now)
            break
        except x509.ExtensionNotFound:
            continue
        except security.SecurityError as e:
            why = e.reason
    if info is None:
        raise EnrollmentError(f"certificate not valid under the configuration's root-certs: {why}")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise EnrollmentError("enrollment server issued a CA certificate")
    except x509.ExtensionNotFound:
        pass
    got = cert.public_key()
    if not isinstance(got, ed25519.Ed25519PublicKey) or got.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) != public:
        raise EnrollmentError("certificate is not for our key")
    if info.user_name is None or (user is not None and info.user_name != user):
        raise EnrollmentError(f"certificate names user {info.user_name!r}, not {user!r}")
    if not info.node_ids or any(o != config.instance_name for o in info.overlays):
        raise EnrollmentError("certificate holds no Node-ID of this overlay")
    return info


@dataclass
class Enrollment:
    """What a node keeps after enrolling: the configuration (and the signed
    document it came in) and its identity (key, certificate, Node-ID)."""

    config: OverlayConfig
    identity: security.Identity
    document: bytes

    def save(self, folder: Path) -> None:
        """Write key, certificate and document to ``folder`` (one 0600 file)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = {
            "format": 1,
            "key": security.key_pem(self.identity.signing_key).decode("ascii"),
            "certificate": self.identity.certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode("ascii"),
            "configuration": base64.b64encode(self.document).decode("ascii"),
        }
        write_private(folder / _STATE_FILE, json.dumps(state, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, folder: Path, *, trusted: list[x509.Certificate] | None = None) -> Enrollment:
        """Read what :meth:`save` wrote and check it is still consistent: the
        document's signature (an expired document is returned; refetch it),
        the key matching a certificate issued under a root-cert of it."""
        path = Path(folder) / _STATE_FILE
        try:
            state = json.loads(path.read_bytes())
            key = serialization.load_pem_private_key(state["key"].encode("ascii"), None)
            cert = x509.load_pem_x509_certificate(state["certificate"].encode("ascii"))
            document = base64.b64decode(state["configuration"], validate=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EnrollmentError(f"no usable enrollment in {path}: {e}") from e
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise EnrollmentError(f"{path}: key is not Ed25519")
        try:
            config = config_doc.parse(document, trusted=trusted, allow_expired=True)
        except ConfigError as e:
            raise EnrollmentError(f"{path}: stored configuration: {e}") from e
        signing = nacl.signing.SigningKey(
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        info = _check_issued(cert, config, bytes(signing.verify_key), None)
        identity = security.Identity(signing, cert, info.user_name or "", info.node_ids[0])
        return cls(config, identity, document)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    out = bytearray()
    async for chunk in resp.content.iter_chunked(16384):
        out += chunk
        if len(out) > limit:
            raise EnrollmentError(f"{resp.url}: answer larger than {limit} bytes")
    return bytes(out)


def _trusted(trusted_signer) -> list[x509.Certificate] | None:
    if trusted_signer is None:
        return None
    if isinstance(trusted_signer, x509.Certificate):
        return [trusted_signer]
    return list(trusted_signer)


async def fetch_config(
    config_url: str,
    *,
    ssl_context: ssl.SSLContext,
    trusted_signer: x509.Certificate | Sequence[x509.Certificate] | None = None,
    previous: OverlayConfig | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[OverlayConfig, bytes]:
    """GET and verify the configuration document (§11.2): the parsed
    configuration and the document's bytes. See :func:`config_doc.parse` for
    ``trusted_signer`` (its ``trusted``) and ``previous``."""
    if not config_url.lower().startswith("https://"):
        raise EnrollmentError("the configuration server must be reached over HTTPS (11.2)")
    own = session is None
    s = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        async with s.get(config_url, ssl=ssl_context) as resp:
            body = await _read_limited(resp, config_doc.MAX_DOCUMENT)
            if resp.status != 200:
                raise EnrollmentError(f"{config_url}: HTTP {resp.status}", status=resp.status)
            if resp.content_type != config_doc.CONTENT_TYPE:
                raise EnrollmentError(f"{config_url}: content type {resp.content_type!r}")
    except aiohttp.ClientError as e:
        raise EnrollmentError(f"{config_url}: {e}") from e
    finally:
        if own:
            await s.close()
    try:
        config = config_doc.parse(body, trusted=_trusted(trusted_signer), previous=previous)
    except ConfigError as e:
        raise EnrollmentError(f"{config_url}: {e}") from e
    return config, body


def make_csr(key: nacl.signing.SigningKey, user: str) -> bytes:
    """A DER PKCS#10 request (§11.3) for ``key``, asking for ``user`` as rfc822Name."""
    ck = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(key))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(user)]), critical=False)
        .sign(ck, None)
    )
    return csr.public_bytes(serialization.Encoding.DER)


async def request_certificate(
    enroll_url: str,
    user: str,
    password: str,
    csr_der: bytes,
    *,
    ssl_context: ssl.SSLContext,
    session: aiohttp.ClientSession | None = None,
) -> x509.Certificate:
    """POST the §11.3 form and return the certificate; a 403 raises
    :class:`EnrollmentError` with the server's token."""
    with aiohttp.MultipartWriter("form-data") as mp:
        for name, value in (("username", user), ("password", password)):
            mp.append(value).set_content_disposition("form-data", name=name)
        mp.append(csr_der, {"Content-Type": CSR_CONTENT_TYPE}).set_content_disposition(
            "form-data", name="csr"
        )
    own = session is None
    s = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        async with s.post(
            enroll_url, data=mp, ssl=ssl_context, headers={"Accept": CERT_CONTENT_TYPE}
        ) as resp:
            body = await _read_limited(resp, MAX_CERTIFICATE)
            if resp.status != 200:
                token = body.decode("utf-8", "replace").strip()
                raise EnrollmentError(
                    f"{enroll_url}: HTTP {resp.status} {token}", token=token, status=resp.status
                )
            if resp.content_type != CERT_CONTENT_TYPE:
                raise EnrollmentError(f"{enroll_url}: content type {resp.content_type!r}")
    except aiohttp.ClientError as e:
        raise EnrollmentError(f"{enroll_url}: {e}") from e
    finally:
        if own:
            await s.close()
    try:
        return x509.load_der_x509_certificate(body)
    except ValueError as e:
        raise EnrollmentError(f"{enroll_url}: answer is not a DER certificate") from e


async def enroll(
    config_url: str,
    user: str,
    password: str,
    *,
    ssl_context: ssl.SSLContext,
    trusted_signer: x509.Certificate | Sequence[x509.Certificate] | None = None,
) -> Enrollment:
    """Join an overlay's membership (§11.2, §11.3): fetch and verify the
    configuration, make a fresh Ed25519 key locally, have it certified by the
    first enrollment server that answers, check the certificate."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        config, document = await fetch_config(
            config_url, ssl_context=ssl_context, trusted_signer=trusted_signer, session=session
        )
        if not config.enrollment_servers:
            raise EnrollmentError("the configuration names no enrollment server")
        key = nacl.signing.SigningKey.generate()
        csr = make_csr(key, user)
        last: EnrollmentError | None = None
        for url in config.enrollment_servers:
            try:
                cert = await request_certificate(
                    url, user, password, csr, ssl_context=ssl_context, session=session
                )
                break
            except EnrollmentError as e:
                if e.status is not None:
                    raise  # the server answered: another one would say the same
                last = e
        else:
            raise last or EnrollmentError("no enrollment server answered")
    info = _check_issued(cert, config, bytes(key.verify_key), user)
    if len(info.node_ids) != 1:
        raise EnrollmentError(f"asked for one Node-ID, got {len(info.node_ids)}")
    return Enrollment(config, security.Identity(key, cert, user, info.node_ids[0]), document)
