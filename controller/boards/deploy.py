"""Deploy a bundle onto a board with MicroPython's own `mpremote`, copying only what changed.

Serial copies are slow (mpremote writes 256-byte chunks through the raw
REPL), so the board's /manifest.json tells which files it already holds:
a file is copied when its hash differs from the board's manifest or it is
missing on the board; files the old manifest listed under /lib and the new
one does not are removed. The board's manifest is removed before the first
change and the new one written last, so an interrupted deploy leaves a
board without a manifest, which the next deploy treats as empty (a full
copy) instead of trusting stale hashes.

mpremote needs the REPL, but a running board has its management agent on
the serial line. The agent is first asked (the ``repl`` op of
sipmesh.proto.mgmt over pyserial) to stop and drop to the REPL; no answer
within 2 s means the REPL is already there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sipmesh.boards import bundle

#: progress(done_bytes, total_bytes, board_path being copied).
Progress = Callable[[int, int, str], None]

REPL_TIMEOUT = 2.0
# A board that is still booting when the deploy starts gets this long to
# start its agent; the repl request is repeated every RESEND seconds meanwhile.
BOOT_WAIT = 15.0
RESEND = 0.5
MPREMOTE_TIMEOUT = 600.0
_QUERY_MARK = "SIPMESH-QUERY "
_S_IFDIR = 0x4000
_S_IFREG = 0x8000

# Runs on the board: the current manifest's text and the stat mode of each path.
_QUERY = """import os
def _m(p):
 try:
  return os.stat(p)[0]
 except OSError:
  return 0
try:
 with open('/manifest.json') as f:
  _j=f.read()
except OSError:
 _j=None
print('%s'+json.dumps({'m':_j,'s':[_m(p) for p in %s]}))
"""


class DeployError(RuntimeError):
    """The one error of a deploy: port unusable, mpremote failed, agent refused."""


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did; paths are board paths."""

    copied: list[str]
    skipped: list[str]
    removed: list[str]
    #: "agent" (it acknowledged the repl op), "repl" (REPL answered) or "silent".
    serial: str = "silent"
    bytes_copied: int = 0


def mpremote_command() -> list[str]:
    """mpremote as a module of this Python (installed with sipmesh)."""
    return [sys.executable, "-m", "mpremote"]


def _repl_request() -> tuple[int, bytes]:
    # The bytes may reach a REPL instead of the agent. 0x04 there is Ctrl-D,
    # which would soft-reset a board (and end the unix port): pick a sequence
    # number whose frame holds none.
    from sipmesh.proto import frame, mgmt

    payload = mgmt.request("repl")
    base = int(time.monotonic() * 1000) & 0x7FFF
    for i in range(1024):
        seq = (base + i) & 0xFFFF
        wire = frame.encode(frame.REQUEST, seq, payload)
        if 4 not in wire:
            return seq, wire
    raise DeployError("no repl frame without a Ctrl-D byte")  # pragma: no cover


def drop_to_repl(port: str, timeout: float = REPL_TIMEOUT) -> str:
    """Ask a running management agent to leave the serial line to the REPL.

    Returns "agent" when the agent acknowledged (then waits for the REPL
    prompt), "repl" when a REPL answered instead (the request's first bytes
    are Ctrl-A, which makes a REPL print its raw-REPL banner), "silent" when
    the line stayed quiet for ``timeout`` seconds. A board still booting
    talks (logs, the agent's boot event): the request is repeated until
    answered, for at most BOOT_WAIT seconds. An agent refusing raises.
    """
    import serial

    from sipmesh.proto import frame, mgmt

    seq, wire = _repl_request()
    try:
        ser = serial.Serial(port, 115200, timeout=0.05)
    except (serial.SerialException, OSError) as e:
        raise DeployError(f"cannot open {port}: {e}") from None
    with ser:
        ser.write(b"\x00")
        dec = frame.FrameDecoder()
        seen = bytearray()
        acked = False
        now = time.monotonic()
        deadline, hard_deadline, resend = now + timeout, now + BOOT_WAIT, now
        while now < deadline:
            if not acked and now >= resend:
                ser.write(wire)
                resend = now + RESEND
            data = ser.read(4096)
            now = time.monotonic()
            if not data:
                continue
            deadline = max(deadline, min(now + timeout, hard_deadline))
            seen += data
            del seen[:-4096]
            if not acked:
                for f in dec.feed(data):
                    if f.type == frame.RESPONSE and f.seq == seq:
                        try:
                            mgmt.parse_response(f.payload)
                        except mgmt.MgmtError as e:
                            raise DeployError(f"the board's agent refused repl: {e}") from None
                        acked = True
                        deadline = now + timeout
                    elif f.type == frame.EVENT:
                        resend = now  # the agent just started: ask it now
                if not acked and (b"raw REPL" in seen or b">>> " in seen):
                    return "repl"
            if acked and b">>> " in seen:
                return "agent"
    return "agent" if acked else "silent"


