"""Packaging: one import tree from two folders, in an editable install and in a wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_editable_install_maps_both_folders() -> None:
    import sipmesh
    import sipmesh.proto.cbor

    assert Path(sipmesh.__file__).parent == ROOT / "controller"
    assert Path(sipmesh.proto.cbor.__file__).parent == ROOT / "shared" / "proto"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {"sipmesh"}
    for init in (ROOT / "controller").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / "controller")
        if rel.parts:
            found.add(".".join(("sipmesh", *rel.parts)))
    found.add("sipmesh.proto")
    assert found == listed, "pyproject [tool.setuptools] packages must list every package"


def test_console_script_version_and_help() -> None:
    exe = Path(sys.executable).parent / "sipmesh"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    import sipmesh

    assert out.stdout.strip() == f"sipmesh {sipmesh.__version__}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "usage: sipmesh" in out.stdout
    assert "run" in out.stdout and "config" in out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a wheel from a copy of the sources (the work tree stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "controller", src / "controller", ignore=ignore)
    shutil.copytree(ROOT / "shared", src / "shared", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("sipmesh-*.whl")
    return whl


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("sipmesh/__init__.py", "sipmesh/cli.py", "sipmesh/default.toml",
                     "sipmesh/proto/__init__.py", "sipmesh/proto/cbor.py",
                     "sipmesh/proto/frame.py"):
        assert required in names
    assert not any(n.startswith(("controller/", "shared/", "tests/")) for n in names)
    (ep,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "sipmesh = sipmesh.cli:main" in zipfile.ZipFile(wheel).read(ep).decode()


def test_wheel_imports_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import sipmesh, sipmesh.cli, sipmesh.config\n"
        "from sipmesh.proto import cbor, frame\n"
        f"assert sipmesh.__file__.startswith({str(site)!r}), sipmesh.__file__\n"
        f"assert cbor.__file__.startswith({str(site)!r}), cbor.__file__\n"
        "assert cbor.loads(cbor.dumps({'a': [1]})) == {'a': [1]}\n"
        "assert sipmesh.config.load().branch == 'demo'\n"
        "print('ok')\n"
    )
    # -S: no site-packages, so the editable install cannot answer the imports.
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
