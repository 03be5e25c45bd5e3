#!/usr/bin/env bash
# The documentation matches the repository. Run by CTest as docs.paths_exist_and_snippets_match.
#
# 1. Every repository path written in backquotes in docs/ (`fabric/ddp.h`,
#    `tests/fabric/test_guide.cpp`, `docs/strategies/`) exists. A path is a backquoted word
#    with a '/' whose first part is a folder or file at the root of the repository; words with
#    wildcards or placeholders (`*_avx2.cpp`, `<key>.<param>`) and the build outputs under
#    build/ and runs/ are not paths of the repository and are skipped. A program named by its
#    source without the extension (`examples/train_mlp` for examples/train_mlp.cpp) counts.
#    README.md is checked for its links only (below): it also names files the build writes.
#    Markdown links to local files ([ddp](ddp.md)) must lead to a file, relative to the page.
# 2. Every code block of a page preceded by "<!-- snippet: FILE NAME -->" is, line for line
#    (leading spaces aside), the text between "// [guide: NAME]" and "// [end: NAME]" in FILE,
#    a test that compiles and runs it (docs/guide.md and tests/fabric/test_guide.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

pages=(README.md docs/*.md docs/strategies/*.md)
failed=0

# ---- 1. paths ----
roots=" "
for entry in *; do
  case "$entry" in build|runs) continue ;; esac
  roots+="$entry "
done
missing=()
checked=0
for page in "${pages[@]}"; do
  [[ -f "$page" && "$page" != README.md ]] || continue
  # Backquoted words, one per line (code blocks included: their paths must exist too).
  while IFS= read -r word; do
    [[ "$word" == */* ]] || continue
    [[ "$word" =~ [[:space:]\*\<\>\{\}\$\"\'\(\),:=\|] ]] && continue
    first="${word%%/*}"
    [[ "$roots" == *" $first "* ]] || continue
    checked=$((checked + 1))
    path="${word%/}"
    [[ -e "$path" ]] || compgen -G "$path.*" >/dev/null || missing+=("$page: \`$word\`")
  done < <(grep -o '`[^`]*`' "$page" | tr -d '`')
done
# Markdown links to files of the repository, relative to the page: [ddp](ddp.md).
for page in "${pages[@]}"; do
  [[ -f "$page" ]] || continue
  dir=$(dirname "$page")
  while IFS= read -r target; do
    case "$target" in http://* | https://* | '#'* | mailto:*) continue ;; esac
    checked=$((checked + 1))
    [[ -e "$dir/${target%%#*}" ]] || missing+=("$page: link ($target)")
  done < <(grep -o '\]([^) ]*)' "$page" | sed -e 's/^](//' -e 's/)$//')
done
if ((${#missing[@]})); then
  printf 'check_docs: this path does not exist: %s\n' "${missing[@]}" >&2
  failed=1
fi
if ((checked < 20)); then
  echo "check_docs: only $checked paths found in the pages; the extraction is broken" >&2
  failed=1
fi

# ---- 2. snippets ----
strip() { sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'; }
snippets=0
for page in "${pages[@]}"; do
  [[ -f "$page" ]] || continue
  while IFS= read -r marker; do
    lineno="${marker%%:*}"
    read -r _ _ file name _ <<<"${marker#*:}"
    snippets=$((snippets + 1))
    if [[ ! -f "$file" ]]; then
      echo "check_docs: $page:$lineno names $file, which does not exist" >&2
      failed=1
      continue
    fi
    # The fenced block that follows the marker.
    doc=$(awk -v start="$lineno" 'NR > start && /^```/ { if (open) exit; open = 1; next }
                                  NR > start && open { print }' "$page" | strip)
    src=$(awk -v name="$name" 'index($0, "// [end: " name "]") { exit }
                               open { print }
                               index($0, "// [guide: " name "]") { open = 1 }' "$file" | strip)
    if [[ -z "$src" ]]; then
      echo "check_docs: $file has no block '// [guide: $name]' ... '// [end: $name]' ($page:$lineno)" >&2
      failed=1
    elif [[ "$doc" != "$src" ]]; then
      echo "check_docs: the snippet '$name' at $page:$lineno differs from $file:" >&2
      diff <(echo "$src") <(echo "$doc") >&2 || true
      failed=1
    fi
  done < <(grep -n '<!-- snippet: ' "$page" || true)
done
if ((snippets == 0)); then
  echo "check_docs: no snippet markers found (docs/guide.md has three)" >&2
  failed=1
fi

if ((failed)); then exit 1; fi
echo "check_docs: $checked paths exist, $snippets snippets match"
