"""A board's RELOAD client (RFC 6940 §3.2, §4.2.1): Store and Fetch of one Kind, sans-I/O.

Portable (CPython and MicroPython, heap of a microcontroller). A client uses
the overlay but routes and stores nothing for others (§3.2): it keeps one
link to one peer (its controller's), over which it sends requests whose
first signed message binds the link to its Node-ID (§4.2.1: a certificate
with a single Node-ID needs no Attach). It never touches a socket:
:class:`ReloadClient` takes bytes in (``receive_data``) and gives bytes
out (``data_to_send``), like h11.

Why not :mod:`sipmesh.proto.reload` and ``reload_storage``: as .mpy they
take about 51 KB of a board's heap once imported, half of an ESP32's. A
client sends two kinds of request and reads three kinds of answer, so this
module writes and reads exactly those structures with ``struct``, in few
functions (a board imports it for one overlay refresh: its size in heap is
what counts); tests/test_board_overlay.py checks its bytes against the full
codec and the controller's signature checks.

What it sends, all signed with the board's Ed25519 key:

- StoreReq (§7.4.1) of one single-value Kind at the Resource-ID of the
  user name in the board's certificate (§10.2: SHA-1 of the name truncated
  to 128 bits), whose StoredData carries its own signature (§7.1). A store
  costs two Ed25519 signatures (the value's and the message's, §6.3.4);
  nothing else the client does signs, and a retransmission resends the
  same bytes (same transaction id, §6.2.1) without signing again.
- FetchReq (§7.4.2) of that Kind at another user's Resource-ID: one
  signature (the message's).

Framing (§6.6.2): every message is a data frame with this connection's own
sequence number from 0; every data frame received is acknowledged at once
with an ack frame whose ``received`` mask tells which of the 31 previous
sequence numbers were seen (§6.6.2.2). Acks we get are not tracked: TCP
already retransmits, and an answer that does not come is handled end to
end by the caller resending the request (:meth:`ReloadClient.resend`).

Answers: StoreAns, FetchAns and Error become answer tuples
``(tid, error, info, value, storage_time, signer)``: ``error`` is 0, the
RELOAD error code (§14.9) the peer answered with, or Error_Forbidden for a
fetched value that failed our checks; ``info`` the error_info bytes or our
reason; ``value`` the fetched value bytes (None when there is none);
``storage_time`` (ms) of the value stored or fetched; ``signer`` the user
name in the fetched value's certificate, set only when its signature was
checked. An Error_Config_Too_Old/Too_New answer makes the client adopt the
peer's configuration sequence (it is in the answer's forwarding header,
§6.3.2.1) and resend the request once with the same signatures: the
sequence is not in the signed bytes (§6.3.4). Requests from the peer (a
client has no range, so at most a stray Update) and broken messages are
counted in ``ignored``.

Checks of fetched records (optional, ``ca_key``): the signer's certificate
is found in the answer by its cert_hash (§6.3.4), its CA signature is
checked against the CA key the controller provisioned, its user name must
hash to the fetched Resource-ID (§7.3.1 USER-MATCH), and the value's
signature (§7.1) must verify with the certificate's key: two Ed25519
verifications per new signer, one per value after that (checked
certificates are kept in ``checked``, which a caller may carry from one
client to the next). The peer's own message signature is not checked (one
more verification per answer): the record's signature is what proves its
origin end to end. Certificate validity dates are not checked, a board's
clock may be unset.

State a caller keeps between clients (plain values, no object of this
module): ``config_sequence`` and ``checked``.

For a board's heap, the Ed25519 work can be kept apart from this module:
:meth:`ReloadClient.unsigned_request` gives a request's bytes to sign as
plain data (signed by the caller, then queued with :meth:`ReloadClient.send`
of a new client), and with ``defer`` set a fetched value's checks are not
run but returned, as plain data, in the answer's ``signer`` place:
``(user, cert_hash identity, key, ((key, message, signature), ...))``, the
CA's signature of the certificate first when it was not in ``checked``.
"""

import hashlib
import os
import struct

try:
    from micropython import const
except ImportError:
    const = int


