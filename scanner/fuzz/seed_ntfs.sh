#!/bin/sh
# Seeds corpus/ntfs with small NTFS images (generated, never committed): mkntfs plus the
# libntfs-3g helper of tests/ntfs. Run from scanner/fuzz.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O1 -o "$tmp/populate" "$here/../../tests/ntfs/ntfs_populate.c" -lntfs-3g
mkdir -p "$here/corpus/ntfs" "$here/corpus/lznt1"
img="$tmp/seed.img"
truncate -s 2M "$img"
mkntfs -F -f -Q -q -s 512 -c 512 -L SEED "$img" 4096 2>/dev/null
"$tmp/populate" "$img" <<'SPEC'
mkdir /d
file /d/a.txt text:hello
stream /d/a.txt s text:ads
compressdir /c
file /c/z.txt fill:61:20000
sparse /s.bin 100000 text:x
link /d/a.txt /l.txt
symlink /ln d/a.txt
SPEC
cp "$img" "$here/corpus/ntfs/seed-512.img"
printf '\x07\x00\x00\x00' > "$here/corpus/lznt1/empty"
