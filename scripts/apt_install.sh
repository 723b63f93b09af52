#!/usr/bin/env bash
# Install Debian packages with apt-get, waiting for apt's lock instead of failing on it (unattended upgrades or
# a parallel install may hold it for minutes). Packages already installed are left as they are (--no-upgrade),
# so a second run changes nothing; the package lists are updated only when the install needs them (a fresh
# machine has none).
#
#   scripts/apt_install.sh [--dry-run] PACKAGE...    --dry-run: print the apt-get commands, run nothing
set -euo pipefail

dry=false
if [[ ${1:-} == --dry-run ]]; then
    dry=true
    shift
fi
(($#)) || { echo "usage: $0 [--dry-run] PACKAGE..." >&2; exit 2; }

log() { echo "apt_install.sh: $*" >&2; }

apt=(apt-get -o DPkg::Lock::Timeout=1200 -o Acquire::Retries=3)
install=("${apt[@]}" install -y -qq --no-install-recommends --no-upgrade "$@")
if $dry; then
    echo "${install[*]}"
    echo "(if that fails: ${apt[*]} update -qq, then the install again)"
    exit 0
fi

# Run a command up to $1 times, 30 s apart (apt-get update has no lock timeout of its own for its lists).
retry() {
    local tries=$1 i
    shift
    for ((i = 1; i <= tries; i++)); do
        "$@" && return 0
        ((i < tries)) || break
        log "'$*' failed (attempt $i of $tries); retrying in 30 s"
        sleep 30
    done
    return 1
}

export DEBIAN_FRONTEND=noninteractive PATH=$PATH:/usr/sbin:/usr/bin:/sbin:/bin  # dpkg runs ldconfig & co.
log "installing $*"
"${install[@]}" >/dev/null && exit 0
log "install failed; updating the package lists"
retry 40 "${apt[@]}" update -qq
retry 5 "${install[@]}" >/dev/null
