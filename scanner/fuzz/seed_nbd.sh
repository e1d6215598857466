#!/bin/sh
# Seeds the `nbd_server` fuzz corpus (generated, never committed): sessions in the dialect our
# server speaks (written here), and what real NBD clients send to qemu-nbd (qemu-img, qemu-io and
# nbdinfo through socat, which records the client-to-server bytes; QEMU negotiates extensions
# that our server refuses, so those mostly exercise the negotiation). Each seed starts with the
# target's mode byte: 0 (no negotiation prepended) or 1 (NBD_OPT_GO for "vda" prepended).
# Usage: scanner/fuzz/seed_nbd.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
c="$here/corpus/nbd_server"
mkdir -p "$c"
python3 - "$c" <<'PY'
import struct, sys
d = sys.argv[1]
be = lambda f, *v: struct.pack(">" + f, *v)
def opt(o, data=b""): return b"IHAVEOPT" + be("II", o, len(data)) + data
def info(o, name, infos): return opt(o, be("I", len(name)) + name + be("H", len(infos)) + b"".join(be("H", i) for i in infos))
def req(cmd, cookie, off, ln, flags=0): return be("IHHQQI", 0x25609513, flags, cmd, cookie, off, ln)
seeds = {
    "go-reads": b"\0" + be("I", 3) + info(7, b"vda", [3, 1]) + req(0, 1, 0, 512) + req(0, 2, 8000, 192) + req(2, 3, 0, 0),
    "list-info-abort": b"\0" + be("I", 1) + opt(3) + info(6, b"", [3]) + opt(5) + opt(8) + opt(2),
    "export-name": b"\0" + be("I", 0) + opt(1, b"vda") + req(0, 1, 4096, 4096) + req(2, 2, 0, 0),
    "writes": b"\1" + req(1, 1, 0, 16) + b"A" * 16 + req(4, 2, 0, 512) + req(6, 3, 0, 512) + req(3, 4, 0, 0) + req(0, 5, 0, 8192) + req(2, 6, 0, 0),
    "bad-reads": b"\1" + req(0, 1, 8190, 4) + req(0, 2, 0, 0) + req(0, 3, 0, 64, flags=1) + req(7, 4, 0, 4096),
}
for name, data in seeds.items():
    open(f"{d}/{name}.bin", "wb").write(data)
PY

# The `nbd_starttls` corpus: server sides of a TLS upgrade (greeting, the reply to
# NBD_OPT_STARTTLS, then NBD_OPT_GO replies and a read reply as if TLS were transparent).
python3 - "$here/corpus/nbd_starttls" <<'PY'
import os, struct, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
be = lambda f, *v: struct.pack(">" + f, *v)
greet = b"NBDMAGIC" + b"IHAVEOPT" + be("H", 3)
def rep(opt, typ, data=b""): return be("QIII", 0x3e889045565a9, opt, typ, len(data)) + data
go = (rep(7, 3, be("HQH", 0, 1 << 20, 3)) + rep(7, 3, be("HIII", 3, 512, 4096, 1 << 20))
      + rep(7, 1))
read = be("IIQ", 0x67446698, 0, 1) + bytes(range(256)) * 2
seeds = {
    "ack-go-read": greet + rep(5, 1) + go + read,
    "unsup": greet + rep(5, 0x80000001, b"no TLS"),
    "policy": greet + rep(5, 0x80000002, b"not for you"),
    "info-then-ack": greet + rep(5, 0x40000000, b"x") + rep(5, 1) + go,
    "ack-with-data": greet + rep(5, 1, b"junk"),
    "not-fixed": b"NBDMAGIC" + b"IHAVEOPT" + be("H", 2),
}
for name, data in seeds.items():
    open(f"{d}/{name}.bin", "wb").write(data)
PY

command -v qemu-nbd >/dev/null && command -v socat >/dev/null || {
  echo "seed_nbd: qemu-nbd or socat missing: corpus not seeded" >&2; exit 0; }
tmp=$(mktemp -d)
nbd_pid=""
trap '[ -n "$nbd_pid" ] && kill "$nbd_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
head -c 65536 /dev/urandom > "$tmp/disk.raw"
truncate -s 1M "$tmp/disk.raw"
port=$((20000 + $$ % 20000))
qemu-nbd --read-only --persistent -f raw -x vda -b 127.0.0.1 -p "$port" "$tmp/disk.raw" &
nbd_pid=$!
for _ in $(seq 50); do socat -u OPEN:/dev/null "TCP:127.0.0.1:$port" 2>/dev/null && break; sleep 0.1; done

# Runs the client command "$2" (with URL prefix nbd://127.0.0.1:PROXY) and keeps its bytes as $1.
record() {
  proxy=$((port + 1))
  socat -r "$tmp/rec" "TCP-LISTEN:$proxy,bind=127.0.0.1,reuseaddr" "TCP:127.0.0.1:$port" &
  socat_pid=$!
  sleep 0.3
  sh -c "$2" "nbd://127.0.0.1:$proxy" >/dev/null 2>&1 || true
  wait "$socat_pid" 2>/dev/null || true
  { printf '\000'; cat "$tmp/rec"; } > "$c/$1.bin"
  rm -f "$tmp/rec"
}
record qemu-img-info 'qemu-img info "$0/vda"'
record qemu-img-convert 'qemu-img convert -f raw -O raw "$0/vda" '"$tmp/out.raw"
record qemu-io-read 'qemu-io -r -f raw -c "read 4096 8192" -c "read 1000 3" "$0/vda"'
command -v nbdinfo >/dev/null && record nbdinfo 'nbdinfo "$0/vda"'
ls "$c" | wc -l | xargs echo "seed_nbd: corpus files:"
