#!/usr/bin/env bash
# Install Debian packages (as root): scripts/apt-install.sh PKG...
# Another apt or dpkg (unattended-upgrades, a second setup) may hold the package locks: wait for it, up to
# $SETUP_APT_LOCK_TIMEOUT seconds (default 600), then fail with a message that says so. apt-get's own
# DPkg::Lock::Timeout covers dpkg's lock only; `apt-get update` gives up at once on the lists lock, so
# both commands are retried here while the error is a lock.
set -euo pipefail
lock_timeout="${SETUP_APT_LOCK_TIMEOUT:-600}"
deadline=$((SECONDS + lock_timeout))

apt_get() {
  local err status
  err="$(mktemp)"
  while true; do
    status=0
    apt-get -o DPkg::Lock::Timeout="$lock_timeout" "$@" 2>"$err" || status=$?
    if ((status == 0)) || ! grep -q "Could not get lock\|Unable to lock" "$err"; then
      cat "$err" >&2
      rm -f "$err"
      return "$status"
    fi
    if ((SECONDS >= deadline)); then
      cat "$err" >&2
      rm -f "$err"
      echo "setup: another apt/dpkg process (unattended-upgrades?) held the package lock for ${lock_timeout} s;" \
        "run this again when it has finished" >&2
      return 1
    fi
    echo "setup: waiting for another apt/dpkg process to release the package lock..." >&2
    sleep 2
  done
}

apt_get update -qq
DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "$@"
