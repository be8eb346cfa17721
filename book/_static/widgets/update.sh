#!/usr/bin/env bash
# Re-fetch the JavaScript that renders the saved ipywidgets on the book's pages, so that a
# page never loads code from a CDN. Sources (npm registry):
#   requirejs                      -> require.js            (AMD loader the widget bundle needs)
#   @jupyter-widgets/html-manager  -> html-manager/embed-amd.js and the Font Awesome fonts it loads
# The versions are pinned below; html-manager 1.0.x is the one for ipywidgets 8. config.js (kept in
# the repository) makes the manager load its fonts from html-manager/ rather than from a CDN.
# Usage: book/_static/widgets/update.sh   (needs npm; run from anywhere)
set -euo pipefail
REQUIREJS=2.3.8
HTML_MANAGER=1.0.15
FONTAWESOME=5.15.4  # only for its LICENSE.txt: its CSS and fonts are inside embed-amd.js

here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "requirejs@$REQUIREJS" "@jupyter-widgets/html-manager@$HTML_MANAGER" \
    "@fortawesome/fontawesome-free@$FONTAWESOME" >/dev/null
for t in *.tgz; do mkdir "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done

rm -f "$here/html-manager"/*.js "$here/html-manager"/*.woff2 && mkdir -p "$here/html-manager"
cp "requirejs-$REQUIREJS/package/require.js" "$here/require.js"
hm="jupyter-widgets-html-manager-$HTML_MANAGER/package/dist"
cp "$hm/embed-amd.js" "$here/html-manager/"
cp "$hm"/*.woff2 "$here/html-manager/"  # Font Awesome; every browser the book supports reads woff2
cp "$hm/embed.js.LICENSE.txt" "$here/html-manager/THIRD-PARTY-NOTICES.txt"
cp "fortawesome-fontawesome-free-$FONTAWESOME/package/LICENSE.txt" "$here/html-manager/LICENSE-fontawesome.txt"
# The npm packages of requirejs and the widget manager carry no LICENSE file: LICENSE-requirejs.txt
# and html-manager/LICENSE.txt (ipywidgets' BSD-3-Clause licence) are kept in the repository.
printf 'requirejs %s\n@jupyter-widgets/html-manager %s\n@fortawesome/fontawesome-free %s (licence only)\n' \
    "$REQUIREJS" "$HTML_MANAGER" "$FONTAWESOME" >"$here/VERSIONS.txt"
echo "updated $here"
