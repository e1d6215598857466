#!/bin/sh
# Seeds the `ext` and `ext_journal` fuzz corpora with small images made by the real tools
# (images are generated, never committed). Usage: scanner/fuzz/seed_ext.sh (from anywhere).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$here/corpus/ext" "$here/corpus/ext_journal" "$tmp/src/dir/sub"
printf 'hello\n' > "$tmp/src/small"
head -c 3000 /dev/urandom > "$tmp/src/dir/sub/file"
truncate -s 300000 "$tmp/src/sparse" && printf 'x' | dd of="$tmp/src/sparse" bs=1 seek=290000 conv=notrunc 2>/dev/null
ln -s small "$tmp/src/link"
ln "$tmp/src/small" "$tmp/src/dir/hard"
mkfs.ext2 -q -F -b 1024 -N 32 -d "$tmp/src" "$here/corpus/ext/ext2.img" 512K
mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,inline_data -d "$tmp/src" "$here/corpus/ext/ext4-inline.img" 512K
mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,^metadata_csum,meta_bg,^resize_inode -g 256 -d "$tmp/src" "$here/corpus/ext/ext4-metabg.img" 512K
# A dirty journal (1 KiB blocks): log two blocks of a copy changed by debugfs write.
mkfs.ext4 -q -F -b 1024 -N 32 -J size=1 -d "$tmp/src" "$tmp/j.img" 4M
cp "$tmp/j.img" "$tmp/k.img"
debugfs -w "$tmp/k.img" -R "write $tmp/src/small newfile" >/dev/null 2>&1
cmp -l "$tmp/j.img" "$tmp/k.img" | awk '{ b = int(($1 - 1) / 1024); if (b > 1) print b }' | sort -un > "$tmp/blocks"
: > "$tmp/data"
for b in $(cat "$tmp/blocks"); do dd if="$tmp/k.img" bs=1024 skip="$b" count=1 >> "$tmp/data" 2>/dev/null; done
cp "$tmp/j.img" "$tmp/plain.img"
printf 'jo -c\njw -b %s %s\njc\n' "$(paste -sd, "$tmp/blocks")" "$tmp/data" > "$tmp/script"
debugfs -w -f "$tmp/script" "$tmp/j.img" >/dev/null 2>&1
cp "$tmp/j.img" "$here/corpus/ext/ext4-dirty-journal.img"
debugfs -R "dump <8> $here/corpus/ext_journal/journal-csum3.bin" "$tmp/j.img" >/dev/null 2>&1
# The same without journal checksums, plus a revoking second transaction.
printf 'jo\njw -b %s %s\njc\njo\njw -r %s\njc\n' "$(paste -sd, "$tmp/blocks")" "$tmp/data" "$(head -1 "$tmp/blocks")" > "$tmp/script"
debugfs -w -f "$tmp/script" "$tmp/plain.img" >/dev/null 2>&1
debugfs -R "dump <8> $here/corpus/ext_journal/journal-plain.bin" "$tmp/plain.img" >/dev/null 2>&1
ls -l "$here/corpus/ext" "$here/corpus/ext_journal"
