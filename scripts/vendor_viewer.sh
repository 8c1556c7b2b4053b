#!/bin/sh
# The 3D viewer that the avatar page (styleavatar_jax/export/viewer.py) inlines: one pinned
# file of the npm package @google/model-viewer (Apache-2.0; it bundles three.js, MIT, and
# lit, BSD-3-Clause, with their licence headers kept), checked against the sha256 recorded
# in styleavatar_jax/export/assets/model-viewer.sha256.
#
#   scripts/vendor_viewer.sh           fetch VERSION, check its sha256, copy it into assets/
#   scripts/vendor_viewer.sh --check   fetch VERSION, check it, compare with assets/ (no writes)
#   scripts/vendor_viewer.sh --record  after changing VERSION: fetch, record the new sha256
#
# Needs npm (`npm pack` checks the tarball against the registry's integrity hash).
set -eu
VERSION=4.4.0
FILE=model-viewer.min.js
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASSETS=$ROOT/styleavatar_jax/export/assets
mode=${1:-}
case "$mode" in ""|--check|--record) ;; *) echo "usage: $0 [--check|--record]" >&2; exit 2 ;; esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@google/model-viewer@$VERSION" >/dev/null
tar -xzf "google-model-viewer-$VERSION.tgz" "package/dist/$FILE" package/LICENSE package/package.json
grep -q '"license": "Apache-2.0"' package/package.json || { echo "licence changed" >&2; exit 1; }
if [ "$mode" = --record ]; then
    (cd package/dist && sha256sum "$FILE") > "$ASSETS/model-viewer.sha256"
    echo "recorded: $(cat "$ASSETS/model-viewer.sha256") (@google/model-viewer@$VERSION)"
else
    (cd package/dist && sha256sum --quiet -c "$ASSETS/model-viewer.sha256")
fi
if [ "$mode" = --check ]; then
    cmp "package/dist/$FILE" "$ASSETS/$FILE"
    cmp package/LICENSE "$ASSETS/model-viewer.LICENSE"
    echo "ok: $ASSETS/$FILE is @google/model-viewer@$VERSION dist/$FILE"
else
    cp "package/dist/$FILE" "$ASSETS/$FILE"
    cp package/LICENSE "$ASSETS/model-viewer.LICENSE"
    echo "wrote $ASSETS/$FILE ($(wc -c < "$ASSETS/$FILE") bytes, @google/model-viewer@$VERSION)"
fi
