#!/usr/bin/env bash
# Run here (Debian 12) before a GPU-machine call: gathers what that machine lacks into the
# ignored folder .devrun/ (carry it): libzip's .deb files and the shared reference vectors.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devrun/debs .devrun/shared
(cd .devrun/debs && [ -n "$(ls libzip4_*.deb 2>/dev/null)" ] || apt-get download libzip4 libzip-dev >/dev/null)
rm -rf .devrun/shared/reference && cp -r ../shared/reference .devrun/shared/reference
chmod -R u+w .devrun/shared
du -sh .devrun
