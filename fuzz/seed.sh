#!/bin/sh
# Seeds the fuzz corpora (fuzz/corpus/<target>/, git-ignored) with every
# .devmap file of the repository. Run from anywhere; safe to run again.
set -eu
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
for target in check fmt_roundtrip; do
    mkdir -p "$fuzz/corpus/$target"
    find "$root/examples" "$root/tests/specs" -name '*.devmap' -type f 2>/dev/null | while read -r f; do
        # Name each seed by its path, so that a re-run overwrites, not adds.
        name=$(printf '%s' "${f#"$root"/}" | tr '/' '_')
        cp "$f" "$fuzz/corpus/$target/seed_$name"
    done
done
# The manifest reader: the manifests of the examples, when a devmapc binary
# is built (`cargo build -p devmapc-cli`).
devmapc="$root/target/debug/devmapc"
if [ -x "$devmapc" ]; then
    mkdir -p "$fuzz/corpus/manifest"
    out=$(mktemp -d)
    for f in "$root"/examples/*.devmap; do
        "$devmapc" build -o "$out" --emit manifest "$f" >/dev/null 2>&1 || continue
    done
    for m in "$out"/*.manifest.json; do
        [ -f "$m" ] && cp "$m" "$fuzz/corpus/manifest/seed_$(basename "$m")"
    done
    rm -rf "$out"
fi
echo "seeded: $(ls "$fuzz/corpus/check" | wc -l) files per spec target, $(ls "$fuzz/corpus/manifest" 2>/dev/null | wc -l) manifests"
