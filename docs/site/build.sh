#!/usr/bin/env bash
# Build the documentation site: plugin reference from the plugins' own documentation (antsibull-docs),
# plus the user guide (docs/*.md). Usage: build.sh [OUTPUT_DIR] (default .build/docsite). Needs the
# collection installed where ansible finds it (make docs does that) and docs/site/requirements.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/.build/docsite}
rm -rf "$out"
mkdir -p "$out/rst/guide"
chmod og-w "$out/rst"  # antsibull-docs wants the directory writable by its owner only
cp "$here/conf.py" "$here/antsibull-docs.cfg" "$out/"
antsibull-docs --config-file "$out/antsibull-docs.cfg" collection --use-current --dest-dir "$out/rst" fleetmaint.libvirt
cp "$here/index.rst" "$out/rst/"
cp "$repo/docs/guide.md" "$repo/docs/disaster_recovery.md" "$repo/docs/lab.md" "$repo/docs/move-log.md" \
  "$repo/docs/versions.md" "$repo/docs/capabilities.md" "$out/rst/guide/"
cp -r "$repo/docs/images" "$out/rst/guide/"
sphinx-build -M html "$out/rst" "$out/build" -c "$out" -W --keep-going -q
echo "documentation site: $out/build/html/index.html"
