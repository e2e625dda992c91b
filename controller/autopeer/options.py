"""The ``[autopeer]`` configuration section: where the provider's capability
set comes from and how this edge authenticates (RFC 10006 §4.3, §4.5, §5).

Either ``capset_url`` (manual configuration, §4.5 item 1) or ``resource``
(WebFinger discovery, §4.5 item 2) names the document. The bearer token is
a static one read from ``token_file`` or obtained with the OAuth 2.0
client-credentials grant (RFC 6749 §4.4) from ``token_url``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEYS = {"enabled", "resource", "capset_url", "webfinger_host", "token_file", "token_url",
        "client_id", "client_secret_file", "ca_file", "refresh_hours", "auto_apply",
        "yang_modules"}


@dataclass(frozen=True)
class AutopeerOptions:
    """How the controller finds, authenticates to and polls the capability server."""

    enabled: bool = False
    resource: str = ""
    capset_url: str = ""
    webfinger_host: str = ""
    token_file: Path | None = None
    token_url: str = ""
    client_id: str = ""
    client_secret_file: Path | None = None
    ca_file: Path | None = None
    refresh_hours: float = 24.0
    auto_apply: bool = True
    yang_modules: tuple[Path, ...] = ()

    def source_problem(self) -> str | None:
        """Why this section cannot fetch anything, or None."""
        if not (self.capset_url or self.resource):
            return "set capset_url (the provider's https URL) or resource (acct: or https:)"
        if not (self.token_file or (self.token_url and self.client_id
                                    and self.client_secret_file)):
            return "set token_file, or token_url, client_id and client_secret_file"
        return None


def parse(section: object) -> AutopeerOptions:
    """Check a parsed TOML table; ValueError with the key's name when wrong."""
    if not isinstance(section, dict):
        raise ValueError("[autopeer] must be a table")
    unknown = set(section) - KEYS
    if unknown:
        raise ValueError(f"unknown key(s) in [autopeer]: {', '.join(sorted(unknown))}")
    for key in ("enabled", "auto_apply"):
        if not isinstance(section.get(key, False), bool):
            raise ValueError(f"autopeer.{key} must be true or false")
    for key in ("resource", "capset_url", "webfinger_host", "token_file", "token_url",
                "client_id", "client_secret_file", "ca_file"):
        if not isinstance(section.get(key, ""), str):
            raise ValueError(f"autopeer.{key} must be a string")
    for key in ("capset_url", "token_url"):
        if section.get(key) and not section[key].startswith("https://"):
            raise ValueError(f"autopeer.{key} must be an https:// URL (RFC 10006 §4.2)")
    resource = section.get("resource", "")
    if resource and not resource.startswith(("acct:", "https://")):
        raise ValueError("autopeer.resource must be acct:USER@HOST or an https:// URI")
    hours = section.get("refresh_hours", 24)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 30:
        raise ValueError("autopeer.refresh_hours must be a number of hours (0 < h <= 720)")
    modules = section.get("yang_modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ValueError("autopeer.yang_modules must be a list of .yang file paths")

    def path(key: str) -> Path | None:
        return Path(section[key]) if section.get(key) else None

    opts = AutopeerOptions(
        enabled=section.get("enabled", False), resource=resource,
        capset_url=section.get("capset_url", ""),
        webfinger_host=section.get("webfinger_host", ""), token_file=path("token_file"),
        token_url=section.get("token_url", ""), client_id=section.get("client_id", ""),
        client_secret_file=path("client_secret_file"), ca_file=path("ca_file"),
        refresh_hours=float(hours), auto_apply=section.get("auto_apply", True),
        yang_modules=tuple(Path(m) for m in modules),
    )
    problem = opts.source_problem()
    if opts.enabled and problem:
        raise ValueError(f"[autopeer] is enabled but incomplete: {problem}")
    return opts
