#!/bin/sh
# Seeds the `xfs` and `xfs_log` fuzz corpora with small XFS images made by the real tools,
# encoded as sparse images (fuzz_targets/sparse_image.rs): v4 and v5 trees from mkfs.xfs -p
# (no mount), and v5 images with a dirty log (loop mount, changes, `xfs_io -x -c 'shutdown -f'`:
# the log is flushed, the metadata is not written back). Images are generated, never committed.
# The dirty-log seeds need root and loop devices; without them the script says so and skips them.
# Usage: scanner/fuzz/seed_xfs.sh (from anywhere).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
cleanup() { umount "$tmp/mnt" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$here/corpus/xfs" "$here/corpus/xfs_log" "$tmp/mnt"
export TEST_DIR=/tmp TEST_DEV=x QA_CHECK_FS=1
encode() { # IMAGE OUT: the non-zero 512-byte sectors of IMAGE
  python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
out = bytearray(struct.pack('<I', len(data) // 512))
for i in range(len(data) // 512):
    s = data[i * 512:(i + 1) * 512]
    if any(s):
        out += struct.pack('<I', i) + s
open(sys.argv[2], 'wb').write(out)
PY
}
printf 'hello\n' > "$tmp/small"
head -c 70000 /dev/urandom > "$tmp/big"
{
  echo /dev/null; echo 0 0; echo 'd--755 0 0'
  echo "small ---644 0 0 $tmp/small"
  echo "big ---644 0 0 $tmp/big"
  echo 'link l--777 0 0 small'
  echo "long l--777 0 0 $(printf 'x%.0s' $(seq 1 300))"
  echo 'dir d--755 0 0'
  for i in $(seq 1 60); do echo "  entry-with-a-long-name-$i ---644 0 0 $tmp/small"; done
  echo '$'
  echo '$'
} > "$tmp/proto"
for v in "0 512" "1 1024"; do
  set -- $v
  truncate -s 16M "$tmp/p.img"
  mkfs.xfs -q -f -m crc="$1" -b size="$2" -d agcount=1 -p "$tmp/proto" "$tmp/p.img" 2>/dev/null
  encode "$tmp/p.img" "$here/corpus/xfs/proto-crc$1.bin"
  rm "$tmp/p.img"
done
truncate -s 16M "$tmp/d.img"
mkfs.xfs -q -f -b size=1024 -d agcount=1 "$tmp/d.img"
if ! mount -o loop "$tmp/d.img" "$tmp/mnt"; then
  # As seed_lvm.sh: the corpora keep their other seeds, and the skip is said.
  echo "seed_xfs.sh: no loop mount (root, loop devices, XFS driver): dirty-log seeds skipped" >&2
  exit 0
fi
mkdir -p "$tmp/mnt/a/b" "$tmp/mnt/gone"
# fsyncs force the log often: many records and transactions; the removed directory's blocks
# give cancelled buffers.
for i in $(seq 1 40); do
  head -c $((i * 97)) /dev/urandom > "$tmp/mnt/a/f$i"
  [ $((i % 4)) = 0 ] && xfs_io -c fsync "$tmp/mnt/a/f$i"
done
for i in $(seq 1 200); do : > "$tmp/mnt/gone/entry-with-a-long-name-$i"; done
xfs_io -c fsync "$tmp/mnt/gone"
rm -rf "$tmp/mnt/gone"
for i in $(seq 1 10); do rm "$tmp/mnt/a/f$i"; done
cp "$tmp/big" "$tmp/mnt/a/b/big"
ln -s f20 "$tmp/mnt/a/sym"
xfs_io -c fsync "$tmp/mnt/a/b/big"
xfs_io -x -c 'shutdown -f' "$tmp/mnt"
umount "$tmp/mnt"
encode "$tmp/d.img" "$here/corpus/xfs/dirty-log.bin"
cp "$here/corpus/xfs/dirty-log.bin" "$here/corpus/xfs_log/dirty-log.bin"
ls -l "$here/corpus/xfs" "$here/corpus/xfs_log"
