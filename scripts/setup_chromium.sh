#!/usr/bin/env bash
# Debian's headless-capable Chromium for the browser test of `hpsv3 demo-ui` (tests/test_demo_ui.py drives it
# with Playwright through executable_path; Playwright's own browser download is not used).
#
# Idempotent: does nothing when /usr/bin/chromium exists. Installing needs root (apt-get); `make chromium`
# runs this script, and `make test` depends on it.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup_chromium: $CHROMIUM is missing and installing Debian's chromium needs root:" \
    "run \`sudo apt-get install -y chromium\` (or \`sudo make chromium\`), then rerun" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "setup_chromium: no apt-get here; install a Chromium at $CHROMIUM by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Other `make -j` targets may hold apt's locks for a moment (perf_analyzer's apt-get download): wait for them.
APT=(apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
echo "setup_chromium: installing Debian's chromium"
if ! "${APT[@]}" install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
  "${APT[@]}" update -qq
  "${APT[@]}" install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
"$CHROMIUM" --version
