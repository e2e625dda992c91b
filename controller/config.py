"""Controller configuration: an embedded default, optionally replaced by a TOML file.

The default is a working demo branch so that ``sipmesh run`` needs no file.
Unknown sections or keys are errors, not silently ignored: a typo in a
telephony appliance's configuration must be seen at start, not in a call.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration file is unreadable or holds a wrong value."""


@dataclass(frozen=True)
class Config:
    """The controller's settings after validation."""

    branch: str
    data_dir: Path
    log_level: str
    source: str
    sip_listen: tuple[tuple[str, str, int], ...] = ()
    sip_user: str = "controller"


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
    unknown = set(doc) - {"controller", "sip"}
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
    return Config(branch=branch, data_dir=Path(data_dir), log_level=log_level, source=source,
                  sip_listen=listen, sip_user=user)


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
