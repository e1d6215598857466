#!/bin/sh
# Seeds corpus/ntfs with small NTFS images (generated, never committed): mkntfs plus the
# libntfs-3g helper of tests/ntfs. Run from scanner/fuzz.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O1 -o "$tmp/populate" "$here/../../tests/ntfs/ntfs_populate.c" -lntfs-3g
mkdir -p "$here/corpus/ntfs" "$here/corpus/lznt1"
seq 1 3000 > "$tmp/text"
img="$tmp/seed.img"
truncate -s 2M "$img"
mkntfs -F -f -Q -q -s 512 -c 512 -L SEED "$img" 4096 2>/dev/null
"$tmp/populate" "$img" <<SPEC
mkdir /d
file /d/a.txt text:hello
stream /d/a.txt s text:ads
compressdir /c
file /c/z.txt fill:61:20000
file /c/t.txt @$tmp/text
sparse /s.bin 100000 text:x
link /d/a.txt /l.txt
symlink /ln d/a.txt
SPEC
cp "$img" "$here/corpus/ntfs/seed-512.img"
printf '\007\000\000\000' > "$here/corpus/lznt1/empty"
# Real LZNT1 data for the lznt1 target: the first compression unit of /c/t.txt, as stored.
inode=$(ifind -n c/t.txt "$img")
first=$(istat "$img" "$inode" | sed -n '/^Type: \$DATA/{n;p;q}' | awk '{print $1}')
dd if="$img" of="$here/corpus/lznt1/seq-text" bs=512 skip="$first" count=16 2>/dev/null
# The lznt1 target reads its first byte as the output size selector.
printf '\017' | cat - "$here/corpus/lznt1/seq-text" > "$tmp/x" && mv "$tmp/x" "$here/corpus/lznt1/seq-text"
