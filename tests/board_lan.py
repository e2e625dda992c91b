"""A branch-office LAN in network namespaces, for board tests.

One "ctrl" namespace holds a bridge with the controller's address; each
board namespace is joined to the bridge by a veth pair, so multicast (mDNS,
RFC 6762) reaches every host as on a real switch. Processes run inside with
``ip netns exec``; their output lines are awaited with timeouts, never
slept on. Everything is removed afterwards, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

WAIT = 60.0
# The heap a virtual board gets in the tests: an ESP32's free heap (issue 6),
# on the 64-bit unix port where every object costs up to twice as much.
BOARD_HEAP = os.environ.get("SIPMESH_TEST_BOARD_HEAP", "100K")


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def build(prefix: str, ctrl_ip: str, boards: dict[str, str]) -> dict[str, str]:
    """Namespaces ``ctrl`` (bridge ``br`` with ctrl_ip/24) and one per board
    name in ``boards`` (name -> address); returns name -> namespace."""
    ns = {"ctrl": prefix + "c", "br": prefix + "br"}
    ns.update({name: prefix + name for name in boards})
    try:
        for key in ["ctrl", *boards]:
            run("ip", "netns", "add", ns[key])
            run("ip", "-n", ns[key], "link", "set", "lo", "up")
        run("ip", "-n", ns["ctrl"], "link", "add", ns["br"], "type", "bridge")
        run("ip", "-n", ns["ctrl"], "addr", "add", ctrl_ip + "/24", "dev", ns["br"])
        run("ip", "-n", ns["ctrl"], "link", "set", ns["br"], "up")
        for key, ip in boards.items():
            near, far = prefix + "p" + key, prefix + "v" + key
            run("ip", "link", "add", near, "type", "veth", "peer", "name", far)
            run("ip", "link", "set", near, "netns", ns["ctrl"])
            run("ip", "link", "set", far, "netns", ns[key])
            run("ip", "-n", ns["ctrl"], "link", "set", near, "master", ns["br"])
            run("ip", "-n", ns["ctrl"], "link", "set", near, "up")
            run("ip", "-n", ns[key], "addr", "add", ip + "/24", "dev", far)
            run("ip", "-n", ns[key], "link", "set", far, "up")
    except BaseException:
        remove(ns)
        raise
    return ns


def remove(ns: dict[str, str]) -> None:
    for key, name in ns.items():
        if key != "br":
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Proc:
    """A process whose output lines are awaited with a timeout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.seen: list[str] = []

    async def line(self, text: str, timeout: float = WAIT) -> str:
        """The next line containing text (earlier lines are kept in seen)."""
        async def read() -> str:
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"{self.name} ended waiting for {text!r}:\n"
                                         + "\n".join(self.seen[-40:]))
                got = raw.decode(errors="replace").rstrip("\n")
                self.seen.append(got)
                if text in got:
                    return got

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {text!r} within {timeout} s:\n"
                                 + "\n".join(self.seen[-40:])) from None

    async def tail(self, n: int = 60) -> str:
        """The last n lines of output (call after close: reads what was left)."""
        with contextlib.suppress(Exception):
            rest = await asyncio.wait_for(self.proc.stdout.read(), 5)
            self.seen.extend(rest.decode(errors="replace").splitlines())
        return f"--- {self.name} ---\n" + "\n".join(self.seen[-n:])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        for stop in (self.proc.terminate, self.proc.kill):
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
                return
            except TimeoutError:
                continue


async def start(procs: list[Proc], name: str, ns: str | None, *cmd: str,
                env: dict | None = None, cwd: Path | None = None) -> Proc:
    """Start cmd (in namespace ns, or here when None); stdout+stderr merged."""
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    p = Proc(await asyncio.create_subprocess_exec(
        *full, env=env, cwd=cwd, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT), name)
    procs.append(p)
    return p


