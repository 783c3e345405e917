#!/usr/bin/env bash
# The Debian packages the tests use: headless-capable Chromium for the browser test of `hpsv3 demo-ui`
# (tests/test_demo_ui.py drives it with Playwright through executable_path; Playwright's own browser download is
# not used), and tcmalloc, which `hpsv3 serve` preloads into tritonserver (--allocator auto;
# tests/test_triton_server.py checks it is in use).
#
# Idempotent: does nothing when both are installed. Installing needs root (apt-get); `make debian-packages`
# runs this script, and `make test` depends on it.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
PACKAGES=(chromium fonts-dejavu-core libtcmalloc-minimal4)

if [ -x "$CHROMIUM" ] && ldconfig -p | grep -q libtcmalloc_minimal.so.4; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup_debian_packages: Chromium or tcmalloc is missing and installing them needs root:" \
    "run \`sudo apt-get install -y ${PACKAGES[*]}\` (or \`sudo make debian-packages\`), then rerun" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "setup_debian_packages: no apt-get here; install ${PACKAGES[*]} (or their equivalents) by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Other `make -j` targets may hold apt's locks for a moment (perf_analyzer's apt-get download): wait for them.
APT=(apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
echo "setup_debian_packages: installing ${PACKAGES[*]}"
if ! "${APT[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null; then
  "${APT[@]}" update -qq
  "${APT[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
"$CHROMIUM" --version
