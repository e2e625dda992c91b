"""The Auto Peer loop: find, fetch, validate, map and keep the provider trunk.

RFC 10006 §5 recommends polling every 24 hours with conditional requests;
§7.2 ``revision/not-before`` says when a set's parameters take effect and
``revision/location`` where the next revision is published. So each poll
asks ``revision/location`` of the set in force (falling back to the
configured or discovered URL when that fails; a location on another
server is not followed, so our token goes nowhere else), sends the stored
ETag, and
a valid set whose not-before lies ahead waits as the candidate and is
applied at that instant. A provider that is down, refuses our token or
serves an invalid document never changes the trunk in force (§8): the
failure is logged and recorded, and the poll is retried sooner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sipmesh.autopeer.diff import changes
from sipmesh.autopeer.discovery import discover
from sipmesh.autopeer.errors import AutopeerError
from sipmesh.autopeer.fetch import fetch_capset
from sipmesh.autopeer.https import open_session, same_origin
from sipmesh.autopeer.options import AutopeerOptions
from sipmesh.autopeer.store import StoredCapset, TrunkStore
from sipmesh.autopeer.token import ClientCredentials, StaticToken
from sipmesh.autopeer.trunk import TrunkConfig, from_json, map_capset, to_json
from sipmesh.autopeer.validate import CapsetError, Issue, Validator

log = logging.getLogger("sipmesh.autopeer")

RETRY_FIRST = 300.0
RETRY_MAX = 3600.0


@dataclass
class Outcome:
    """What one poll did: ``applied``, ``candidate`` (valid, waiting), ``unchanged``,
    ``rejected`` (invalid document) or ``error`` (unreachable, refused)."""

    result: str
    url: str | None
    lines: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    status: int | None = None


def read_secret(path: Path, what: str) -> str:
    """The first line of a secret file; AutopeerError when unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise AutopeerError(f"cannot read the {what} file {path}: {e.strerror}") from None
    if not text:
        raise AutopeerError(f"the {what} file {path} is empty")
    return text.splitlines()[0].strip()


def not_before_of(cfg: TrunkConfig) -> float:
    value: datetime = cfg.not_before
    return value.timestamp()


