"""The provider trunk as typed settings, read from an RFC 10006 capability set (§7.2, §8).

Every field follows one leaf or list of ``ietf-sip-auto-peering``; ``None``
means the provider did not say (the module declares no ``default``
statement, so nothing is invented), an empty tuple means the list was not
given. Values are spelled the way the SIP and SDP world spells them
("PCMU", "INVITE", "100rel"), not as YANG identities. The mapping itself is
in ``sipmesh.autopeer.trunk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

# Largest number of inbound numbers one trunk may expand to: a uint16 count
# allows 65535 numbers per range, and a 1 MiB document could list
# thousands of ranges; far beyond any branch office, small enough for memory.
MAX_DIDS = 100_000


@dataclass(frozen=True)
class HostPort:
    """A registrar, call-control server or outbound proxy (the module's ``entity`` grouping)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """Digest credentials for one realm (RFC 10006 §7.2 ``realm``).

    ``password`` is clear text or None: SIP digest (RFC 7616, RFC 3261
    §22.4) needs the password itself or HA1, which a crypt(3) hash is not.
    ``crypt_hash`` keeps the provider's hashed form so that a new hash (a
    rotated password) is noticed; ``problem`` says what the operator must do.
    """

    realm: str
    username: str | None
    password: str | None
    problem: str | None
    crypt_hash: str | None = None


@dataclass(frozen=True)
class Codec:
    """One audio format in the provider's preference order (RFC 10006 §7.2 ``media-type-audio``).

    ``name`` is the SDP encoding name (RFC 4855 / RFC 3551); ``payload_type``
    the static RTP payload type of RFC 3551 §6 where one exists.
    """

    name: str
    rate: int | None
    ptime: int | None
    parameters: str | None
    payload_type: int | None


@dataclass(frozen=True)
class Dtmf:
    """DTMF relay as RTP named telephone events (RFC 10006 §7.2 ``dtmf``).

    ``mode`` is "rfc4733" (the newer standard), "rfc2833" (the older) or None.
    """

    mode: str | None
    payload_type: int | None


@dataclass(frozen=True)
class CallerId:
    """Calling number presentation (``caller-id``).

    ``method`` is the module's enum: "from" or "p-asserted-identity".
    """

    e164: bool | None
    method: str | None


@dataclass(frozen=True)
class Stir:
    """STIR support (``secure-telephony-identity``, RFC 8224 / RFC 8555 for ACME)."""

    compliance: bool | None
    certificate_delegation: bool | None
    acme_directory: str | None


@dataclass(frozen=True)
class NumberRange:
    """One DID allocation (``number-range``): type "range", "collection" or "reference".

    For a range, ``values[0]`` is the first number and ``count`` the size of
    the block; for a collection, ``values`` are the numbers; for a
    reference, ``values`` hold the URL of the list (not fetched here).
    """

    index: int
    type: str | None
    count: int | None
    values: tuple[str, ...]

    def numbers(self) -> tuple[str, ...]:
        """The numbers this entry allocates; () for a reference or an unusable range."""
        if self.type == "collection":
            return self.values
        if self.type != "range" or not self.values or not self.count:
            return ()
        start = self.values[0]
        plus = "+" if start.startswith("+") else ""
        digits = start[len(plus):]
        if not digits.isdigit():
            return ()
        first, width = int(digits), len(digits)
        count = min(self.count, MAX_DIDS)
        return tuple(f"{plus}{first + i:0{width}d}" for i in range(count))

    def problem(self) -> str | None:
        """Why this entry gives fewer numbers than it seems to, or None."""
        what = f"number range {self.index}"
        if self.type == "reference":
            urls = ", ".join(self.values) or "no URL"
            return (f"{what} is a reference ({urls}); those numbers are not fetched, "
                    "route them by hand")
        if self.type == "range":
            if not self.values or not (self.values[0].lstrip("+").isdigit()):
                return f"{what} has no usable first number; it gives no inbound numbers"
            if not self.count:
                return f"{what} has no count; it gives no inbound numbers"
            if len(self.values) > 1:
                return f"{what} is a range with {len(self.values)} values; only the first is used"
        if self.type is None:
            return f"{what} has no type; it gives no inbound numbers"
        return None


@dataclass(frozen=True)
class VendorExtension:
    """Data of a module augmenting ``ietf-sip-auto-peering`` (RFC 10006 §7.3).

    ``path`` is the JSON pointer of the member, ``data`` its JSON value;
    ``validated`` is True only when the vendor module is installed and the
    data was checked against it.
    """

    module: str
    path: str
    data: Any
    validated: bool


@dataclass(frozen=True)
class TrunkConfig:
    """Everything the trunk needs from one capability set (RFC 10006 §8)."""

    variant: str
    not_before: datetime
    revision_location: str
    mode: str
    transports: tuple[str, ...]
    signaling_secure: bool | None
    tls_versions: tuple[str, ...]
    registrars: tuple[HostPort, ...]
    call_control: tuple[HostPort, ...]
    outbound_proxies: tuple[HostPort, ...]
    dns_servers: tuple[str, ...]
    credentials: tuple[Credentials, ...]
    codecs: tuple[Codec, ...]
    fax: tuple[str, ...]
    rtp_trigger: bool | None
    symmetric_rtp: bool | None
    symmetric_rtcp: bool | None
    rtcp_feedback: bool | None
    dtmf: Dtmf
    early_media: bool | None
    signaling_forking: bool | None
    methods: tuple[str, ...]
    caller_id: CallerId
    number_ranges: tuple[NumberRange, ...]
    key_management: tuple[str, ...]
    certificate_location: str | None
    stir: Stir
    extensions: tuple[str, ...]
    vendor: tuple[VendorExtension, ...]

    @cached_property
    def dids(self) -> tuple[str, ...]:
        """Every inbound number to route, sorted (shorter first, then by digits), no duplicates."""
        found = {n for r in self.number_ranges for n in r.numbers()}
        return tuple(sorted(found, key=lambda n: (len(n), n)))

    @property
    def problems(self) -> tuple[str, ...]:
        """Sentences an operator must act on: credentials first, then number ranges."""
        out = [c.problem for c in self.credentials if c.problem]
        out += [p for r in self.number_ranges if (p := r.problem())]
        return tuple(out)


def number_runs(numbers: tuple[str, ...] | list[str]) -> list[str]:
    """Sorted numbers as runs: "19725455000-19725455019" for consecutive ones, else the number."""
    runs: list[list[str]] = []
    for n in numbers:
        if runs and _next(runs[-1][-1]) == n:
            runs[-1].append(n)
        else:
            runs.append([n])
    return [r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]


def _next(number: str) -> str | None:
    plus = "+" if number.startswith("+") else ""
    digits = number[len(plus):]
    if not digits.isdigit():
        return None
    return f"{plus}{int(digits) + 1:0{len(digits)}d}"