def avahi_files(folder: Path, interface: str) -> tuple[Path, Path, dict]:
    """(dbus config, avahi config, environment) for a private avahi-daemon that
    only browses (publishing off) on interface."""
    bus = folder / "bus"
    dbus = folder / "dbus.conf"
    dbus.write_text(
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        f"<busconfig><type>system</type><listen>unix:path={bus}</listen>"
        "<auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>"
        "<allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/>"
        "</policy></busconfig>\n")
    avahi = folder / "avahi.conf"
    avahi.write_text(
        "[server]\nuse-ipv4=yes\nuse-ipv6=no\n"
        f"allow-interfaces={interface}\nenable-dbus=yes\n"
        "[wide-area]\nenable-wide-area=no\n[publish]\ndisable-publishing=yes\n")
    return dbus, avahi, dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")


async def start_avahi(procs: list[Proc], ns: str, folder: Path, interface: str) -> dict:
    """A system bus and avahi-daemon in ns (with a private /run); returns the
    environment avahi-browse needs."""
    dbus_conf, avahi_conf, env = avahi_files(folder, interface)
    bus = await start(procs, "dbus", ns, "dbus-daemon", f"--config-file={dbus_conf}",
                      "--nofork", "--print-address")
    await bus.line("unix:path=")
    avahi = await start(procs, "avahi", ns, "unshare", "-m", "sh", "-c",
                        "mount -t tmpfs none /run && exec avahi-daemon -f "
                        f"{avahi_conf} --no-drop-root --no-chroot --no-rlimits", env=env)
    await avahi.line("Server startup complete")
    return env


async def avahi_browse(ns: str, env: dict, service: str) -> list[list[str]]:
    """Resolved entries of avahi-browse -artp for service, as field lists."""
    out = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "avahi-browse", "-artp", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    text, _ = await asyncio.wait_for(out.communicate(), WAIT)
    return [ln.split(";") for ln in text.decode().splitlines()
            if ln.startswith("=") and f";{service};" in ln]


def txt_of(field: str) -> dict[str, str]:
    """avahi-browse -p's TXT field ('"a=1" "b=2"') as a dict."""
    items = [i.strip('"') for i in field.split('" "')] if field else []
    return dict(i.split("=", 1) for i in items if "=" in i)


def controller_config(path: Path, *, branch: str, ctrl_ip: str, data: Path,
                      heartbeat: int = 2, pull: int = 4, refresh: int = 8,
                      lost_after: int = 3) -> Path:
    """Write the branch.toml of a LAN site at path: demo overlay with the RELOAD
    client listener on ctrl_ip:6085 (RFC 6940 §3.2) and the boards service on
    ctrl_ip:7380 with the given intervals (seconds); returns path."""
    path.write_text(f"""
[controller]
branch = "{branch}"
data_dir = "{data}"
log_level = "debug"
[sip]
listen = []
[overlay]
enabled = true
demo = true
first = true
listen = "{ctrl_ip}:6084"
client_listen = "{ctrl_ip}:6085"
[boards]
enabled = true
listen = "{ctrl_ip}:7380"
interfaces = ["{ctrl_ip}"]
heartbeat = {heartbeat}
pull = {pull}
refresh = {refresh}
lost_after = {lost_after}
""")
    return path


async def start_controller(procs: list[Proc], ns: str, sipmesh: str, config: Path) -> Proc:
    """`sipmesh run` in ns, awaited until it says "controller ready"."""
    ctl = await start(procs, "controller", ns, sipmesh, "run", "--config", str(config),
                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
    await ctl.line("controller ready")
    return ctl


async def start_sim(procs: list[Proc], name: str, ns: str, sipmesh: str, *, root: Path,
                    pty: Path, board_id: str, ip: str, heap: str,
                    bundle: Path | None = None) -> Proc:
    """`sipmesh board sim` in ns, awaited until the board is on."""
    extra = ["--bundle", str(bundle)] if bundle else []
    sim = await start(procs, name, ns, sipmesh, "board", "sim", "--root", str(root),
                      "--pty", str(pty), "--id", board_id, "--ip", ip, "--heap", heap, *extra)
    await sim.line(f"board {board_id} on")
    return sim