def _mpremote(port: str, args: list[str], on_line: Callable[[str], None] | None = None) -> str:
    # One mpremote session (connect, resume: no soft reset on entry), its
    # output streamed line by line; DeployError with its last line on failure.
    cmd = mpremote_command() + ["connect", port, "resume"] + args
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except OSError as e:
        raise DeployError(f"cannot run mpremote: {e.strerror}") from None
    assert proc.stdout is not None
    lines: list[str] = []
    for raw in proc.stdout:
        for line in raw.replace("\r", "\n").splitlines():
            if line.strip():
                lines.append(line.strip())
                if on_line:
                    on_line(line.strip())
    try:
        code = proc.wait(timeout=MPREMOTE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise DeployError("mpremote did not finish") from None
    if code != 0:
        raise DeployError(f"mpremote failed ({code}): {lines[-1] if lines else 'no output'}")
    return "\n".join(lines)


def query(port: str, paths: list[str]) -> tuple[dict[str, str] | None, dict[str, int], str]:
    """The board's manifest files map (None without a valid manifest), the
    stat mode of each path (0 when missing) and the manifest's text ("" when
    none), in one mpremote exec."""
    script = "import json\n" + _QUERY % (_QUERY_MARK, json.dumps(paths))
    out = _mpremote(port, ["exec", script])
    for line in out.splitlines():
        if line.startswith(_QUERY_MARK):
            doc = json.loads(line[len(_QUERY_MARK):])
            break
    else:
        raise DeployError(f"the board did not answer the manifest query: {out[-200:]!r}")
    modes = dict(zip(paths, doc["s"], strict=True))
    old = None
    if doc["m"] is not None:
        try:
            old = bundle.parse_manifest(doc["m"], Path("/")).files
        except bundle.BuildError:
            old = None
    return old, modes, doc["m"] or ""


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def deploy(
    port: str,
    bundle_dir: Path,
    *,
    progress: Progress | None = None,
    reset: bool = True,
    reset_command: str = "reset",
) -> DeployResult:
    """Copy the bundle in bundle_dir onto the board at port, only what changed.

    Ends with ``reset_command`` ("reset" = machine.reset() on real boards,
    "soft-reset" for the unix virtual board) when ``reset``.
    """
    manifest = bundle.load(Path(bundle_dir))
    serial_state = drop_to_repl(port)
    files = sorted(manifest.files)
    dirs = sorted({d for p in files for d in _parents(p)}, key=lambda d: (d.count("/"), d))
    old, modes, old_text = query(port, files + dirs + ["/" + bundle.MANIFEST])

    copy = [p for p in files
            if modes[p] & 0xF000 != _S_IFREG or (old or {}).get(p) != manifest.files[p]]
    skipped = [p for p in files if p not in copy]
    removed = sorted(p for p in (old or {}) if p not in manifest.files and p.startswith("/lib/"))
    board_manifest = "/" + bundle.MANIFEST
    new_json = manifest.to_json()
    # The version (or kind) may change with the files unchanged: the manifest
    # is rewritten whenever its text differs.
    same_manifest = old_text.encode() == new_json and not copy and not removed

    args: list[str] = []
    if (copy or removed) and modes[board_manifest]:
        args += ["fs", "rm", ":" + board_manifest, "+"]
    for d in dirs:
        if modes[d] & 0xF000 != _S_IFDIR and any(p.startswith(d + "/") for p in copy):
            args += ["fs", "mkdir", ":" + d, "+"]
    for p in copy:
        args += ["fs", "cp", str(manifest.local(p)), ":" + p, "+"]
    for p in removed:
        args += ["fs", "rm", ":" + p, "+"]
    if not same_manifest:
        args += ["fs", "cp", str(manifest.root / bundle.MANIFEST), ":" + board_manifest, "+"]

    sizes = {p: manifest.local(p).stat().st_size for p in copy}
    total = sum(sizes.values()) + (0 if same_manifest else len(new_json))
    by_src = {str(manifest.local(p)): p for p in copy}
    by_src[str(manifest.root / bundle.MANIFEST)] = board_manifest
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        m = re.match(r"cp (.+) :(/\S+)$", line)
        if m and m.group(1) in by_src and progress:
            board_path = by_src[m.group(1)]
            progress(done, total, board_path)
            done += sizes.get(board_path, len(new_json))

    if reset:
        args += [reset_command, "+"]
    if args:
        _mpremote(port, args[:-1], on_line)
    if progress:
        progress(total, total, "")
    return DeployResult(copy, skipped, removed, serial_state, sum(sizes.values()))
