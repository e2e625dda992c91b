"""The controller's overlay peer, built from the ``[overlay]`` configuration.

RFC 6940 §11: a peer needs an identity (key, certificate with its Node-ID)
and the overlay's signed configuration document before it can join. The
service takes them, in this order, from an enrollment saved in
``data_dir/overlay`` (a restart keeps its Node-ID and the data it is
responsible for, §10.5), from an enrollment server (§11.3, ``enroll_url``
with ``user`` and the password in ``password_file``), or, with ``demo``,
from a local CA and configuration signer made once in the data folder so
that ``make run`` has a working one-peer overlay without any server. It
then opens the SQLite store, starts the peer on ``listen`` with TLS links
(§6.6.4; plain TCP only when asked, for tests and captures), joins through
the configured bootstrap peers or the document's (§11.4) and serves the
local control channel for ``sipmesh overlay``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import ssl
import urllib.parse
from pathlib import Path

import nacl.signing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sipmesh.config import OverlayOptions
from sipmesh.overlay import config_doc, enroll
from sipmesh.overlay import link as links
from sipmesh.overlay.control import SOCKET_NAME, ControlServer
from sipmesh.overlay.kinds import USER_MATCH, USER_NODE_MATCH, KindDef
from sipmesh.overlay.peer import OverlayError, Peer
from sipmesh.overlay.security import (
    CA,
    Identity,
    SecurityError,
    Verifier,
    check_certificate,
    issue,
    key_pem,
    make_ca,
)
from sipmesh.overlay.settings import OverlaySettings
from sipmesh.overlay.storage import Store
from sipmesh.proto.reload_storage import MODEL_DICTIONARY, MODEL_SINGLE

log = logging.getLogger("sipmesh.overlay")

KIND_SIP_REGISTRATION = 1  # RFC 7904 §3: dictionary keyed by Node-ID, USER-NODE-MATCH
KIND_NOTE = 0xF0000001  # private-use range (§14.6): a short text a user may publish
KIND_DEVICE_RECORD = 0xF0000002  # private use: a board's device record (proto.device_record)

# The Kinds our own documents (demo, `sipmesh overlay enrollment-server`) declare.
DEFAULT_KINDS = (
    KindDef(KIND_SIP_REGISTRATION, "SIP-REGISTRATION", MODEL_DICTIONARY, USER_NODE_MATCH,
            16, 4096),
    KindDef(KIND_NOTE, "sipmesh-note", MODEL_SINGLE, USER_MATCH, 1, 1024),
    KindDef(KIND_DEVICE_RECORD, "sipmesh device record", MODEL_SINGLE, USER_MATCH, 1, 1024),
)

AUTHORITY_FILE = "authority.json"
ENROLLMENT_DIR = "overlay"
STORE_FILE = "overlay.sqlite"
DEMO_DAYS = 3650


class OverlayServiceError(Exception):
    """The peer cannot be set up: no usable identity or configuration, or
    no bootstrap peer reachable."""


def _load_key(pem: str) -> nacl.signing.SigningKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("key is not Ed25519")
    return nacl.signing.SigningKey(key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    ))


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def demo_board_certificate(data_dir: Path, overlay: str, pub32: bytes,
                           user_name: str) -> tuple[bytes, bytes]:
    """(certificate DER, CA public key) for a board's Ed25519 key, issued by
    the demo overlay's CA kept in ``data_dir`` with a fresh random Node-ID
    (§11.3: the enrollment server assigns Node-IDs). Used by a running
    controller and by ``sipmesh board provision`` in another process; the CA
    must already exist (the controller made it on its first start)."""
    if len(pub32) != 32:
        raise OverlayServiceError("a board key is a 32-byte Ed25519 public key")
    folder = Path(data_dir) / "overlay-demo"
    if not (folder / AUTHORITY_FILE).exists():
        raise OverlayServiceError(f"no demo overlay CA in {folder}: start the controller "
                                  "(sipmesh run) once first")
    ca, _ = load_or_make_authority(folder, overlay)
    cert = issue(ca, bytes(pub32), user_name, os.urandom(16), overlay, days=DEMO_DAYS)
    return cert.public_bytes(serialization.Encoding.DER), ca.signing_key.verify_key.encode()


def load_or_make_authority(folder: Path, overlay: str) -> tuple[CA, Identity]:
    """The overlay CA and the configuration signer kept in ``folder`` (made
    on first use). The signer must survive restarts: nodes holding a
    document refuse the next one unless a known signer signed it (§11.1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / AUTHORITY_FILE
    if path.exists():
        try:
            state = json.loads(path.read_bytes())
            ca = CA(_load_key(state["ca_key"]),
                    x509.load_pem_x509_certificate(state["ca_certificate"].encode("ascii")),
                    state["overlay"])
            signer = Identity(_load_key(state["signer_key"]),
                              x509.load_pem_x509_certificate(
                                  state["signer_certificate"].encode("ascii")),
                              state["signer_user"], bytes.fromhex(state["signer_node_id"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OverlayServiceError(f"unusable overlay authority in {path}: {e}") from e
        if ca.overlay_name != overlay:
            raise OverlayServiceError(
                f"{path} is the authority of overlay {ca.overlay_name!r}, not {overlay!r}")
        return ca, signer
    ca = make_ca(overlay, days=DEMO_DAYS)
    signer = Identity.generate(ca, f"config@{overlay}", os.urandom(16), days=DEMO_DAYS)
    state = {
        "format": 1, "overlay": overlay,
        "ca_key": key_pem(ca.signing_key).decode("ascii"),
        "ca_certificate": _cert_pem(ca.certificate),
        "signer_key": key_pem(signer.signing_key).decode("ascii"),
        "signer_certificate": _cert_pem(signer.certificate),
        "signer_user": signer.user_name, "signer_node_id": signer.node_id.hex(),
    }
    enroll.write_private(path, json.dumps(state, indent=1).encode("utf-8"))
    return ca, signer


def overlay_document(
    ca: CA, signer: Identity, *, bootstrap: tuple[tuple[str, int], ...] = (),
    sequence: int = 1, days: int = DEMO_DAYS,
) -> config_doc.OverlayConfig:
    """A configuration (§11.1) of ``ca``'s overlay with :data:`DEFAULT_KINDS`."""
    return config_doc.OverlayConfig(
        instance_name=ca.overlay_name,
        sequence=sequence,
        expiration=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days),
        root_certs=(ca.certificate,),
        bootstrap_nodes=bootstrap,
        configuration_signers=(signer.node_id,),
        kind_signers=(signer.node_id,),
        kinds=DEFAULT_KINDS,
    )


def _config_url(url: str) -> str:
    """An ``https://host:port`` alone means the well-known location (§11.2)."""
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=enroll.WELL_KNOWN_PATH))
    return url


class OverlayService:
    """One RELOAD peer with its identity, store and control channel."""

    def __init__(self, options: OverlayOptions, data_dir: Path, *, branch: str = "demo") -> None:
        self.options = options
        self.data_dir = Path(data_dir)
        self.branch = branch
        self.peer: Peer | None = None
        self.enrollment: enroll.Enrollment | None = None
        self._control: ControlServer | None = None
        self.joined_via = ""

    def _on_event(self, name: str, data: dict) -> None:
        if name == "joined":
            self.joined_via = data.get("via", "")

    @property
    def control_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    async def _obtain(self) -> enroll.Enrollment:
        folder = self.data_dir / ENROLLMENT_DIR
        try:
            return enroll.Enrollment.load(folder)
        except enroll.EnrollmentError as e:
            if not isinstance(e.__cause__, FileNotFoundError):
                raise OverlayServiceError(str(e)) from e
        opts = self.options
        if opts.enroll_url and opts.user and opts.password_file:
            try:
                password = opts.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise OverlayServiceError(
                    f"cannot read overlay.password_file {opts.password_file}: {e.strerror}"
                ) from e
            url = _config_url(opts.enroll_url)
            log.info("enrolling as %s at %s", opts.user, url)
            try:
                got = await enroll.enroll(url, opts.user, password,
                                          ssl_context=ssl.create_default_context())
            except enroll.EnrollmentError as e:
                raise OverlayServiceError(f"enrollment at {url} failed: {e}") from e
        elif opts.demo:
            got = self._demo()
        else:
            raise OverlayServiceError(
                f"no enrollment in {folder}: set overlay.demo = true, or enroll_url, user "
                "and password_file")
        got.save(folder)
        return got

    def _demo(self) -> enroll.Enrollment:
        overlay = f"{self.branch}.demo.sipmesh"
        ca, signer = load_or_make_authority(self.data_dir / "overlay-demo", overlay)
        host, port = self.options.listen
        config = overlay_document(ca, signer, bootstrap=((host, port),) if port else ())
        identity = Identity.generate(ca, f"controller@{overlay}", os.urandom(16),
                                     days=DEMO_DAYS)
        log.info("demo overlay %s: made a local CA and identity in %s", overlay, self.data_dir)
        return enroll.Enrollment(config, identity, config_doc.to_xml(config, signer))

    def _trusted_root(self, enrollment: enroll.Enrollment) -> x509.Certificate:
        for root in enrollment.config.root_certs:
            try:
                check_certificate(enrollment.identity.certificate, root)
                return root
            except SecurityError:
                continue
        raise OverlayServiceError("our certificate does not chain to a root-cert of the overlay")

    async def start(self) -> None:
        """Set up identity and store, listen, join, open the control channel."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        opts = self.options
        enrollment = self.enrollment = await self._obtain()
        root = self._trusted_root(enrollment)
        settings = OverlaySettings.from_config(enrollment.config)
        verifier = Verifier(root)
        store = Store(str(self.data_dir / STORE_FILE), settings.kinds, root, verifier=verifier)
        if opts.plain_tcp:
            log.warning("overlay links are plain TCP (plain_tcp = true): no TLS, for tests "
                        "and packet captures only")
            tls = None
        else:
            tls = links.tls_contexts(enrollment.identity, root)
        host, port = opts.listen
        peer = Peer(enrollment.identity, settings, store, verifier=verifier, host=host,
                    port=port, tls=tls, on_event=self._on_event, ice_stun=opts.stun,
                    client_listen=opts.client_listen)
        try:
            await peer.start()
        except OSError as e:
            store.close()
            raise OverlayServiceError(f"overlay cannot listen on {host}:{port}: {e}") from e
        self.peer = peer
        bootstrap = list(opts.bootstrap or enrollment.config.bootstrap_nodes)
        try:
            await peer.join(bootstrap, first=opts.first)
            self._control = ControlServer(self.control_path, peer)
            await self._control.start()
        except (OverlayError, OSError) as e:
            peer.kill()
            self.peer = None
            where = ", ".join(f"{h}:{p}" for h, p in bootstrap) or "none configured"
            raise OverlayServiceError(f"overlay peer not started: {e} (bootstrap: {where})") from e
        log.info("overlay peer %s of %s listening on %s:%d (%s), %s",
                 peer.node_id.hex(), settings.name, peer.host, peer.port,
                 "plain TCP" if tls is None else "TLS",
                 "a ring of one" if self.joined_via == "first" else f"joined via {self.joined_via}")
        if peer.client_port is not None:
            log.info("overlay clients (boards) connect on %s:%d (plain TCP, signed messages)",
                     opts.client_listen[0], peer.client_port)

    def issue_board_certificate(self, pub32: bytes, user_name: str) -> bytes:
        """A certificate (DER) for a board's Ed25519 key, issued by the demo
        overlay's CA with a fresh random Node-ID (§11.3: the enrollment
        server assigns Node-IDs). The board uses it as a RELOAD client
        (§3.2). Only a demo controller holds a CA; an enrolled one raises
        OverlayServiceError (its boards would enroll at the overlay's server)."""
        if not self.options.demo or self.enrollment is None:
            raise OverlayServiceError("only a started demo overlay holds a CA to issue "
                                      "board certificates")
        return demo_board_certificate(self.data_dir, self.enrollment.config.instance_name,
                                      pub32, user_name)[0]

    async def stop(self) -> None:
        """Close the control channel, then Leave the ring gracefully (§10.9)."""
        if self._control is not None:
            await self._control.close()
            self._control = None
        if self.peer is not None:
            try:
                await asyncio.wait_for(self.peer.stop(), 10)
            except TimeoutError:
                self.peer.kill()
            self.peer = None
