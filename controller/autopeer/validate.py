"""Validation of a capability set against the RFC 10006 YANG module (§7), in process.

The provider's capability set is trusted only as far as it is valid: a
document that does not conform to ``ietf-sip-auto-peering`` is refused and
the last valid configuration stays in force (RFC 10006 §8). yangson loads
the module and its imports from the copy shipped in ``yang/`` with a YANG
library that enables the ``ietf-tls-common`` features ``tls12`` and
``tls13`` (the RFC's own example uses those identities).

yangson stops at the first error; to list more than one, as an operator
fixing a provider's document wants, the checker records the error, removes
the offending node from a copy of the document and checks again. Errors
that removal itself causes (a mandatory node now missing) are not reported;
the ancestor they name is removed in turn, which hides any further error
inside it, and a missing mandatory top-level node ends the search. So the
first error is always exact; the list is complete only for errors in
independent parts of the document.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib.resources import files

from yangson import DataModel
from yangson import exceptions as yx
from yangson.enumerations import ContentType

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


class Validator:
    """The RFC 10006 data model, loaded once (a few hundred milliseconds)."""

    def __init__(self) -> None:
        base = files("sipmesh.autopeer") / "yang"
        self.model = DataModel.from_file(
            str(base / "yang-library.json"), [str(base), str(base / "deps")]
        )

    def issues(self, document: bytes | str | dict) -> list[Issue]:
        """Every error of ``document`` (JSON text or parsed), empty when valid."""
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
        found: list[Issue] = []
        removed: list[str] = []
        for _ in range(2 * MAX_ISSUES):
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
            # An error on an ancestor of a node we removed is our own doing
            # (a mandatory node now missing): not reported, the ancestor goes.
            artifact = any(r.startswith(issue.path + "/") for r in removed)
            if not artifact:
                found.append(issue)
                if len(found) >= MAX_ISSUES:
                    return found
            if not _remove(raw, issue.path):
                return found
            removed.append(issue.path)
        return found

    def validate(self, document: bytes | str | dict) -> None:
        """Raise CapsetError listing every error when ``document`` is not valid."""
        found = self.issues(document)
        if found:
            raise CapsetError(found)


def _path(instance) -> str:
    try:
        return instance.json_pointer()
    except Exception:  # noqa: BLE001 - a path is a courtesy; the message stands alone
        return "/"


def _remove(raw: dict, path: str) -> bool:
    """Delete the node at a JSON pointer like /mod:a/b/0/c; False if impossible."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return False
    node = raw
    for key in parts[:-1]:
        node = _step(node, key)
        if node is None:
            return False
    last = parts[-1]
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
