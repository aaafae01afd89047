#!/usr/bin/env bash
# Vendor the icon fonts of the Jupyter widget manager next to embed-amd.js in _extra/widgets/,
# so that widgets render offline without a request to a missing folder or a CDN
# (book/_site/widgets/widget-setup.js points the manager at that folder).
# Idempotent: does nothing when the fonts are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=_extra/widgets
version=1.0.6   # same html-manager version as scripts/vendor_assets.sh
if [ -f "$out/.fonts-$version" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent "@jupyter-widgets/html-manager@$version" >/dev/null )
tar -xzf "$tmp/jupyter-widgets-html-manager-$version.tgz" -C "$tmp"
mkdir -p "$out"
cp "$tmp"/package/dist/*.{woff2,woff,ttf,eot,svg} "$out/"
touch "$out/.fonts-$version"
echo "vendored the widget manager's icon fonts into $out/"
