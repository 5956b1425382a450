#!/usr/bin/env bash
# What a new machine pays to attach to a repository in object storage, and what an idle mount costs per day.
#
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... benches/s3_attach.sh s3:http://HOST:PORT/BUCKET/PREFIX [BACKUPS]
#
# Needs an empty prefix of a reachable S3 store (region from BACKUPFS_S3_REGION, default garage). Makes BACKUPS
# (default 500) small backups, one account each, so that the repository holds about 2 x BACKUPS packs (each
# backup writes a data pack and a tree pack); then
#   1. attaches a fresh state directory (`snapshots`), before and after a prune that consolidates the pack
#      index objects, and reports the requests (the binary's own counters) and seconds of each;
#   2. mounts from a fresh state directory and reports the seconds until the root lists;
#   3. keeps that mount idle for IDLE_S seconds (default 120) and reports the requests it made, per day.
# Prints one line per figure. Leaves the prefix filled (delete it with your store's tools).
set -euo pipefail
repo=$1
backups=${2:-500}
idle=${IDLE_S:-120}
bin=${BACKUPFS_BIN:-$(dirname "$0")/../target/debug/backupfs}
work=$(mktemp -d)
mnt="$work/mnt"
cleanup() { mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"; rm -rf "$work"; }
trap cleanup EXIT
printf '[s3]\nregion = "%s"\nlist_interval_s = 30\n' "${BACKUPFS_S3_REGION:-garage}" >"$work/config.toml"
export BACKUPFS_CONFIG=$work/config.toml
# The store requests a command made, from its `-v` log line.
requests() { grep -o '"requests":[0-9]*' "$1" | tail -1 | cut -d: -f2; }

"$bin" init --state-dir "$work/writer" "$repo" >/dev/null
mkdir -p "$work/src"
start=$SECONDS
for i in $(seq "$backups"); do
    head -c 4096 /dev/urandom >"$work/src/file"
    "$bin" backup --repo "$repo" --state-dir "$work/writer" --account "acct$((i % 50))" "$work/src" >/dev/null
done
echo "made $backups backups in $((SECONDS - start)) s"

attach() {
    rm -rf "$work/fresh"
    local t0=$EPOCHREALTIME
    "$bin" -v snapshots --repo "$repo" --state-dir "$work/fresh" >/dev/null 2>"$work/attach.log"
    local t1=$EPOCHREALTIME
    last=$(requests "$work/attach.log")
    echo "$1: $last requests, $(awk "BEGIN{print $t1 - $t0}") s"
}
attach "attach before any prune ($backups pack index objects)"
"$bin" prune --repo "$repo" --state-dir "$work/writer" --keep-last 100000 --grace 0 >/dev/null
attach "attach after a prune consolidated the pack index objects"

rm -rf "$work/fresh"
mkdir -p "$mnt"
t0=$EPOCHREALTIME
"$bin" -v mount --repo "$repo" --state-dir "$work/fresh" "$mnt" 2>"$work/mount.log" &
pid=$!
until ls "$mnt/acct1" >/dev/null 2>&1; do sleep 0.01; done
echo "mount from a fresh state directory: root listed after $(awk "BEGIN{print $EPOCHREALTIME - $t0}") s"
sleep "$idle"
fusermount3 -u "$mnt"
wait "$pid" || true
total=$(requests "$work/mount.log")
idle_requests=$((total - last))
echo "idle mount: $idle_requests requests in $idle s (its start-up's $last taken off), $((idle_requests * 86400 / idle)) a day"
