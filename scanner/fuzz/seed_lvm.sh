#!/bin/sh
# Seeds the `lvm_metadata`, `volume_probe`, `thin_btree` and `lvm_snapshot` fuzz corpora: metadata written by
# the real LVM tools (linear, striped, spanning LVs) on loop devices with activation off, a LUKS2
# header, thin pool metadata from thin_restore, and snapshot COW devices (generated, never committed; needs root for
# losetup). Usage: scanner/fuzz/seed_lvm.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
c="$here/corpus/lvm_metadata"
mkdir -p "$c"
truncate -s 64M "$tmp/a.img" "$tmp/b.img"
# Without loop devices (not root, a container without them) the corpora keep their other seeds.
if ! a=$(losetup -f --show "$tmp/a.img" 2>/dev/null); then
  echo "seed_lvm.sh: no loop devices: LVM seeds skipped" >&2; rm -rf "$tmp"; exit 0
fi
if ! b=$(losetup -f --show "$tmp/b.img" 2>/dev/null); then
  losetup -d "$a"; echo "seed_lvm.sh: no loop devices: LVM seeds skipped" >&2; rm -rf "$tmp"; exit 0
fi
trap 'losetup -d "$a" "$b"; rm -rf "$tmp"' EXIT
conf="global{activation=0} devices{filter=[\"a|^$a\$|\",\"a|^$b\$|\",\"r|.*|\"] obtain_device_list_from_udev=0} backup{backup=0 archive=0}"
export LVM_SUPPRESS_FD_WARNINGS=1
pvcreate -q --config "$conf" "$a" "$b" 2>/dev/null
vgcreate -q --config "$conf" seedvg "$a" "$b" 2>/dev/null
lvcreate -q --config "$conf" -an -Zn -L 8M -n lin seedvg 2>/dev/null
lvcreate -q --config "$conf" -an -Zn -i 2 -I 64k -L 16M -n str seedvg 2>/dev/null
lvcreate -q --config "$conf" -an -Zn -L 80M -n span seedvg 2>/dev/null
vgcfgbackup -q --config "$conf" -f "$c/seedvg.txt" seedvg 2>/dev/null
# A VG with a classic snapshot as lvm2 writes it (COW LV hidden, snapshotN visible) and one being
# merged, on a PV the fuzz target's 4 MiB device can hold.
cat > "$c/snapshot.txt" <<'VG'
snapvg {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8
physical_volumes {
pv0 { id = "bbbbbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb" pe_start = 2048 pe_count = 900 }
}
logical_volumes {
origin { id = "o" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 64 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
snap { id = "s" status = ["READ", "WRITE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 32 type = "striped" stripe_count = 1 stripes = ["pv0", 64] } }
snapshot0 { id = "z" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 64 type = "snapshot" chunk_size = 8 origin = "origin" cow_store = "snap" } }
other { id = "t" status = ["READ", "WRITE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 32 type = "striped" stripe_count = 1 stripes = ["pv0", 96] } }
snapshot1 { id = "y" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
segment1 { start_extent = 0 extent_count = 64 type = "snapshot" chunk_size = 8 origin = "origin" merging_store = "other" } }
}
}
VG
# The volume_probe corpus: the PV's label and metadata area (first 1 MiB), and a LUKS2 header.
mkdir -p "$here/corpus/volume_probe"
head -c 1048576 "$tmp/a.img" > "$here/corpus/volume_probe/pv-head.bin"
truncate -s 16M "$tmp/luks.img"
printf 'k' > "$tmp/key"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$tmp/key" "$tmp/luks.img"
head -c 32768 "$tmp/luks.img" > "$here/corpus/volume_probe/luks2-head.bin"
# The lvm_snapshot corpus: COW devices laid out as dm-snap-persistent.c writes them (origin size
# and an offset, then the header, areas of (old, new) chunk pairs and the data chunks), with
# 512-byte chunks so that several areas fit in a few KiB, and 4 KiB chunks.
mkdir -p "$here/corpus/lvm_snapshot"
python3 - "$here/corpus/lvm_snapshot" <<'PY'
import struct, sys
def cow(chunk, chunks, olds, origin):
    per = chunk // 16; stride = per + 1
    dev = bytearray(chunk * chunks)
    dev[0:16] = struct.pack('<IIII', 0x70416e53, 1, 1, chunk // 512)
    nxt = 2
    for n, old in enumerate(olds):
        new = nxt; nxt += 1
        if nxt % stride == 1: nxt += 1
        at = (1 + (n // per) * stride) * chunk + (n % per) * 16
        dev[at:at + 16] = struct.pack('<QQ', old, new)
        dev[new * chunk:(new + 1) * chunk] = bytes([old & 0xff]) * chunk
    return struct.pack('<QQ', origin, 1000) + bytes(dev)
out = sys.argv[1]
open(out + '/areas-512.bin', 'wb').write(cow(512, 80, [(i * 37) % 200 for i in range(70)], 200 * 512))
open(out + '/runs-4k.bin', 'wb').write(cow(4096, 6, [10, 11, 12, 3], 64 * 4096))
PY
# The thin_btree corpus: pool metadata written by thin_restore (device 1, virtual block 0 first).
mkdir -p "$here/corpus/thin_btree"
cat > "$tmp/thin.xml" <<'XML'
<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="4096">
  <device dev_id="1" mapped_blocks="3" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="300" time="0"/>
    <single_mapping origin_block="700" data_block="3" time="1"/>
  </device>
  <device dev_id="2" mapped_blocks="1" transaction="1" creation_time="1" snap_time="1">
    <single_mapping origin_block="0" data_block="4000" time="1"/>
  </device>
</superblock>
XML
truncate -s 4M "$tmp/thin.bin"
thin_restore -i "$tmp/thin.xml" -o "$tmp/thin.bin"
{ printf '\001\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000'; head -c 65536 "$tmp/thin.bin"; } > "$here/corpus/thin_btree/restored.bin"
