#!/bin/sh
# Install the Debian packages listed in FILE (one per line, '#' comments)
# that are missing. As root: 'apt-get update' once, then one install. Not
# root: say what was skipped, so a failing test is not a mystery.
# Usage: tools/debian-packages.sh FILE
set -eu
FILE="$1"
MISSING=""
for pkg in $(sed -e 's/#.*//' "$FILE"); do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        MISSING="$MISSING $pkg"
    fi
done
if [ -z "$MISSING" ]; then
    echo "debian packages: all present ($(sed -e 's/#.*//' "$FILE" | tr '\n' ' ' | tr -s ' '))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "debian packages: NOT root, skipped installing:$MISSING"
    echo "debian packages: tests that need them will be skipped; run 'make test' as root to run them"
    exit 0
fi
echo "debian packages: installing:$MISSING"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $MISSING
