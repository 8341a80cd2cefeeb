#!/bin/bash
# Runs inside the image root after all packages are installed, before
# the root tree is packed. Drop what a minimal root tree does not need, so
# the archive (and the build time spent compressing it) stays small.
set -euo pipefail

# Package lists and downloaded packages are build leftovers; apt-get update
# fetches fresh lists on first use.
rm -rf /var/lib/apt/lists/*
rm -rf /var/cache/apt/archives/*.deb /var/cache/apt/*.bin

# Documentation and translations, as in the usual slim container images.
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/*
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
