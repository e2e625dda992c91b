"""The ``[boards]`` configuration section: where the controller serves the
boards' signed configuration and on which interfaces it speaks mDNS.

The configuration endpoint listens only where ``listen`` says (loopback by
default: a controller that was not told which LAN its boards are on serves
nothing to it). ``interfaces`` limits mDNS (RFC 6762) browsing and the
controller's own announcement to those IPv4 addresses; empty means all.
``heartbeat``, ``pull`` and ``refresh`` are the intervals, in seconds, given
to newly enrolled boards; a board is marked lost after ``lost_after``
missed heartbeats. ``virtual`` is how many virtual boards (the MicroPython
unix port behind a PTY, on loopback) the controller itself starts and
provisions: the demo's boards; 0 (the default) starts none.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

KEYS = {"enabled", "listen", "advertise", "interfaces", "announce", "browse", "heartbeat",
        "pull", "refresh", "lost_after", "virtual"}

# One day: a heartbeat rarer than this could not tell "lost" from "asleep".
MAX_INTERVAL = 86400
# Each virtual board is one MicroPython process with a 100 KB heap; a demo needs a few.
MAX_VIRTUAL = 8


@dataclass(frozen=True)
class BoardsOptions:
    """How the controller finds, configures and watches its boards."""

    enabled: bool = False
    listen: tuple[str, int] = ("127.0.0.1", 7380)
    advertise: str = ""
    interfaces: tuple[str, ...] = ()
    announce: bool = True
    browse: bool = True
    heartbeat: int = 30
    pull: int = 300
    refresh: int = 600
    lost_after: int = 3
    virtual: int = 0

    @property
    def controller_host(self) -> str:
        """The address boards are told to reach the configuration endpoint at."""
        if self.advertise:
            return self.advertise
        host = self.listen[0]
        if host in ("0.0.0.0", "") and self.interfaces:
            return self.interfaces[0]
        return host

    @property
    def intervals(self) -> dict[str, int]:
        """The config's ``intervals`` entry for a board enrolled now."""
        return {"heartbeat": self.heartbeat, "pull": self.pull, "refresh": self.refresh}


def _host_port(text: object) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"boards.listen {text!r} is not \"HOST:PORT\"")
    return host, int(port)


def _ipv4(key: str, text: object) -> str:
    try:
        return str(ipaddress.IPv4Address(str(text)))
    except ValueError:
        raise ValueError(f"boards.{key} {text!r} is not an IPv4 address") from None


def parse(section: object) -> BoardsOptions:
    """Check a parsed TOML table; ValueError with the key's name when wrong."""
    if not isinstance(section, dict):
        raise ValueError("[boards] must be a table")
    unknown = set(section) - KEYS
    if unknown:
        raise ValueError(f"unknown key(s) in [boards]: {', '.join(sorted(unknown))}")
    for key in ("enabled", "announce", "browse"):
        if not isinstance(section.get(key, True), bool):
            raise ValueError(f"boards.{key} must be true or false")
    listen = _host_port(section.get("listen", "127.0.0.1:7380"))
    advertise = section.get("advertise", "")
    if advertise:
        advertise = _ipv4("advertise", advertise)
    entries = section.get("interfaces", [])
    if not isinstance(entries, list):
        raise ValueError("boards.interfaces must be a list of IPv4 addresses")
    interfaces = tuple(_ipv4("interfaces", e) for e in entries)
    numbers = {}
    for key, default, low in (("heartbeat", 30, 1), ("pull", 300, 1), ("refresh", 600, 1),
                              ("lost_after", 3, 1), ("virtual", 0, 0)):
        value = section.get(key, default)
        top = {"lost_after": 100, "virtual": MAX_VIRTUAL}.get(key, MAX_INTERVAL)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
            raise ValueError(f"boards.{key} must be a whole number from {low} to {top}")
        numbers[key] = value
    return BoardsOptions(
        enabled=section.get("enabled", False), listen=listen, advertise=advertise,
        interfaces=interfaces, announce=section.get("announce", True),
        browse=section.get("browse", True), **numbers)
