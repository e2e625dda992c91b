"""Controller configuration: an embedded default, optionally replaced by a TOML file.

The default is a working demo branch so that ``sipmesh run`` needs no file.
Unknown sections or keys are errors, not silently ignored: a typo in a
telephony appliance's configuration must be seen at start, not in a call.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sipmesh.autopeer.options import AutopeerOptions
from sipmesh.autopeer.options import parse as parse_autopeer
from sipmesh.boards.options import BoardsOptions
from sipmesh.boards.options import parse as parse_boards

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration file is unreadable or holds a wrong value."""


@dataclass(frozen=True)
class OverlayOptions:
    """The ``[overlay]`` section: how this controller takes part in the
    RELOAD overlay (RFC 6940) as a peer. Disabled unless ``enabled``."""

    enabled: bool = False
    listen: tuple[str, int] = ("127.0.0.1", 6084)
    bootstrap: tuple[tuple[str, int], ...] = ()
    first: bool = False
    demo: bool = False
    enroll_url: str = ""
    user: str = ""
    password_file: Path | None = None
    plain_tcp: bool = False
    stun: tuple[str, int] | None = None
    client_listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class Config:
    """The controller's settings after validation."""

    branch: str
    data_dir: Path
    log_level: str
    source: str
    sip_listen: tuple[tuple[str, str, int], ...] = ()
    sip_user: str = "controller"
    overlay: OverlayOptions = field(default_factory=OverlayOptions)
    autopeer: AutopeerOptions = field(default_factory=AutopeerOptions)
    boards: BoardsOptions = field(default_factory=BoardsOptions)


def default_text() -> str:
    """The embedded default configuration as TOML text."""
    return resources.files("sipmesh").joinpath("default.toml").read_text(encoding="utf-8")


def load(path: str | Path | None = None) -> Config:
    """Load the configuration from path, or the embedded default when path is None."""
    if path is None:
        text, source = default_text(), "embedded default"
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: {e}") from e
    return _validate(doc, source)


def _validate(doc: dict, source: str) -> Config:
    unknown = set(doc) - {"controller", "sip", "overlay", "autopeer", "boards"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s): {', '.join(sorted(unknown))}")
    section = doc.get("controller", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [controller] must be a table")
    unknown = set(section) - {"branch", "data_dir", "log_level"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [controller]: {', '.join(sorted(unknown))}")
    branch = section.get("branch", "demo")
    if not isinstance(branch, str) or not branch or not branch.replace("-", "").isalnum():
        raise ConfigError(f"{source}: controller.branch must be letters, digits and '-'")
    data_dir = section.get("data_dir", ".sipmesh")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f"{source}: controller.data_dir must be a path")
    log_level = section.get("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{source}: controller.log_level must be one of {', '.join(LOG_LEVELS)}")
    listen, user = _sip(doc.get("sip", {}), source)
    overlay = _overlay(doc.get("overlay", {}), source)
    try:
        autopeer = parse_autopeer(doc.get("autopeer", {}))
        boards = parse_boards(doc.get("boards", {}))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    return Config(branch=branch, data_dir=Path(data_dir), log_level=log_level, source=source,
                  sip_listen=listen, sip_user=user, overlay=overlay, autopeer=autopeer,
                  boards=boards)


def _sip(section: object, source: str) -> tuple[tuple[tuple[str, str, int], ...], str]:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [sip] must be a table")
    unknown = set(section) - {"listen", "user"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [sip]: {', '.join(sorted(unknown))}")
    entries = section.get("listen", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: sip.listen must be a list of \"udp|tcp:HOST:PORT\"")
    listen = []
    for entry in entries:
        proto, _, rest = str(entry).partition(":")
        host, _, port = rest.rpartition(":")
        if proto == "tls":
            raise ConfigError(f"{source}: sip.listen {entry!r}: TLS needs a certificate, "
                              "which this release cannot configure yet")
        if proto not in ("udp", "tcp") or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{source}: sip.listen {entry!r} is not \"udp|tcp:HOST:PORT\"")
        listen.append((proto, host.strip("[]"), int(port)))
    user = section.get("user", "controller")
    if not isinstance(user, str) or not user or not user.replace("-", "").isalnum():
        raise ConfigError(f"{source}: sip.user must be letters, digits and '-'")
    return tuple(listen), user


_OVERLAY_KEYS = {"enabled", "listen", "bootstrap", "first", "demo", "enroll_url", "user",
                 "password_file", "plain_tcp", "stun", "client_listen"}


def parse_host_port(text: object) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 in brackets) -> (host, port); ValueError otherwise."""
    host, _, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not \"HOST:PORT\"")
    return host, int(port)


def _overlay(section: object, source: str) -> OverlayOptions:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [overlay] must be a table")
    unknown = set(section) - _OVERLAY_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [overlay]: {', '.join(sorted(unknown))}")
    for key in ("enabled", "first", "demo", "plain_tcp"):
        if not isinstance(section.get(key, False), bool):
            raise ConfigError(f"{source}: overlay.{key} must be true or false")
    for key in ("enroll_url", "user", "password_file"):
        if not isinstance(section.get(key, ""), str):
            raise ConfigError(f"{source}: overlay.{key} must be a string")
    try:
        listen = parse_host_port(section.get("listen", "127.0.0.1:6084"))
    except ValueError as e:
        raise ConfigError(f"{source}: overlay.listen {e}") from None
    entries = section.get("bootstrap", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: overlay.bootstrap must be a list of \"HOST:PORT\"")
    try:
        bootstrap = tuple(parse_host_port(e) for e in entries)
    except ValueError as e:
        raise ConfigError(f"{source}: overlay.bootstrap {e}") from None
    stun = None
    if "stun" in section:
        try:
            stun = parse_host_port(section["stun"])
        except ValueError as e:
            raise ConfigError(f"{source}: overlay.stun {e}") from None
    client_listen = None
    if "client_listen" in section:
        try:
            client_listen = parse_host_port(section["client_listen"])
        except ValueError as e:
            raise ConfigError(f"{source}: overlay.client_listen {e}") from None
    opts = OverlayOptions(
        enabled=section.get("enabled", False), listen=listen, bootstrap=bootstrap, stun=stun,
        first=section.get("first", False), demo=section.get("demo", False),
        enroll_url=section.get("enroll_url", ""), user=section.get("user", ""),
        password_file=Path(section["password_file"]) if section.get("password_file") else None,
        plain_tcp=section.get("plain_tcp", False), client_listen=client_listen,
    )
    if opts.enabled and not opts.demo and not (opts.enroll_url and opts.user
                                               and opts.password_file):
        raise ConfigError(f"{source}: [overlay] needs demo = true, or enroll_url, user and "
                          "password_file (an enrollment already saved in data_dir is reused)")
    return opts
