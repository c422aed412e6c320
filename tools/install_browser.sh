#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the results explorer's browser tests and screenshots
# (Debian's chromium and chromium-driver, installed with apt-get where missing; must run as root).
#
#   sudo tools/install_browser.sh        # then: chromium --version; chromedriver --version
#
# Idempotent. apt-get runs under the same lock file as cluster/start.sh's, so the two installs may
# start side by side (the test workers do).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
die() {
    echo "install_browser: $*" >&2
    exit 1
}
[[ $(id -u) == 0 ]] || die "chromium or chromedriver missing: run as root (sudo $0), or install Debian's chromium and chromium-driver"
command -v apt-get >/dev/null || die "chromium or chromedriver missing and no apt-get: install Chromium and its chromedriver yourself"
export DEBIAN_FRONTEND=noninteractive
exec 9>/var/lock/brainalign-apt.lock
flock -w 1200 9 || die "another apt-get held /var/lock/brainalign-apt.lock for 20 min"
echo "install_browser: installing chromium chromium-driver (apt-get)" >&2
apt-get update -qq >&2 || die "apt-get update failed"
apt-get install -y -q --no-install-recommends chromium chromium-driver >&2 || die "apt-get install failed"
