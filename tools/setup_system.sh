#!/usr/bin/env bash
# System libraries vidtok's optional backends need: FFmpeg's shared libraries for torchcodec.
# Skips what is already there; without root it only warns (torchcodec then stays unavailable).
set -u
if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: FFmpeg libraries missing and cannot apt-get install them; torchcodec will be unavailable" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q ffmpeg >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q ffmpeg >/dev/null; } \
    || echo "warning: apt-get install ffmpeg failed; torchcodec will be unavailable" >&2
exit 0
