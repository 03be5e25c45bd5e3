#!/usr/bin/env bash
# Rebuilds devils_dictionary.{train,val}.txt from Debian's dict-devil package (how the files
# in this folder were made; train_gpt reads the files and never runs this).
#
#   bash data/corpus/make_corpus.sh [path/to/devil.dict.dz]
#
# Without an argument it fetches the package with `apt-get download` into a temporary folder.
# The text is the body of the dictd database (its two "00-database" header entries dropped);
# every tenth dictionary entry goes to validation, the rest to training, so that both halves
# span the alphabet.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-}"
if [ -z "$src" ]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download dict-devil >/dev/null && dpkg-deb -x dict-devil_*.deb x)
  src="$tmp/x/usr/share/dictd/devil.dict.dz"
fi
# Entries start with a capitalised head word, a comma and a part of speech ("ABASEMENT, n.").
zcat "$src" | awk -v train="$here/devils_dictionary.train.txt" -v val="$here/devils_dictionary.val.txt" '
  /The Internet Wiretap 1st Online Edition/ { started = 1 }
  /^ abcdefghijklmnopqrstuvwxyz$/ { started = 0 }
  !started { next }
  /^[A-Z][A-Z0-9 .'"'"'-]*, [a-z]/ { entry++ }
  { print > ((entry % 10 == 9) ? val : train) }
'
wc -c "$here"/devils_dictionary.*.txt
