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
echo "seeded: $(ls "$fuzz/corpus/check" | wc -l) files per target"
