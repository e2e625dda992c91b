"""Validation of a capability set against the RFC 10006 YANG module (§7), in process.

The provider's capability set is trusted only as far as it is valid: a
document that does not conform to ``ietf-sip-auto-peering`` is refused and
the last valid configuration stays in force (RFC 10006 §8). yangson loads
the module and its imports from the copy shipped in ``yang/`` with a YANG
library that enables the ``ietf-tls-common`` features ``tls12`` and
``tls13`` (the RFC's own example uses those identities).

yangson stops at the first error; to list more than one, as an operator
fixing a provider's document wants, the checker records the error, removes
the offending node from a copy of the document and checks again. A
mandatory node that is missing (in the document, or because we removed
it) is filled in from the RFC's §9.1 example (``yang/reference-capset.json``)
so the search can go on; errors that our own removal caused are not
reported. The first error is always exact; later ones can be missed only
where a filled-in or removed node hid them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from yangson import DataModel
from yangson import exceptions as yx
from yangson.enumerations import ContentType

from sipmesh.autopeer.trunk_config import VendorExtension

MAX_ISSUES = 50
MAX_DOCUMENT = 1 << 20
MODULE = "ietf-sip-auto-peering"


@dataclass(frozen=True)
class Issue:
    """One validation error: the JSON path of the node and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CapsetError(ValueError):
    """A capability set that cannot be used; ``issues`` lists every error found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues[:5]))


class YangModuleError(ValueError):
    """An extra (vendor) YANG module file that cannot be loaded into the model."""


class Validator:
    """The RFC 10006 data model, loaded once (a few hundred milliseconds).

    ``extra_modules`` are vendor module files (RFC 10006 §7.3) named
    ``NAME@REVISION.yang``; they are added to the shipped YANG library as
    implemented modules and their folders searched after the shipped ones,
    so a vendor folder cannot replace an IETF module. A file that cannot be
    read or does not fit the model raises YangModuleError.
    """

    def __init__(self, extra_modules: Sequence[str | Path] = ()) -> None:
        base = files("sipmesh.autopeer") / "yang"
        library = json.loads((base / "yang-library.json").read_text(encoding="utf-8"))
        entries = library["ietf-yang-library:modules-state"]["module"]
        path = [str(base), str(base / "deps")]
        extra: list[str] = []
        for file in extra_modules:
            entry = _module_entry(Path(file))
            if entry["name"] in {e["name"] for e in entries}:
                raise YangModuleError(f"{file}: module {entry['name']} is already in the model")
            entries.append(entry)
            extra.append(entry["name"])
            folder = str(Path(file).resolve().parent)
            if folder not in path:
                path.append(folder)
        if extra:
            library["ietf-yang-library:modules-state"]["module-set-id"] += "+" + "+".join(extra)
        try:
            self.model = DataModel(json.dumps(library), path)
        except (yx.YangsonException, OSError, ValueError) as e:
            raise YangModuleError(f"vendor modules {extra} do not load: {e}") from e
        self.extra: frozenset[str] = frozenset(extra)
        self.reference = json.loads((base / "reference-capset.json").read_text(encoding="utf-8"))
        self.modules: frozenset[str] = frozenset(m for m, _rev in self.model.schema_data.modules)

    def extensions(self, document: bytes | str | dict) -> list[VendorExtension]:
        """The vendor data of ``document`` (RFC 10006 §7.3), in document order.

        Members of installed vendor modules are listed with validated=True
        (``issues`` checks them), members of unknown modules with
        validated=False (``issues`` ignores them). Not JSON -> [].
        """
        return extensions_of(document, known=self.modules, installed=self.extra)

    def issues(self, document: bytes | str | dict) -> list[Issue]:
        """Every error of ``document`` (JSON text or parsed), empty when valid.

        Data of unknown modules (vendor extensions, RFC 10006 §7.3) is not
        an error: it is left out before validation.
        """
        if isinstance(document, (bytes, str)):
            if len(document) > MAX_DOCUMENT:
                return [Issue("/", f"document larger than {MAX_DOCUMENT} bytes")]
            try:
                raw = json.loads(document)
            except (ValueError, UnicodeDecodeError) as e:
                return [Issue("/", f"not JSON: {e}")]
        else:
            raw = copy.deepcopy(document)
        if not isinstance(raw, dict) or f"{MODULE}:sip-auto-peering" not in raw:
            return [Issue("/", f"no {MODULE}:sip-auto-peering container")]
        for _where, module, _value, parent, key in _qualified(raw):
            if module not in self.modules:
                del parent[key]
        found: list[Issue] = []
        removed: list[str] = []
        filled: set[str] = set()
        for _ in range(3 * MAX_ISSUES):
            try:
                inst = self.model.from_raw(raw)
                inst.validate(ctype=ContentType.all)
                return found
            except yx.RawMemberError as e:
                issue = Issue(e.path, "not in the data model")
            except yx.RawDataError as e:
                issue = Issue(e.path, getattr(e, "message", None) or type(e).__name__)
            except yx.ValidationError as e:
                issue = Issue(_path(e.instance), f"{e.tag}: {e.message}" if e.message else e.tag)
            except yx.YangsonException as e:
                found.append(Issue("/", str(e)))
                return found
            issue = Issue(_pointer(raw, issue.path), issue.message)
            # A mandatory node missing because we removed it (or something
            # under it) is our own doing: not reported. The missing node is
            # filled from the RFC's example so the search goes on; failing
            # that, its parent goes.
            missing = _MISSING.match(issue.message)
            target = f"{issue.path}/{missing.group(1)}" if missing else issue.path
            artifact = any(r == target or r.startswith(target + "/") for r in removed)
            if not artifact:
                found.append(issue)
                if len(found) >= MAX_ISSUES:
                    return found
            if target not in filled and (missing or artifact) \
                    and _fill(raw, target, self.reference):
                filled.add(target)
                continue
            if not _remove(raw, issue.path):
                return found
            removed.append(issue.path)
        return found

    def validate(self, document: bytes | str | dict) -> None:
        """Raise CapsetError listing every error when ``document`` is not valid."""
        found = self.issues(document)
        if found:
            raise CapsetError(found)


_MODULE_NAME = re.compile(r"^\s*module\s+([A-Za-z_][\w.-]*)\s*\{", re.M)
_REVISION = re.compile(r"^\s*revision\s+\"?(\d{4}-\d{2}-\d{2})\"?\s*[{;]", re.M)
_NAMESPACE = re.compile(r"^\s*namespace\s+\"([^\"]+)\"\s*;", re.M)


def _module_entry(file: Path) -> dict:
    """The RFC 7895 YANG library entry of a module file, checked against its name.

    yangson finds a module by its file name, so the file must be called
    NAME@REVISION.yang (newest revision, the first one listed, RFC 7950 §7.1.9).
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise YangModuleError(f"{file}: cannot read: {e}") from e
    name, rev, ns = _MODULE_NAME.search(text), _REVISION.search(text), _NAMESPACE.search(text)
    if not (name and rev and ns):
        raise YangModuleError(f"{file}: not a YANG module with a revision and a namespace")
    if file.name != f"{name[1]}@{rev[1]}.yang":
        raise YangModuleError(f"{file}: the file of module {name[1]} revision {rev[1]} "
                              f"must be named {name[1]}@{rev[1]}.yang")
    return {"name": name[1], "revision": rev[1], "namespace": ns[1],
            "conformance-type": "implement"}


