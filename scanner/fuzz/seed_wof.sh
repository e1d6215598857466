#!/bin/sh
# Seeds corpus/xpress_huffman, corpus/lzx and corpus/wof with real compressed data
# (generated, never committed): wimlib's `wimcapture` (Debian wimtools) writes non-solid WIM
# resources whose layout (chunk table, then XPRESS or LZX chunks) is the layout of
# WofCompressedData. Run from scanner/fuzz.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$here/corpus/xpress_huffman" "$here/corpus/lzx" "$here/corpus/wof"
# Compressible content with x86-like calls (E8) and a little noise.
python3 - "$tmp/content" <<'PY'
import random, sys
r = random.Random(13)
out = bytearray()
while len(out) < 70001:
    k = r.randrange(4)
    if k == 0: out += b"The quick brown fox jumps over the lazy dog. "
    elif k == 1: out += b"\xe8" + r.randrange(-20000, 20000).to_bytes(4, "little", signed=True)
    elif k == 2: out += bytes(r.randrange(256) for _ in range(r.randrange(40)))
    else: out += b"\x55\x48\x89\xe5\xe8\x00\x00"
open(sys.argv[1], "wb").write(out[:70001])
PY
# Prints the compressed resource of the one file of WIM $1 with uncompressed size $2 to $3.
resource() {
  python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
wim = open(sys.argv[1], "rb").read()
want = int(sys.argv[2])
def reshdr(b, at):
    return (int.from_bytes(b[at:at + 7], "little"), b[at + 7],
            struct.unpack_from("<Q", b, at + 8)[0], struct.unpack_from("<Q", b, at + 16)[0])
size, _, off, _ = reshdr(wim, 0x30)
table = wim[off:off + size]
for i in range(0, len(table) - 49, 50):
    stored, flags, roff, usize = reshdr(table, i)
    if flags & 0x06 == 0x04 and usize == want:
        open(sys.argv[3], "wb").write(wim[roff:roff + stored])
        sys.exit(0)
sys.exit("no compressed resource of %d bytes" % want)
PY
}
# capture NAME COMPRESS CHUNK LEN: the resource of the first LEN bytes of the content.
capture() {
  mkdir -p "$tmp/src-$1"
  head -c "$4" "$tmp/content" > "$tmp/src-$1/f"
  wimcapture "$tmp/src-$1" "$tmp/$1.wim" --compress="$2" --chunk-size="$3" >/dev/null
  resource "$tmp/$1.wim" "$4" "$tmp/$1.res"
}
# Single chunks for the decoders, behind the byte that selects the output size.
capture x4k XPRESS 4096 4096
printf '\000' | cat - "$tmp/x4k.res" > "$here/corpus/xpress_huffman/chunk-4k"
capture x16k XPRESS 16384 16384
printf '\003' | cat - "$tmp/x16k.res" > "$here/corpus/xpress_huffman/chunk-16k"
capture lzx1 LZX 32768 32768
printf '\377' | cat - "$tmp/lzx1.res" > "$here/corpus/lzx/chunk-32k"
# Whole WofCompressedData streams: reparse data (WOF v1, file provider, v1, algorithm),
# the uncompressed size (u64), then the stream.
for spec in "0 XPRESS 4096" "1 LZX 32768" "2 XPRESS 8192" "3 XPRESS 16384"; do
  set -- $spec
  capture "wof$1" "$2" "$3" 70001
  python3 - "$1" 70001 "$tmp/wof$1.res" "$here/corpus/wof/algo-$1" <<'PY'
import struct, sys
data = open(sys.argv[3], "rb").read()
head = struct.pack("<IIIIQ", 1, 2, 1, int(sys.argv[1]), int(sys.argv[2]))
open(sys.argv[4], "wb").write(head + data)
PY
done
