#!/usr/bin/env bash
# System packages the integration tests use: PostgreSQL (scale-out store), Chromium (browser test)
# and a CJK font (without one Chromium draws the Chinese demo as empty boxes).
# Installs them with apt when running as root; otherwise says what to install (tests then skip).
set -uo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1 || need+=(fonts-noto-cjk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "[setup] apt-get install ${need[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/recassist-apt.log 2>&1 \
    || echo "[setup] apt-get failed (see /tmp/recassist-apt.log); the tests that need ${need[*]} will skip" >&2
else
  echo "[setup] not root: install ${need[*]} yourself for the PostgreSQL and browser tests (they skip otherwise)" >&2
fi
exit 0