def extensions_of(
    document: bytes | str | dict,
    *,
    known: frozenset[str] = frozenset(),
    installed: frozenset[str] = frozenset(),
) -> list[VendorExtension]:
    """Members of modules other than ietf-sip-auto-peering (RFC 10006 §7.3), in document order.

    A member of an ``installed`` module is listed as validated; one of a
    module in neither ``known`` nor ``installed`` as unvalidated; one of a
    ``known`` (IETF) module is not vendor data and is left out.
    """
    raw = _parse(document)
    if raw is None:
        return []
    found = []
    for path, module, value, _parent, _key in _qualified(raw):
        if module in installed:
            found.append(VendorExtension(module, path, copy.deepcopy(value), True))
        elif module not in known:
            found.append(VendorExtension(module, path, copy.deepcopy(value), False))
    return found


def _parse(document: bytes | str | dict) -> dict | None:
    if isinstance(document, dict):
        return document
    if len(document) > MAX_DOCUMENT:
        return None
    try:
        raw = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def _qualified(node: dict) -> list[tuple[str, str, object, dict, str]]:
    """(JSON pointer, module, value, parent, key) of members of modules other than ours.

    In the JSON encoding (RFC 7951 §4) a member carries its module name
    only where the module changes, so the walk does not enter such a
    member: what is below belongs to that module. Document order.
    """
    found = []
    stack: list[tuple[object, str, object, str]] = [(node, "", None, "")]
    while stack:
        here, where, parent, key = stack.pop()
        mod, sep, _name = key.partition(":")
        if sep and mod != MODULE and isinstance(parent, dict):
            found.append((where, mod, here, parent, key))
            continue
        if isinstance(here, list):
            children = [(v, f"{where}/{i}", here, "") for i, v in enumerate(here)]
        elif isinstance(here, dict):
            children = [(v, f"{where}/{k}", here, k) for k, v in here.items()]
        else:
            continue
        stack.extend(reversed(children))
    return found


