#!/bin/sh
# Seeds the `partition`, `fat`, `qcow2`, `vhd`, `vhdx` and `vmdk` fuzz corpora with small images
# made by the real tools (generated, never committed). Usage: scanner/fuzz/seed_formats.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
c="$here/corpus"
mkdir -p "$c/partition" "$c/fat" "$c/qcow2" "$c/vhd" "$c/vhdx" "$c/vmdk" "$tmp/src/d"
printf 'hello\n' > "$tmp/src/d/Long File Name.txt"
head -c 5000 /dev/urandom > "$tmp/src/blob.bin"

# Partition tables: GPT (512 and 4096-byte sectors) and MBR with logical partitions. Only the
# table area matters to the parser: keep the first and last 64 KiB.
truncate -s 4M "$tmp/gpt.img"
printf 'label: gpt\n,1M\n,1M\n' | sfdisk -q "$tmp/gpt.img" >/dev/null
truncate -s 4M "$tmp/mbr.img"
printf 'label: dos\n,1M,83\n,,5\n,512K,83\n,,83\n' | sfdisk -q "$tmp/mbr.img" >/dev/null
for f in gpt mbr; do head -c 65536 "$tmp/$f.img" > "$c/partition/$f-head.bin"; done
cp "$tmp/mbr.img" "$c/partition/mbr-full.img"

# FAT12/16 with long names (a FAT32 volume is at least ~32 MiB: too large a seed).
for spec in "12 2048" "16 4096"; do
  set -- $spec; bits=$1
  mkfs.vfat -C -F "$bits" -s 1 "$tmp/fat$bits.img" "$2" >/dev/null
  mcopy -s -i "$tmp/fat$bits.img" "$tmp/src/d" "$tmp/src/blob.bin" ::/
  cp "$tmp/fat$bits.img" "$c/fat/"
done

# Image formats from one small raw disk.
head -c 262144 /dev/urandom > "$tmp/raw.img"
truncate -s 1M "$tmp/raw.img"
qemu-img convert -q -f raw -O qcow2 -o cluster_size=4096 "$tmp/raw.img" "$c/qcow2/v3.qcow2"
qemu-img convert -q -f raw -O qcow2 -o compat=0.10,cluster_size=4096 "$tmp/raw.img" "$c/qcow2/v2.qcow2"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 "$tmp/raw.img" "$c/qcow2/zlib.qcow2"
qemu-img convert -q -f raw -O vpc "$tmp/raw.img" "$c/vhd/dynamic.vhd"
qemu-img convert -q -f raw -O vpc -o subformat=fixed "$tmp/raw.img" "$c/vhd/fixed.vhd"
qemu-img convert -q -f raw -O vhdx -o block_size=1M "$tmp/raw.img" "$c/vhdx/dynamic.vhdx"
qemu-img convert -q -f raw -O vmdk "$tmp/raw.img" "$c/vmdk/sparse.vmdk"
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$tmp/raw.img" "$c/vmdk/stream.vmdk"
