#!/usr/bin/env bash
# Replication figures on this machine (issue 16): copy throughput local to local, a second copy with nothing new,
# an incremental copy, read-repair of a damaged pack through a mount, and check --repair-from.
#   bash benches/copy.sh [WORKDIR]      (root; default /var/tmp/backupfs-copy-bench, removed afterwards)
#   FOLLOW_MEDIUM=1 bash benches/copy.sh   also: copy --follow's delay for a nightly delta of the medium corpus
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/backupfs
[ -x "$bin" ] || cargo build --release
work=${1:-/var/tmp/backupfs-copy-bench}
rm -rf "$work" && mkdir -p "$work"
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
python3 fixtures/gen_tree.py create "$work/src" --seed copy --scale small
head -c $((512 << 20)) /dev/urandom >"$work/src/big.bin"
"$bin" init "$work/prim" >/dev/null
"$bin" backup --repo "$work/prim" --account alice "$work/src" >/dev/null
size=$(du -sb "$work/prim/packs" | cut -f1)
"$bin" init --like "$work/prim" "$work/repl" >/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now); "$bin" copy --repo "$work/prim" --to "$work/repl" >/dev/null; t1=$(now)
echo "first copy: $((size >> 20)) MiB of packs in $(secs "$t0" "$t1") s ($(python3 -c "print(round($size / 1048576 / ($t1 - $t0)))") MiB/s, cold page cache)"
t0=$(now); "$bin" copy --repo "$work/prim" --to "$work/repl" >/dev/null; t1=$(now)
echo "second copy, nothing new: $(secs "$t0" "$t1") s"
python3 fixtures/gen_tree.py mutate "$work/src" --seed copy --scale small --day 1
"$bin" backup --repo "$work/prim" --account alice "$work/src" >/dev/null
t0=$(now); out=$("$bin" copy --json --repo "$work/prim" --to "$work/repl"); t1=$(now)
echo "incremental copy after a day-1 backup: $(secs "$t0" "$t1") s, $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_sent"])') bytes sent"
# Damage the largest pack at the primary: a mount with --replica serves it, check --repair-from heals it.
pack=$(ls -S "$work"/prim/packs/*/*.pack | head -1)
psize=$(stat -c %s "$pack")
printf '\x55' | dd of="$pack" bs=1 seek=$((psize / 2)) conv=notrunc status=none
mkdir -p "$work/mnt"
"$bin" mount --repo "$work/prim" --replica "$work/repl" --account alice --daemon "$work/mnt"
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now); cat "$work/mnt/latest/big.bin" >/dev/null; t1=$(now)
umount "$work/mnt"
echo "read-repair: 512 MiB file read through the mount with a damaged $((psize >> 20)) MiB pack: $(secs "$t0" "$t1") s"
t0=$(now); "$bin" check --repo "$work/prim" --read-data --repair-from "$work/repl" 2>&1 | grep -c 'repaired:' | sed 's/^/objects repaired: /'; t1=$(now)
echo "check --read-data --repair-from (whole repository read and verified, the damaged pack rewritten): $(secs "$t0" "$t1") s"

# copy --follow: from the commit of a nightly backup of the medium corpus to the snapshot listed at the replica.
if [ "${FOLLOW_MEDIUM:-0}" = 1 ]; then
    med="$work/medium"
    mkdir -p "$med"
    python3 fixtures/gen_tree.py create "$med/src" --seed follow --scale medium
    "$bin" init "$med/prim" >/dev/null
    "$bin" backup --repo "$med/prim" --account alice "$med/src" >/dev/null
    "$bin" init --like "$med/prim" "$med/repl" >/dev/null
    t0=$(now); "$bin" copy --repo "$med/prim" --to "$med/repl" >/dev/null; t1=$(now)
    echo "medium: first copy of $(du -sm "$med/prim/packs" | cut -f1) MiB of packs in $(secs "$t0" "$t1") s"
    "$bin" copy --repo "$med/prim" --to "$med/repl" --follow >/dev/null 2>&1 &
    follower=$!
    python3 fixtures/gen_tree.py mutate "$med/src" --seed follow --scale medium --day 1
    "$bin" backup --repo "$med/prim" --account alice "$med/src" >/dev/null
    t0=$(now)
    count() { "$bin" snapshots --repo "$med/repl" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
    until [ "$(count)" = 2 ]; do sleep 0.2; done
    t1=$(now)
    kill "$follower"
    echo "medium: copy --follow (--interval 5): the day-1 snapshot listed at the replica $(secs "$t0" "$t1") s after its commit"
fi
