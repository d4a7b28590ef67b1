#!/usr/bin/env bash
# Re-vendor the browser assets that Great Expectations' Data Docs templates load from CDNs.
# Dev-time only (needs the npm registry); the result is committed and nothing downloads at run time.
# citysafe/data_docs.py (CDN_ASSETS) maps every CDN URL in GX 1.24.1's templates to a file here.
# Usage: bash expectations/data_docs_assets/vendor.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# package@version (exactly what the templates name; vega@5 / vega-lite@5 / vega-embed@6 are floating
# tags on the CDN: pinned here to the newest 5.x / 5.x / 6.x when vendored).
packages=(bootstrap@4.3.1 bootstrap-table@1.19.1 bootstrap-table@1.19.0 bootstrap-datepicker@1.9.0
          @forevolve/bootstrap-dark@1.1.0 @fortawesome/fontawesome-free@6.6.0 jquery@3.7.1 popper.js@1.12.9
          vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)
for spec in "${packages[@]}"; do
  name="${spec%@*}"; dir="$work/${name//\//_}@${spec##*@}"
  mkdir -p "$dir"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  tar xzf "$work"/*.tgz -C "$dir" && rm "$work"/*.tgz
done
p() { echo "$work/$1/package"; }   # unpacked package root

# One folder per package: the minified files the templates load plus the package's licence.
find "$here" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
put() { mkdir -p "$here/$1"; cp "$2" "$here/$1/"; }
put bootstrap "$(p bootstrap@4.3.1)/dist/css/bootstrap.min.css"
put bootstrap "$(p bootstrap@4.3.1)/dist/js/bootstrap.min.js"
put bootstrap "$(p bootstrap@4.3.1)/LICENSE"
put bootstrap-table "$(p bootstrap-table@1.19.1)/dist/bootstrap-table.min.css"
put bootstrap-table "$(p bootstrap-table@1.19.1)/dist/bootstrap-table.min.js"
put bootstrap-table "$(p bootstrap-table@1.19.1)/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"
put bootstrap-table "$(p bootstrap-table@1.19.1)/LICENSE"
# The templates take the filter-control stylesheet from 1.19.0 (its .css equals 1.19.1's; .min differs
# from 1.19.1's only in the version banner).
put bootstrap-table/1.19.0 "$(p bootstrap-table@1.19.0)/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
put bootstrap-datepicker "$(p bootstrap-datepicker@1.9.0)/dist/css/bootstrap-datepicker.min.css"
put bootstrap-datepicker "$(p bootstrap-datepicker@1.9.0)/dist/js/bootstrap-datepicker.min.js"
put bootstrap-datepicker "$(p bootstrap-datepicker@1.9.0)/LICENSE"
# The templates load the unminified bootstrap-prefers-dark.css (863 KiB); the package's .min (150 KiB) is
# the same stylesheet.
put bootstrap-dark "$(p @forevolve_bootstrap-dark@1.1.0)/dist/css/bootstrap-prefers-dark.min.css"
put bootstrap-dark "$(p @forevolve_bootstrap-dark@1.1.0)/LICENSE"
put jquery "$(p jquery@3.7.1)/dist/jquery.min.js"
put jquery "$(p jquery@3.7.1)/LICENSE.txt"
put popper.js "$(p popper.js@1.12.9)/dist/umd/popper.min.js"
put vega "$(p vega@5.33.1)/build/vega.min.js"
put vega-lite "$(p vega-lite@5.23.0)/build/vega-lite.min.js"
put vega-lite "$(p vega-lite@5.23.0)/LICENSE"
put vega-embed "$(p vega-embed@6.29.0)/build/vega-embed.min.js"
put vega-embed "$(p vega-embed@6.29.0)/LICENSE"
fa="$(p @fortawesome_fontawesome-free@6.6.0)"
mkdir -p "$here/fontawesome/css" "$here/fontawesome/webfonts"
cp "$fa/LICENSE.txt" "$here/fontawesome/"
cp "$fa"/webfonts/*.woff2 "$here/fontawesome/webfonts/"
# Only the woff2 fonts are kept (every browser GX supports reads them): drop the .ttf fallbacks
# from the stylesheet so that it references no missing file.
sed -E 's/,url\(\.\.\/webfonts\/[a-z0-9-]+\.ttf\) format\("truetype"\)//g' "$fa/css/all.min.css" \
  > "$here/fontawesome/css/all.min.css"
if grep -q '\.ttf' "$here/fontawesome/css/all.min.css"; then echo "ttf reference left in all.min.css" >&2; exit 1; fi

# popper.js 1.12.9 and vega 5.33.1 ship no licence file: write the licence their package.json names.
cat > "$here/popper.js/LICENSE" <<'EOF'
popper.js 1.12.9 (npm package.json: "license": "MIT"; banner: "Copyright (C) Federico Zivolo 2017")

The MIT License (MIT)

Copyright (C) Federico Zivolo 2017

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF
{ echo "vega 5.33.1 (npm package.json: \"license\": \"BSD-3-Clause\"); the same licence as vega-lite:"
  echo; cat "$(p vega-lite@5.23.0)/LICENSE"; } > "$here/vega/LICENSE"

du -sh "$here"
