#!/usr/bin/env bash
# Re-fetch MathJax, which typesets the book's equations, so that a page never loads it from a
# CDN (Sphinx's default). Source: the npm registry's mathjax package, version pinned below.
# Kept: es5/tex-chtml.js (TeX in, HTML out) and the woff2 fonts it loads from beside itself.
# Usage: book/_static/mathjax/update.sh   (needs npm; run from anywhere)
set -euo pipefail
MATHJAX=3.2.2

here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "mathjax@$MATHJAX" >/dev/null
tar xzf "mathjax-$MATHJAX.tgz"
rm -rf "$here/tex-chtml.js" "$here/output"
cp package/es5/tex-chtml.js "$here/"
mkdir -p "$here/output/chtml/fonts"
cp -r package/es5/output/chtml/fonts/woff-v2 "$here/output/chtml/fonts/"
cp package/LICENSE "$here/LICENSE.txt"
echo "mathjax $MATHJAX (npm), es5/tex-chtml.js and its woff-v2 fonts" > "$here/VERSION.txt"
