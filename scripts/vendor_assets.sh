#!/usr/bin/env bash
# Vendor MathJax and the Jupyter widget manager into _extra/ so the website needs no CDN.
# Idempotent: does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=_extra
if [ -f "$out/mathjax/tex-mml-chtml.js" ] && [ -f "$out/widgets/embed-amd.js" ] && [ -f "$out/widgets/require.js" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.7 >/dev/null )
mkdir -p "$out/mathjax" "$out/widgets"
tar -xzf "$tmp"/mathjax-3.2.2.tgz -C "$tmp" && cp -r "$tmp"/package/es5/. "$out/mathjax/" && rm -rf "$tmp/package"
tar -xzf "$tmp"/jupyter-widgets-html-manager-1.0.6.tgz -C "$tmp" && cp "$tmp"/package/dist/embed-amd.js "$out/widgets/" && rm -rf "$tmp/package"
tar -xzf "$tmp"/requirejs-2.3.7.tgz -C "$tmp" && cp "$tmp"/package/require.js "$out/widgets/" && rm -rf "$tmp/package"
echo "vendored MathJax and the widget manager into $out/"
