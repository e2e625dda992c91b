"""Finding the outside programs the tests use as judges, and test certificates.

`make test` installs the Debian packages in tests/debian-packages.txt when
it runs as root. A judge may be skipped only when this run is not root
(so nothing could install it); as root, a missing judge is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require(tool: str, package: str | None = None, path: str | None = None) -> str:
    """The path of tool; skip (not root) or fail (root) when it is missing."""
    found = shutil.which(tool) or (path if path and os.access(path, os.X_OK) else None)
    if found:
        return found
    what = f"{tool} (Debian {package or tool})"
    if os.geteuid() != 0:
        pytest.skip(f"{what} is not installed and this run is not root, so make test could "
                    "not install it (tests/debian-packages.txt)")
    pytest.fail(f"{what} is missing although make test installs it as root")


def self_signed_cert(folder: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """(key, cert) of a P-256 self-signed certificate for ip, made with openssl."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}"],
        check=True, capture_output=True,
    )
    return key, cert
