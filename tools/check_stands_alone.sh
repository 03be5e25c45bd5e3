#!/usr/bin/env bash
# The repository stands alone: no file may point at design notes kept outside it (the design
# document is docs/design.md). Run by CTest as repository.stands_alone.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\.\./shared|DESIGN\.md|TOOLCHAIN\.md'
if grep -rnIE "$pattern" --exclude-dir=.git --exclude-dir=build --exclude=check_stands_alone.sh .; then
  echo "check_stands_alone: the lines above point outside the repository; cite docs/design.md" >&2
  exit 1
fi
