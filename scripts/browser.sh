#!/usr/bin/env bash
# Install what the browser tests (tests/browser/) drive: Debian's chromium and its
# chromedriver. Safe to run twice: installs only what is missing, then prints both paths.
#
#   scripts/browser.sh
#
# The tests give Selenium /usr/bin/chromedriver explicitly, so Selenium never downloads a
# driver or a browser of its own.
set -euo pipefail

log() { printf '[browser] %s\n' "$*" >&2; }
die() { printf '[browser] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

DRIVER=/usr/bin/chromedriver  # where chromium-driver puts it, and where the tests look

if ! command -v chromium >/dev/null || [ ! -x "$DRIVER" ]; then
    command -v apt-get >/dev/null || die "no apt-get: install chromium and chromedriver by hand"
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    log "installing chromium chromium-driver"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq chromium chromium-driver >/dev/null
fi

chromium_path=$(command -v chromium) || die "chromium is still missing after the install"
[ -x "$DRIVER" ] || die "$DRIVER is still missing after the install"
printf 'chromium:     %s (%s)\n' "$chromium_path" "$(chromium --version 2>/dev/null || echo '?')"
printf 'chromedriver: %s (%s)\n' "$DRIVER" "$("$DRIVER" --version 2>/dev/null || echo '?')"