class AutoPeer:
    """One provider trunk's capability set, kept current in ``store``."""

    def __init__(self, options: AutopeerOptions, store: TrunkStore, *,
                 validator: Validator | None = None, clock: Callable[[], float] = time.time,
                 session_factory: Callable | None = None) -> None:
        self.options = options
        self.store = store
        self.validator = validator or Validator(extra_modules=options.yang_modules)
        self.clock = clock
        self._session_factory = session_factory or (
            lambda: open_session(str(options.ca_file) if options.ca_file else None))
        self._tokens: StaticToken | ClientCredentials | None = None
        self._wake = asyncio.Event()

    def tokens(self) -> StaticToken | ClientCredentials:
        """The bearer-token source, made once so client-credentials tokens are cached."""
        if self._tokens is None:
            o = self.options
            if o.token_file:
                self._tokens = StaticToken(read_secret(o.token_file, "token"))
            elif o.token_url and o.client_id and o.client_secret_file:
                self._tokens = ClientCredentials(
                    o.token_url, o.client_id, read_secret(o.client_secret_file, "client secret"))
            else:
                raise AutopeerError("no credentials for the capability server: set "
                                    "autopeer.token_file, or token_url, client_id and "
                                    "client_secret_file")
        return self._tokens

    async def discover(self, resource: str | None = None) -> str:
        """WebFinger (RFC 7033 §4) for the resource; the URL found is remembered."""
        resource = resource or self.options.resource
        if not resource:
            raise AutopeerError("no resource to discover: give acct:USER@HOST or an https URI")
        async with self._session_factory() as session:
            url = await discover(session, resource, host=self.options.webfinger_host or None)
        if self.store.get_meta("discovered_url") != url:
            self.store.set_meta("discovered_url", url)
            self.store.note("discovered", [f"{resource} publishes its capability set at {url}"],
                            now=self.clock())
        return url

    async def base_url(self) -> str:
        """The configured URL, else the one discovered (discovering it if needed)."""
        if self.options.capset_url:
            return self.options.capset_url
        return self.store.get_meta("discovered_url") or await self.discover()

    def trunk(self) -> TrunkConfig | None:
        """The trunk configuration in force, or None before the first valid set.

        Realms whose password the provider sent as a crypt hash (unusable for
        digest, RFC 7616) take the credentials set with ``sipmesh trunk
        credentials``; a clear ``$0$`` password from the provider wins."""
        active = self.store.active()
        if active is None:
            return None
        cfg = from_json(active.trunk)
        local = self.store.credentials()
        if not local:
            return cfg
        creds = []
        for c in cfg.credentials:
            if c.password is None and c.realm in local:
                user, password = local[c.realm]
                c = dataclasses.replace(c, username=user, password=password, problem=None)
            creds.append(c)
        return dataclasses.replace(cfg, credentials=tuple(creds))

    async def refresh(self) -> Outcome:
        """One poll (and the activation of a candidate whose time has come)."""
        now = self.clock()
        applied = self._activate_due(now)
        try:
            outcome = await self._poll(now)
        except AutopeerError as e:
            outcome = Outcome("error", e.url, [str(e)], status=e.status)
        self._after_poll(outcome, now)
        if applied is not None and outcome.result in ("unchanged", "error"):
            outcome.lines = applied.lines + outcome.lines
            outcome.result = "applied" if outcome.result == "unchanged" else outcome.result
        return outcome

    def _activate_due(self, now: float) -> Outcome | None:
        cand = self.store.candidate()
        if cand is None or cand.not_before > now or not self.options.auto_apply:
            return None
        return self.apply_candidate(now=now)

    def apply_candidate(self, *, now: float | None = None, force: bool = False) -> Outcome:
        """Put the candidate in force (``sipmesh trunk apply``); a set whose
        not-before lies ahead is refused unless ``force``."""
        now = self.clock() if now is None else now
        cand = self.store.candidate()
        if cand is None:
            return Outcome("unchanged", None, ["no candidate capability set to apply"])
        if cand.not_before > now and not force:
            when = datetime.fromtimestamp(cand.not_before).astimezone().isoformat()
            return Outcome("candidate", cand.url,
                           [f"the candidate takes effect at {when} (revision/not-before); "
                            "apply --force to use it now"])
        lines = self._changes(cand)
        self.store.activate_candidate(now=now, lines=lines)
        log.info("trunk configuration applied from %s: %s", cand.url, "; ".join(lines))
        return Outcome("applied", cand.url, lines)

    def _changes(self, new: StoredCapset) -> list[str]:
        active = self.store.active()
        return changes(from_json(active.trunk) if active else None, from_json(new.trunk))

    async def _poll(self, now: float) -> Outcome:
        base = await self.base_url()
        revision = self.store.get_meta("poll_url")
        if revision and revision != base:
            try:
                return await self._poll_url(revision, now)
            except AutopeerError as e:
                log.warning("revision location %s failed (%s); asking %s", revision, e, base)
                self.store.set_meta("poll_url", None)
        return await self._poll_url(base, now)

    async def _poll_url(self, url: str, now: float) -> Outcome:
        async with self._session_factory() as session:
            result = await fetch_capset(session, url, self.tokens(), etag=self.store.etag(url))
        if result.status == 304 or result.body is None:
            return Outcome("unchanged", result.url)
        outcome = self.accept(result.url, result.etag, result.body, now=now)
        if result.url != url and result.etag and outcome.result != "rejected":
            self.store.set_meta(f"etag {url}", result.etag)
        return outcome

    def accept(self, url: str, etag: str | None, body: bytes, *,
               now: float | None = None, force: bool = False) -> Outcome:
        """Validate and map a fetched (or local) document and store it: in force
        at once when its not-before has passed and auto_apply (or force) is on,
        else as the candidate. An invalid one is recorded and changes nothing."""
        now = self.clock() if now is None else now
        found = self.validator.issues(body)
        cfg = None
        if not found:
            try:
                cfg = map_capset(json.loads(body), validator=self.validator)
            except CapsetError as e:
                found = e.issues
        if cfg is None:
            lines = [f"{url}: capability set refused, the configuration in force is kept"]
            lines += [str(i) for i in found]
            self.store.note("rejected", lines, now=now)
            log.warning("%s", "; ".join(lines[:6]))
            return Outcome("rejected", url, lines, issues=found)
        for current in (self.store.active(), self.store.candidate()):
            if current is not None and current.body == body:
                if etag and current.url == url and self.store.etag(url) != etag:
                    self.store.set_meta(f"etag {url}", etag)
                return Outcome("unchanged", url)
        not_before = not_before_of(cfg)
        activate = force or (self.options.auto_apply and not_before <= now)
        active = self.store.active()
        lines = changes(from_json(active.trunk) if active else None, cfg)
        self.store.save(url, etag, body, to_json(cfg), not_before, activate=activate, now=now,
                        lines=lines)
        location = cfg.revision_location
        if location and location.startswith("https://") and same_origin(location, url):
            self.store.set_meta("poll_url", location)
        elif location and location != url:
            log.info("revision/location %s is not on %s's server: our token stays there, "
                     "polls go to the configured URL", location, url)
        if activate:
            log.info("trunk configuration applied from %s: %s", url, "; ".join(lines))
            return Outcome("applied", url, lines)
        return Outcome("candidate", url, lines)

    def _after_poll(self, outcome: Outcome, now: float) -> None:
        self.store.set_meta("last_poll", repr(now))
        if outcome.result == "error":
            failures = int(self.store.get_meta("failures") or 0) + 1
            self.store.set_meta("failures", str(failures))
            self.store.note("error", outcome.lines, now=now)
            log.warning("capability set poll failed: %s", "; ".join(outcome.lines))
        else:
            self.store.set_meta("failures", None)

    def due(self) -> float:
        """When the next poll (or candidate activation) should run (clock time)."""
        last = self.store.get_meta("last_poll")
        if last is None:
            return self.clock()
        failures = int(self.store.get_meta("failures") or 0)
        interval = self.options.refresh_hours * 3600
        if failures:
            interval = min(interval, RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1))
        when = float(last) + interval
        cand = self.store.candidate()
        if cand is not None and self.options.auto_apply and cand.not_before > float(last):
            when = min(when, cand.not_before)
        return when

    def wake(self) -> None:
        """Poll now (``sipmesh trunk fetch`` against a running controller)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event,
                  on_outcome: Callable[[Outcome], None] | None = None) -> None:
        """Poll when due until stop is set; never raises for provider trouble.
        ``on_outcome`` sees every poll's result (tests, the control channel)."""
        while not stop.is_set():
            delay = max(0.0, self.due() - self.clock())
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            if stop.is_set():
                return
            self._wake.clear()
            try:
                outcome = await self.refresh()
            except Exception:  # noqa: BLE001 - a bug must not end the poll loop
                log.exception("capability set poll crashed")
                self._after_poll(Outcome("error", None, ["internal error, see the log"]),
                                 self.clock())
                continue
            log.info("capability set poll: %s %s", outcome.result, outcome.url or "")
            if on_outcome is not None:
                on_outcome(outcome)