KIND_DEVICE_RECORD = const(4026531842)
_MAX_ANSWER = const(8192)  # a FetchAns with two certificates is about 1.5 KB
_MAX_PENDING = const(8)
_MAX_CERT = const(2048)
_CACHE = const(4)
_M32 = const(0xFFFFFFFF)

# RFC 6940 numbers (§6.6.2, §6.3, §14.8, §14.9).
_RELO_TOKEN = const(0xD2454C4F)
_FRAME_DATA = const(0x80)
_FRAME_ACK = const(0x81)
_HDR = const(38)
_STORE_REQ = const(7)
_FETCH_REQ = const(9)
_FETCH_ANS = const(10)
_ERROR = const(0xFFFF)
_FORBIDDEN = const(2)
_CONFIG_TOO_OLD = const(0x0F)
_CONFIG_TOO_NEW = const(0x10)
_INVALID_MESSAGE = const(0x14)



class ReloadClientError(ValueError):
    """Bad input to the client: a certificate it cannot use, a wrong key
    length, too many requests in flight, or a broken stream from the peer."""


def resource_id(name):
    """Resource-ID of a resource name (RFC 6940 §10.2): SHA-1, first 128 bits."""
    if isinstance(name, str):
        name = name.encode()
    return hashlib.sha1(name).digest()[:16]


def _vec(b, p, w):
    # The vector at p with a w-byte length (§6.3.1): (its view, position after).
    e = p + w + int.from_bytes(b[p : p + w], "big")
    if e > len(b):
        raise ReloadClientError("truncated")
    return b[p + w : e], e


# ---------------------------------------------------------------- certificates


def _tlv(b, p, end, tag=0):
    # One DER TLV at p: (tag, value start, value end), lengths up to 3 bytes,
    # all within end; tag, when given, must match.
    t = b[p]
    n = b[p + 1]
    p += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k < 4:
            raise ValueError
        n = int.from_bytes(b[p : p + k], "big")
        p += k
    if p + n > end or (tag and t != tag):
        raise ValueError
    return t, p, p + n


def parse_certificate(der):
    """Walk an Ed25519 X.509 certificate (DER, RFC 5280 §4.1) for what a client
    needs (RFC 6940 §11.3): ``(user, node_id, overlay, public_key, tbs,
    signature)``, the SAN rfc822Name, the Node-ID and overlay of the SAN RELOAD
    URI, the 32-byte key, the signed TBSCertificate bytes and the CA's
    64-byte signature. Raise ReloadClientError when it is none such."""
    try:
        b = memoryview(der)
        n = len(b)
        if n > _MAX_CERT:
            raise ValueError
        _, s, e = _tlv(b, 0, n, 0x30)
        _, ts, te = _tlv(b, s, e, 0x30)
        _, a, ae = _tlv(b, te, e, 0x30)
        _, ss, se = _tlv(b, ae, e, 3)
        # AlgorithmIdentifier: OID 1.3.101.112, Ed25519 (RFC 8410 §3).
        if e != n or int.from_bytes(b[a:ae], "big") != 0x06032B6570 or se - ss != 65 or b[ss]:
            raise ValueError
        p = ts
        if b[p] == 0xA0:  # version
            p = _tlv(b, p, te)[2]
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            p = _tlv(b, p, te)[2]
        _, ks, p = _tlv(b, p, te, 0x30)
        _, a, ae = _tlv(b, ks, p, 0x30)
        _, bs, be = _tlv(b, ae, p, 3)
        if int.from_bytes(b[a:ae], "big") != 0x06032B6570 or be - bs != 33 or b[bs]:
            raise ValueError
        user = nid = ov = None
        while p < te:
            t, xs, p = _tlv(b, p, te)
            if t != 0xA3:  # extensions
                continue
            _, xs, xe = _tlv(b, xs, p, 0x30)
            while xs < xe:
                _, es, xs = _tlv(b, xs, xe, 0x30)
                _, q, oe = _tlv(b, es, xs, 6)
                if int.from_bytes(b[q:oe], "big") != 0x551D11:  # subjectAltName 2.5.29.17
                    continue
                if b[oe] == 1:  # critical
                    oe = _tlv(b, oe, xs)[2]
                _, q, oe = _tlv(b, oe, xs, 4)
                _, q, oe = _tlv(b, q, oe, 0x30)
                while q < oe:
                    t, vs, q = _tlv(b, q, oe)
                    v = bytes(b[vs:q]).decode()
                    if t == 0x81 and user is None:
                        user = v
                    elif t == 0x86 and nid is None and v[:9] == "reload://" and (
                        v[9:13] == "0110" and v[45:46] == "@"
                    ):
                        # reload://0110<Node-ID hex>@overlay/: a one-entry Destination
                        # List (§14.15)
                        try:
                            nid = bytes.fromhex(v[13:45])
                        except ValueError:
                            continue
                        if len(nid) != 16:
                            nid = None
                            continue
                        ov = v[46:].split("/")[0]
        if user is None or nid is None:
            raise ValueError
        return user, nid, ov, bytes(b[bs + 1 : be]), bytes(b[s:te]), bytes(b[ss + 1 : se])
    except (ValueError, IndexError, TypeError) as e:
        raise ReloadClientError("bad certificate") from e


