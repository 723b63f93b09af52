#!/usr/bin/env bash
# Make sure a `chromium` is on PATH (the report test renders the report page with it): nothing to do when
# one is, else Debian's package through scripts/apt_install.sh (waits for apt's lock). Idempotent.
#
#   scripts/install_chromium.sh [--check]    --check: say what would be done, change nothing
set -euo pipefail
here=${BASH_SOURCE[0]%/*}

if found=$(command -v chromium); then
    echo "chromium: $found"
    exit 0
fi
if [[ ${1:-} == --check ]]; then
    echo "chromium: not on PATH; would run:"
    exec "$BASH" "$here/apt_install.sh" --dry-run chromium
fi
"$BASH" "$here/apt_install.sh" chromium
found=$(command -v chromium) || { echo "install_chromium.sh: chromium installed but not on PATH ($PATH)" >&2; exit 1; }
echo "chromium: $found"
