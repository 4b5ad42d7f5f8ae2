#!/usr/bin/env bash
# The browser of the web UI's tests (tests/integration/ui): Debian's `chromium` package, driven
# by Playwright with executable_path. Installed with apt when missing; Playwright's own browser
# download (`playwright install`) is never used.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v chromium >/dev/null 2>&1 && exit 0
[[ $EUID -eq 0 ]] || die "chromium is not installed; install Debian's chromium package"
mkdir -p "$LOG_DIR"
log "installing chromium with apt (log: $LOG_DIR/browser.log)"
{
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
} >>"$LOG_DIR/browser.log" 2>&1 || die "apt could not install chromium: see $LOG_DIR/browser.log"
command -v chromium >/dev/null 2>&1 || die "chromium installed but not on PATH"
log "browser ready: $(chromium --version 2>/dev/null)"
