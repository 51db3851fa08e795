#!/usr/bin/env bash
# System packages vidtok's optional parts need: FFmpeg's shared libraries for torchcodec, and Chromium for the
# report's browser tests (Playwright drives the system browser; it never downloads its own).
# Installs only what is missing; without root it only warns (the part then stays unavailable).
set -u
need=()
why=()
if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    need+=(ffmpeg)
    why+=("torchcodec will be unavailable")
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    need+=(chromium)
    why+=("the report's browser tests will be skipped")
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    for i in "${!need[@]}"; do
        echo "warning: ${need[$i]} missing and cannot apt-get install it; ${why[$i]}" >&2
    done
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; } \
    || echo "warning: apt-get install ${need[*]} failed; ${why[*]}" >&2
exit 0
