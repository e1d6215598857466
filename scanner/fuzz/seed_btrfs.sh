#!/bin/sh
# Seeds the `btrfs` and `btrfs_lzo` fuzz corpora from a small image made by mkfs.btrfs
# --rootdir: every non-zero 4 KiB block below 128 MiB becomes a record (block: u32 LE, data),
# the input form of fuzz_targets/btrfs.rs. Images are generated, never committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$here/corpus/btrfs" "$here/corpus/btrfs_lzo" "$tmp/src/dir/sub"
printf 'hello\n' > "$tmp/src/small"
head -c 5000 /dev/urandom > "$tmp/src/dir/sub/file"
yes 'compressible line' | head -c 20000 > "$tmp/src/dir/text"
truncate -s 300000 "$tmp/src/sparse"
ln -s small "$tmp/src/link"
ln "$tmp/src/small" "$tmp/src/dir/hard"
truncate -s 128M "$tmp/img"
mkfs.btrfs -q -m single -r "$tmp/src" "$tmp/img" >/dev/null
python3 - "$tmp/img" "$here/corpus/btrfs/mkfs-rootdir.bin" <<'PY'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, 'rb') as f, open(dst, 'wb') as o:
    n = 0
    while True:
        b = f.read(4096)
        if not b:
            break
        if any(b):
            o.write(struct.pack('<I', n) + b)
        n += 1
PY
printf '\x14\x00\x00\x00\x0c\x00\x00\x00\x13hello\x11\x00\x00' > "$here/corpus/btrfs_lzo/hello.bin"
