"""Board kinds: what `boards/<kind>/board.toml` declares about one kind of board.

`sipmesh board build`, `flash` and `deploy` need the same few facts about a
board kind: the .mpy bytecode version its MicroPython loads, the firmware
image it expects (name, version, sha256), how that image is flashed
(esptool offsets, baud, chip, or UF2 copy) and which module is its
hardware layer. They live in one declarative file per kind so that adding a
board is adding a folder, not code.

The board folders sit beside ``controller/`` in a checkout (they are board
code, not part of the ``sipmesh`` Python package). An installed wheel does
not carry them: set ``SIPMESH_SOURCE`` to a checkout (or to any folder with
``boards/``, ``firmware/``) to build bundles from one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sipmesh

SOURCE_ENV = "SIPMESH_SOURCE"
FLASH_METHODS = ("esptool", "uf2", "none")


class BoardKindError(ValueError):
    """The one error of this module: unknown kind, missing or bad board.toml."""


@dataclass(frozen=True)
class BoardKind:
    """One board kind as its board.toml declares it."""

    kind: str
    folder: Path
    mpy_version: str
    flash_method: str
    image_name: str | None = None
    image_version: str | None = None
    #: lower-case hex, or None when any image will do ("any", the unix board).
    image_sha256: str | None = None
    chip: str | None = None
    #: esptool offset of the MicroPython image (0x1000 for classic ESP32).
    offset: int | None = None
    baud: int | None = None
    heap_budget: int | None = None
    net: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def board_py(self) -> Path:
        """The kind's hardware module, installed on the board as /lib/board.mpy."""
        return self.folder / "board.py"

    @property
    def mpy_major_minor(self) -> tuple[int, int]:
        """(6, 3) for "6.3"."""
        major, _, minor = self.mpy_version.partition(".")
        return int(major), int(minor or 0)

    @property
    def reset_command(self) -> str:
        """mpremote command that restarts the application after a deploy.

        A hard reset: a soft reset from mpremote's raw REPL does not run
        main.py on a board. The virtual board's boot script gives the unix
        port a machine.reset() that restarts the interpreter with main.py.
        board.toml may say ``deploy_reset = "soft-reset"`` for a kind without one.
        """
        explicit = self.raw.get("deploy_reset")
        if explicit in ("reset", "soft-reset"):
            return explicit
        return "reset"


def source_root() -> Path:
    """The folder holding ``boards/`` and ``firmware/``: $SIPMESH_SOURCE, else the checkout."""
    env = os.environ.get(SOURCE_ENV)
    if env:
        root = Path(env)
        if not (root / "boards").is_dir():
            raise BoardKindError(f"{SOURCE_ENV}={env} has no boards/ folder")
        return root
    for parent in Path(sipmesh.__file__).resolve().parents:
        if (parent / "boards").is_dir() and (parent / "firmware").is_dir():
            return parent
    raise BoardKindError(
        "board sources (boards/, firmware/) not found beside the sipmesh package; "
        f"this looks like an installed wheel: set {SOURCE_ENV} to a sipmesh checkout"
    )


def kinds(root: Path | None = None) -> list[str]:
    """Names of the board kinds that have a board.toml, sorted."""
    base = (root or source_root()) / "boards"
    return sorted(p.parent.name for p in base.glob("*/board.toml"))


def _table(doc: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    t = doc.get(name, {})
    if not isinstance(t, dict):
        raise BoardKindError(f"{path}: [{name}] must be a table")
    return t


def _int(value: Any, what: str, path: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BoardKindError(f"{path}: {what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""), 0)
        except ValueError:
            pass
    raise BoardKindError(f"{path}: {what} must be an integer, not {value!r}")


def _str(value: Any, what: str, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BoardKindError(f"{path}: {what} must be text, not {value!r}")
    return value


def load(kind: str, root: Path | None = None) -> BoardKind:
    """Read and check ``boards/<kind>/board.toml``."""
    base = (root or source_root()) / "boards"
    if not kind or "/" in kind or kind.startswith("."):
        raise BoardKindError(f"bad board kind {kind!r}")
    path = base / kind / "board.toml"
    if not path.is_file():
        known = ", ".join(kinds(base.parent)) or "none"
        raise BoardKindError(f"unknown board kind {kind!r} (known: {known})")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BoardKindError(f"{path}: {e}") from None

    declared = _str(doc.get("kind"), "kind", path)
    if declared is not None and declared != kind:
        raise BoardKindError(f"{path}: declares kind {declared!r}, folder says {kind!r}")
    fw = _table(doc, "firmware", path)
    fl = _table(doc, "flash", path)
    mpy = _str(doc.get("mpy_version"), "mpy_version", path) or "6.3"
    major, _, minor = mpy.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise BoardKindError(f"{path}: mpy_version {mpy!r} is not MAJOR.MINOR")
    method = _str(fl.get("method"), "flash.method", path) or "none"
    if method not in FLASH_METHODS:
        raise BoardKindError(f"{path}: flash.method {method!r} not one of {FLASH_METHODS}")
    sha = (_str(fw.get("sha256"), "firmware.sha256", path) or "any").strip().lower()
    if sha == "any":
        sha = None
    elif len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BoardKindError(f"{path}: firmware.sha256 {sha!r} is not 64 hex digits or \"any\"")
    return BoardKind(
        kind=kind,
        folder=path.parent,
        mpy_version=mpy,
        flash_method=method,
        image_name=_str(fw.get("name"), "firmware.name", path),
        image_version=_str(fw.get("version"), "firmware.version", path),
        image_sha256=sha,
        chip=_str(fl.get("chip"), "flash.chip", path),
        offset=_int(fl.get("offset"), "flash.offset", path),
        baud=_int(fl.get("baud"), "flash.baud", path),
        heap_budget=_int(doc.get("heap_budget"), "heap_budget", path),
        net=_str(doc.get("net"), "net", path),
        raw=doc,
    )