# ---------------------------------------------------------------- client


class ReloadClient:
    """One board's RELOAD client state for one link to one peer.

    ``overlay_name``: the overlay's instance name; ``cert_der``: the board's
    certificate, issued by the overlay's CA for its Ed25519 key;
    ``seed``: the 32-byte Ed25519 seed; ``kind``: the Kind id stored and
    fetched (single value, USER-MATCH); ``node_id``: the Node-ID the
    controller assigned (else read from the certificate); ``ca_key``: the
    overlay CA's 32-byte Ed25519 key, to check fetched values (else they
    are not checked); ``config_sequence``: the overlay configuration's
    sequence number, when known (else learnt from the first answer);
    ``checked``: certificates checked by an earlier client (a dict).
    Signing and verifying use sipmesh.proto.ed25519, imported when first
    used (it is the biggest module a board loads).

    One request is in flight at a time (a board needs no more): a new one
    replaces it, and an answer to an older one is dropped. ``tid`` is the
    transaction id of the request in flight (0 when none); ``ignored``
    counts messages received and dropped.
    """

    def __init__(
        self,
        overlay_name,
        cert_der,
        seed,
        kind=KIND_DEVICE_RECORD,
        node_id=None,
        ca_key=None,
        config_sequence=0,
        checked=None,
    ):
        cert = parse_certificate(cert_der)
        if len(seed) != 32 or (ca_key is not None and len(ca_key) != 32):
            raise ReloadClientError("bad key")
        if node_id is not None and bytes(node_id) != cert[1] or cert[2] != overlay_name:
            raise ReloadClientError("wrong certificate")  # another Node-ID or overlay
        # Forwarding header's overlay (§6.3.2): low 32 bits of SHA-1 of the name.
        self.overlay = int.from_bytes(hashlib.sha1(overlay_name.encode()).digest()[16:], "big")
        self.user = cert[0]
        self.node_id = cert[1]
        self.kind = kind
        self.config_sequence = config_sequence
        self.ca_key = ca_key
        self.checked = {} if checked is None else checked
        self._seed = seed
        der = bytes(cert_der)
        # SignerIdentity cert_hash (§6.3.4): SHA-256 (4) of the certificate,
        # and the Signature's head: hash "intrinsic" (8), Ed25519 (7), our
        # identity, a 64-byte signature to follow.
        self._ident = bytes((1, 0, 34, 4, 32)) + hashlib.sha256(der).digest()
        self._sigh = bytes((8, 7)) + self._ident + bytes((0, 64))
        # The SecurityBlock's certificates<0..2^16-1>: our certificate, X.509 (0).
        n = len(der)
        self._certs = (n + 3).to_bytes(2, "big") + bytes(1) + n.to_bytes(2, "big") + der
        self.tid = 0
        self.ignored = 0
        self.defer = False
        self.reset()

    def reset(self):
        """Forget the framing state: call for each new connection (§6.6.2
        sequence numbers are per connection). The request stays in flight."""
        self._out = []
        self._in = b""
        self._seq = 0
        self._rx = None  # (last sequence received, its received mask)

    def data_to_send(self):
        """Bytes to write to the link now (possibly empty)."""
        return b"".join(self.parts_to_send())

    def parts_to_send(self):
        """What :meth:`data_to_send` gives, as a list of byte strings to write
        in turn: a board's heap then holds no joined copy of a request."""
        out = self._out
        self._out = []
        return out

    def resend(self):
        """Queue the request in flight again, same transaction id and
        signatures (§6.2.1 retransmission)."""
        # Data frame (§6.6.2), ForwardingHeader (§6.3.2) with the one resource
        # destination, then the signed contents and security block.
        req = self._req
        n = _HDR + 19 + sum(len(x) for x in req[2])
        self._out.append(
            struct.pack(
                ">BIHBIIHBBIIQIHHHBBB",
                _FRAME_DATA,
                self._seq,
                n >> 8,
                n & 0xFF,
                _RELO_TOKEN,
                self.overlay,
                self.config_sequence,
                0x0A,
                100,
                0xC0000000,
                n,
                self.tid,
                0,
                0,
                19,
                0,
                2,
                17,
                16,
            )
            + req[1]
        )
        self._out += req[2]
        self._seq = (self._seq + 1) & _M32

    def request(self, code, rid, body, storage_time=0, lifetime=3600, data_seed=None):
        """Send a signed request with message code ``code`` (§14.8) and
        ``body`` to Resource-ID ``rid``; return its transaction id. For a
        StoreReq (§7.4.1, :meth:`store`) ``body`` is the value, and the
        request is made around it; a FetchReq (:meth:`fetch`) has no body."""
        return self.send(self.sign_request(code, rid, body, storage_time, lifetime, data_seed))

    def sign_request(self, code, rid, body, storage_time=0, lifetime=3600, data_seed=None):
        """The request :meth:`request` sends, signed but not sent: a plain
        tuple for :meth:`send` (of this client or of a later one with the same
        identity and overlay). ``data_seed`` signs a stored value with another
        key (tests of the peer's checks)."""
        from sipmesh.proto.ed25519 import sign

        tid, code, rid, st, head, pre, sdt, post, ident = self.unsigned_request(
            code, rid, body, storage_time, lifetime
        )
        msg = pre + sign(data_seed or self._seed, sdt) + post if sdt else pre
        return (tid, code, rid, msg, sign(self._seed, head + msg + ident), st)

    def unsigned_request(self, code, rid, body, storage_time=0, lifetime=3600):
        """The request of :meth:`sign_request` before its signatures, as plain
        bytes: ``(tid, code, rid, storage_time, head, pre, sd_tbs, post,
        ident)``. For a store the message is ``pre + sign(sd_tbs) + post``
        (the StoredData's own signature, §7.1), for a fetch (``sd_tbs`` None)
        it is ``pre``; the message's signature (§6.3.4) is over ``head +
        message + ident``. A board makes them, drops this module, signs with
        Ed25519 alone, and gives the result to :meth:`send` of a new client:
        the two never share its heap."""
        post = b""
        sdt = None
        if code == _FETCH_REQ:
            # One StoredDataSpecifier (§7.4.2.1): our Kind, generation 0, no indices.
            body = struct.pack(">B16sHIQH", 16, rid, 14, self.kind, 0, 0)
        if code == _STORE_REQ:
            # StoredData (§7) of a single value, signed (§7.1) over Resource-ID,
            # Kind, storage time, value and our identity; its signature ends it.
            dv = bytes((1,)) + len(body).to_bytes(4, "big") + body
            t = struct.pack(">IQ", self.kind, storage_time)
            sdt = rid + t + dv + self._ident
            body = t[4:] + lifetime.to_bytes(4, "big") + dv + self._sigh
            n = len(body) + 64
            body = (
                struct.pack(">B16sBIIQII", 16, rid, 0, n + 20, self.kind, 0, n + 4, n) + body
            )
            post = bytes(4)
            dv = t = None
        tid = int.from_bytes(os.urandom(8), "big")
        # MessageContents (§6.3.3) without extensions, then the SecurityBlock:
        # our certificate and the Signature (§6.3.4) over overlay, transaction
        # id, contents and identity: hash "intrinsic" (8), Ed25519 (7).
        n = len(body) + (64 if sdt else 0)
        pre = code.to_bytes(2, "big") + n.to_bytes(4, "big") + body
        if not sdt:
            pre += bytes(4)
        head = struct.pack(">IQ", self.overlay, tid)
        return (tid, code, rid, storage_time, head, pre, sdt, post, self._ident)

    def send(self, req):
        """Queue ``req``, a tuple from :meth:`sign_request`, as the request in
        flight; return its transaction id."""
        tid, code, rid, msg, sig, storage_time = req
        self.tid = tid
        # What an answer and a resend need: code, destination, message, time, retried.
        self._req = [code, rid, (msg, self._certs, self._sigh, sig), storage_time, False]
        self.resend()
        return tid

    def unsigned_store(self, value, storage_time, lifetime=3600):
        """:meth:`unsigned_request` of a StoreReq of ``value`` at our own Resource-ID."""
        rid = resource_id(self.user)
        return self.unsigned_request(_STORE_REQ, rid, value, storage_time, lifetime)

    def unsigned_fetch(self, user):
        """:meth:`unsigned_request` of a FetchReq at ``user``'s Resource-ID."""
        return self.unsigned_request(_FETCH_REQ, resource_id(user), None)

    def store(self, value, storage_time, lifetime=3600, user=None, data_seed=None):
        """Send a StoreReq (§7.4.1) of ``value`` bytes at the Resource-ID of
        our own user name; return its transaction id.

        ``storage_time``: ms since 1970, newer than the stored value's
        (§7.4.1.1); ``lifetime``: seconds. ``user`` and ``data_seed`` store
        at another user's resource or sign the value with another key: the
        peer must refuse both (tests of its checks use them)."""
        rid = resource_id(user or self.user)
        return self.request(_STORE_REQ, rid, value, storage_time, lifetime, data_seed)

    def fetch(self, user):
        """Send a FetchReq (§7.4.2) of our Kind at ``user``'s Resource-ID."""
        return self.request(_FETCH_REQ, resource_id(user), None)

    def receive_data(self, data):
        """Feed bytes read from the link; return the answer tuples they
        complete. A broken stream, or b"" (the link closed, as in h11),
        raises ReloadClientError: close the link."""
        if not data:
            raise ReloadClientError("closed")
        b = self._in + data if self._in else data
        data = self._in = None  # one copy of the bytes while answers are checked
        answers = []
        p = 0
        while p < len(b):
            t = b[p]
            if t == _FRAME_ACK:
                if len(b) - p < 9:
                    break
                p += 9
                continue
            if t != _FRAME_DATA:
                raise ReloadClientError("bad RELOAD frame")
            if len(b) - p < 8:
                break
            seq, n = struct.unpack_from(">II", b, p + 1)
            n = (n >> 8) + 8
            if n > _MAX_ANSWER:
                raise ReloadClientError("RELOAD frame too long")
            if len(b) - p < n:
                break
            # Ack (§6.6.2.2): bit k of ``received`` = sequence seq-k was received.
            rx = self._rx
            bits = 0
            if rx is None:
                self._rx = (seq, 0)
            else:
                d = (seq - rx[0]) & _M32
                if 0 < d < 0x80000000:  # newer than the last one
                    if d < 32:
                        bits = ((rx[1] | 1) << d) & _M32
                    self._rx = (seq, bits)
            self._out.append(bytes((_FRAME_ACK,)) + struct.pack(">II", seq, bits))
            try:
                a = self._answer(memoryview(b)[p + 8 : p + n])
            except (ValueError, IndexError):  # a broken message: its sender retries
                a = None
            if a is None:
                self.ignored += 1
            else:
                answers.append(a)
            p += n
        self._in = bytes(b[p:])
        return answers

    def _answer(self, b):
        # Forwarding header (§6.3.2): ours if it carries the transaction id in flight.
        tok, ov, cseq, ver = struct.unpack_from(">IIHB", b, 0)
        n, tid = struct.unpack_from(">IQ", b, 16)
        req = self._req
        if tok != _RELO_TOKEN or ver != 0x0A or ov != self.overlay or n != len(b) or (
            not tid or tid != self.tid
        ):
            return None
        q = _HDR + sum(struct.unpack_from(">HHH", b, 32))
        code = b[q] << 8 | b[q + 1]
        body, q = _vec(b, q + 2, 4)
        q = _vec(b, q, 4)[1]  # extensions
        certs = _vec(b, q, 2)[0]  # SecurityBlock (§6.3.4)
        a = [tid, 0, b"", None, req[3], None]
        if code == _ERROR:
            c = body[0] << 8 | body[1]
            if (c == _CONFIG_TOO_OLD or c == _CONFIG_TOO_NEW) and (
                not req[4] and cseq != self.config_sequence
            ):
                # §6.3.2.1: take the peer's sequence; the signatures stay valid.
                self.config_sequence = cseq
                req[4] = True
                self.resend()
                return None
            a[1] = c
            a[2] = bytes(_vec(body, 2, 2)[0])
        elif code & 1:
            return None  # a request: a client answers none
        elif code != req[0] + 1:
            a[1] = _INVALID_MESSAGE
            a[2] = "bad answer"
        elif code == _FETCH_ANS:
            # KindResponses (§7.4.2.2) of StoredData (§7); ours is single-valued.
            kr = _vec(body, 0, 4)[0]
            q = 0
            while q < len(kr):
                kind = bytes(kr[q : q + 4])
                vals, q = _vec(kr, q + 12, 4)
                v = 0
                while v < len(vals):
                    sd, v = _vec(vals, v, 4)
                    dv = _vec(sd, 13, 4)[1]
                    ih, e = _vec(sd, dv + 3, 2)
                    sig, e = _vec(sd, e, 2)
                    if e != len(sd):
                        raise ReloadClientError("bad stored data")
                    if int.from_bytes(kind, "big") != self.kind or not sd[12]:
                        continue  # another Kind, or no value
                    a[4] = int.from_bytes(sd[:8], "big")
                    a[3] = bytes(sd[17:dv])
                    if self.ca_key is not None:
                        why, a[5] = self._check(sd, dv, bytes(ih), sig, certs, req[1] + kind)
                        if why:
                            a[1] = _FORBIDDEN
                            a[2] = why
                            a[3] = a[5] = None
        self.tid = 0
        return tuple(a)

    def _check(self, sd, dv, ih, sig, certs, rk):
        # StoredData sd's signature (§7.1) by a certificate of our CA whose
        # user name is the resource's (§7.3.1): (reason, None) when refused,
        # else (None, signer): the user name, or with ``defer`` the pending
        # check (user, ih, key, ((key, message, signature), ...)).
        # Ed25519 by a cert_hash identity (§6.3.4), SHA-256 (RFC 5246 §7.4.1.4.1: 4).
        if bytes(sd[dv : dv + 5]) != self._sigh[:5] or ih[:2] != self._sigh[5:7]:
            return "unknown algorithm", None
        signer = self.checked.get(ih)
        proofs = []
        if signer is None:
            p = 0
            while not signer and p < len(certs):
                t = certs[p]
                der, p = _vec(certs, p + 1, 2)
                if t == 0 and hashlib.sha256(der).digest() == ih[2:]:
                    try:
                        signer = parse_certificate(der)
                    except ReloadClientError:
                        return "bad signer certificate", None
            if not signer:
                return "signer not of our CA", None  # no certificate
            proofs.append((self.ca_key, signer[4], signer[5]))
            signer = (signer[0], signer[3])
        if resource_id(signer[0]) != rk[:16]:
            return "signer is not the user", None
        # Signed: Resource-ID, Kind, storage time, StoredDataValue, identity.
        proofs.append((signer[1], rk + sd[:8] + sd[12:dv] + sd[dv + 2 : dv + 5] + ih, bytes(sig)))
        pending = (signer[0], ih, signer[1], proofs)
        if self.defer:
            return None, pending
        return self._settle(pending)

    def _settle(self, pending):
        # Verify the proofs of a pending check: (None, user), the signer
        # then in ``checked``, or (reason, None).
        from sipmesh.proto.ed25519 import verify

        user, ih, key, proofs = pending
        for i, p in enumerate(proofs):
            if not verify(*p):
                # The CA's signature of the certificate comes first when there.
                return ("signer not of our CA" if i < len(proofs) - 1 else "signature"), None
        if ih not in self.checked:
            if len(self.checked) >= _CACHE:
                self.checked.pop(next(iter(self.checked)))
            self.checked[ih] = (user, key)
        return None, user
