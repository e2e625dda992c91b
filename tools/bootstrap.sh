#!/bin/sh
# Create .venv (once) and install sipmesh into it in editable mode with the
# given extras ("" for the controller alone, "test", "bench").
# Usage: tools/bootstrap.sh [EXTRAS]   (run from the repository root)
set -eu
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV=.venv

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "sipmesh needs Python 3.11 or newer as '$PYTHON'" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $("$PYTHON" --version)"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        # Debian's python3 ships venv/ensurepip in a separate package.
        if [ "$(id -u)" = 0 ]; then
            echo "bootstrap: installing python3-venv (Debian)"
            DEBIAN_FRONTEND=noninteractive apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
            "$PYTHON" -m venv "$VENV"
        else
            echo "bootstrap: '$PYTHON -m venv' failed; as root run: apt-get install python3-venv" >&2
            exit 1
        fi
    fi
fi

SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
echo "bootstrap: installing sipmesh (editable) with extras '${EXTRAS:-none}'"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$SPEC"
