#!/usr/bin/env bash
# Headless Chromium and its driver for the browser test (Debian's packages, matching versions).
# Installs them when missing and we are root (CI, a fresh machine); otherwise says what to run.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium / chromium-driver missing: run 'sudo apt-get install -y chromium chromium-driver'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