def _path(instance) -> str:
    try:
        return instance.json_pointer()
    except Exception:  # noqa: BLE001 - a path is a courtesy; the message stands alone
        return "/"


_MISSING = re.compile(r"missing-data: expected '([^']+)'")


def _pointer(raw: dict, path: str) -> str:
    """yangson names list entries by key ("registrar=host,5060"); report the
    JSON pointer form ("registrar/1") that yanglint users and jq read too."""
    if "=" not in path:
        return path
    out: list[str] = []
    node = raw
    for part in (p for p in path.split("/") if p):
        name, sep, keys = part.partition("=")
        node = _step(node, name) if node is not None else None
        out.append(name)
        if sep and isinstance(node, list):
            wanted = keys.split(",")
            index = next((i for i, entry in enumerate(node) if isinstance(entry, dict) and all(
                k in {str(v).lower() if isinstance(v, bool) else str(v) for v in entry.values()}
                for k in wanted)), None)
            if index is None:
                return path
            out.append(str(index))
            node = node[index]
    return "/" + "/".join(out)


def _parent(raw: dict, path: str) -> tuple[object, str] | None:
    """(the container holding the node at a JSON pointer, the node's last
    segment); None for the document's root or a path that leads nowhere."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return None
    node = raw
    for key in parts[:-1]:
        node = _step(node, key)
        if node is None:
            return None
    return node, parts[-1]


def _fill(raw: dict, path: str, reference: dict) -> bool:
    """Put the reference document's node at path (list indices read as 0)
    in place of raw's; False when either side has no such place."""
    source = reference
    for key in (p for p in path.split("/") if p):
        source = _step(source, "0" if key.isdigit() else key)
        if source is None:
            return False
    found = _parent(raw, path)
    if found is None:
        return False
    node, last = found
    if isinstance(node, dict):
        node[last] = copy.deepcopy(source)
        return True
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = copy.deepcopy(source)
        return True
    return False


def _remove(raw: dict, path: str) -> bool:
    """Delete the node at a JSON pointer like /mod:a/b/0/c; False if impossible."""
    found = _parent(raw, path)
    if found is None:
        return False
    node, last = found
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        del node[int(last)]
        return True
    if isinstance(node, dict):
        for k in (last, last.split(":", 1)[-1]):
            if k in node:
                del node[k]
                return True
    return False


def _step(node, key: str):
    if isinstance(node, list):
        return node[int(key)] if key.isdigit() and int(key) < len(node) else None
    if isinstance(node, dict):
        if key in node:
            return node[key]
        return node.get(key.split(":", 1)[-1])
    return None
