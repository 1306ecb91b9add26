#!/usr/bin/env bash
# Benchmark P2: `mast-agent tuf` against python-tuf's ngclient (and tough's `tuftool download`, when it
# can be built here), each doing a whole first update — trust the initial root, refresh the top-level
# metadata, look the target up, download and verify it — from the same python-tuf repository served by
# nginx on 127.0.0.1, for a 10 MB and a 100 MB target.
#
#   scripts/bench-tuf.sh            # RUNS=5 runs per client and size (MAST_BENCH_RUNS overrides)
#
# Every figure and ratio printed is measured in this one invocation; nothing is asserted about time.
# Runs of the clients are interleaved (mast, python, tuftool, mast, …) so drift in the machine's load
# spreads over all of them; each run starts from an empty metadata and target directory, and its output
# file's sha256 is checked against the repository. Reported: the median and the fastest run, in ms, and
# how many times faster mast's median is than each other client's.
#
# What each client runs:
#   mast     `mast-agent tuf --metadata-dir D init ROOT` then `… --target-name T … download` (two
#            processes; download runs the whole refresh), release build.
#   python   one process: ngclient.Updater(bootstrap=ROOT), refresh(), get_targetinfo(), download_target().
#   tuftool  `tuftool download --root ROOT --metadata-url … --targets-url … -n T OUTDIR` (one process).
#
# Environment: MAST_TEST_PYTHON (python with python-tuf; default .venv/bin/python from scripts/test.sh),
# MAST_TEST_NGINX, MAST_BENCH_RUNS, MAST_BENCH_AGENT (a release mast-agent to use instead of building one),
# MAST_BENCH_TUFTOOL (a tuftool binary to use), MAST_BENCH_TUFTOOL_BUILD
# (seconds allowed for `cargo install tuftool` into .tmp/tuftool when none is there; default 600, 0 skips).
# tuftool is built outside the workspace (its own --root and target dir under .tmp/): it is a benchmark
# tool only and never enters mast's Cargo.lock.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

RUNS="${MAST_BENCH_RUNS:-5}"
PYTHON="${MAST_TEST_PYTHON:-$ROOT/.venv/bin/python}"
NGINX="${MAST_TEST_NGINX:-$(find_tool /usr/sbin/nginx nginx || true)}"
SIZES=(10 100) # MiB
mkdir -p "$ROOT/.tmp"
WORK="$(mktemp -d "$ROOT/.tmp/bench-tuf.XXXXXX")"
NGINX_PID=""

cleanup() {
    if [ -n "$NGINX_PID" ]; then
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$PYTHON" -c 'import tuf.ngclient' 2>/dev/null ||
    die "no python with python-tuf at $PYTHON (run scripts/test.sh once, or set MAST_TEST_PYTHON)"
[ -n "$NGINX" ] || die "nginx not found (run scripts/test.sh once, or set MAST_TEST_NGINX)"

# --- the clients -----------------------------------------------------------------------------------------

AGENT="${MAST_BENCH_AGENT:-}"
if [ -z "$AGENT" ]; then
    log "building mast-agent (release)"
    cargo build --release --quiet -p mast-agent --manifest-path "$ROOT/Cargo.toml"
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
        "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    AGENT="$TARGET_DIR/release/mast-agent"
fi

TUFTOOL="${MAST_BENCH_TUFTOOL:-}"
TUFTOOL_NOTE=""
if [ -z "$TUFTOOL" ] && [ -x "$ROOT/.tmp/tuftool/bin/tuftool" ]; then
    TUFTOOL="$ROOT/.tmp/tuftool/bin/tuftool"
fi
BUILD_SECONDS="${MAST_BENCH_TUFTOOL_BUILD:-600}"
if [ -z "$TUFTOOL" ] && [ "$BUILD_SECONDS" -gt 0 ]; then
    log "building tuftool with cargo install (at most ${BUILD_SECONDS}s) into .tmp/tuftool"
    mkdir -p "$ROOT/.tmp/tuftool"
    if (cd "$ROOT/.tmp" && CARGO_TARGET_DIR="$ROOT/.tmp/tuftool/build" timeout "$BUILD_SECONDS" \
        cargo install --quiet --locked tuftool --root "$ROOT/.tmp/tuftool") \
        >"$ROOT/.tmp/tuftool/install.log" 2>&1; then
        TUFTOOL="$ROOT/.tmp/tuftool/bin/tuftool"
    else
        TUFTOOL_NOTE="tuftool: not measured — \`cargo install tuftool\` did not finish within ${BUILD_SECONDS}s here (log: .tmp/tuftool/install.log)"
    fi
elif [ -z "$TUFTOOL" ]; then
    TUFTOOL_NOTE="tuftool: not measured (MAST_BENCH_TUFTOOL_BUILD=0 and none in .tmp/tuftool)"
    if [ -f "$ROOT/.tmp/tuftool/install.log" ]; then
        TUFTOOL_NOTE+="; last build attempt: $(tail -n 1 "$ROOT/.tmp/tuftool/install.log") (.tmp/tuftool/install.log)"
    fi
fi

cat >"$WORK/ngclient.py" <<'EOF'
"""One first update with python-tuf's ngclient: bootstrap, refresh, look up, download."""
import os
import sys

from tuf.ngclient import Updater

metadata_dir, root, metadata_url, targets_url, target_dir, name = sys.argv[1:]
os.makedirs(metadata_dir, exist_ok=True)
os.makedirs(target_dir, exist_ok=True)
with open(root, "rb") as file:
    bootstrap = file.read()
updater = Updater(metadata_dir=metadata_dir, metadata_base_url=metadata_url,
                  target_base_url=targets_url, target_dir=target_dir, bootstrap=bootstrap)
updater.refresh()
info = updater.get_targetinfo(name)
if info is None:
    sys.exit(f"{name}: not found")
updater.download_target(info)
EOF

# --- the repository and its server -----------------------------------------------------------------------

log "writing the repository with python-tuf (10 MiB and 100 MiB targets)"
target_args=()
for size in "${SIZES[@]}"; do
    target_args+=(--target "t$size.bin=$((size * 1024 * 1024))")
done
"$PYTHON" "$ROOT/agent/tests/interop/pytuf_cli_repo.py" "$WORK/repo" "${target_args[@]}" >"$WORK/repo.json"
REPO_ROOT="$WORK/repo/root.json"
expected_sha() {
    "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["targets"][sys.argv[2]]["sha256"])' \
        "$WORK/repo.json" "$1"
}

start_nginx() {
    local port attempt dir="$WORK/nginx"
    mkdir -p "$dir/tmp"
    for attempt in 1 2 3 4 5; do
        port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
events { worker_connections 64; }
http {
    default_type application/octet-stream;
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    sendfile on;
    server {
        listen 127.0.0.1:$port;
        root $WORK/repo;
    }
}
EOF
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/out.log" 2>&1 &
        NGINX_PID=$!
        local _
        for _ in $(seq 1 50); do
            kill -0 "$NGINX_PID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                BASE="http://127.0.0.1:$port"
                return 0
            fi
            sleep 0.1
        done
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
        NGINX_PID=""
        log "nginx did not come up on port $port (attempt $attempt of 5)"
    done
    cat "$dir/out.log" "$dir/error.log" >&2 || true
    die "could not start nginx"
}
start_nginx
METADATA_URL="$BASE/metadata"
TARGETS_URL="$BASE/targets"

# --- one run ---------------------------------------------------------------------------------------------

# run CLIENT NAME: one whole first update into a fresh directory; prints the milliseconds it took.
run() {
    local client="$1" name="$2" dir="$WORK/run" out start end
    rm -rf "$dir"
    mkdir -p "$dir/targets"
    start="$(date +%s%N)"
    case "$client" in
        mast)
            "$AGENT" tuf --metadata-dir "$dir/metadata" init "$REPO_ROOT" >/dev/null
            "$AGENT" tuf --metadata-dir "$dir/metadata" --metadata-url "$METADATA_URL" \
                --target-name "$name" --target-base-url "$TARGETS_URL" --target-dir "$dir/targets" \
                download >/dev/null
            out="$dir/targets/$name"
            ;;
        python)
            "$PYTHON" "$WORK/ngclient.py" "$dir/metadata" "$REPO_ROOT" "$METADATA_URL/" "$TARGETS_URL/" \
                "$dir/targets" "$name"
            out="$dir/targets/$name"
            ;;
        tuftool)
            "$TUFTOOL" download --root "$REPO_ROOT" --metadata-url "$METADATA_URL" \
                --targets-url "$TARGETS_URL" --target-name "$name" "$dir/tuftool-out" >/dev/null
            out="$dir/tuftool-out/$name"
            ;;
    esac
    end="$(date +%s%N)"
    local got
    got="$(sha256sum "$out" | cut -d' ' -f1)"
    [ "$got" = "$(expected_sha "$name")" ] || die "$client downloaded $name with sha256 $got"
    echo $(((end - start) / 1000000))
}

# median and min of the numbers given.
stats() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d %d\n", m, v[1] }'
}

CLIENTS=(mast python)
[ -n "$TUFTOOL" ] && CLIENTS+=(tuftool)

log "measuring: ${CLIENTS[*]}; $RUNS runs each per size, interleaved"
declare -A MEDIAN MIN
for size in "${SIZES[@]}"; do
    name="t$size.bin"
    declare -A TIMES=()
    for client in "${CLIENTS[@]}"; do run "$client" "$name" >/dev/null; done # warm the page cache
    for _ in $(seq 1 "$RUNS"); do
        for client in "${CLIENTS[@]}"; do
            TIMES[$client]+="$(run "$client" "$name") "
        done
    done
    for client in "${CLIENTS[@]}"; do
        # shellcheck disable=SC2086 # the list is numbers separated by spaces
        read -r MEDIAN[$client,$size] MIN[$client,$size] < <(stats ${TIMES[$client]})
        printf '  %-8s %4s MiB  runs: %s\n' "$client" "$size" "${TIMES[$client]}" >&2
    done
    unset TIMES
done

# --- report ----------------------------------------------------------------------------------------------

echo
echo "mast-agent tuf vs python-tuf ngclient$([ -n "$TUFTOOL" ] && echo " and tuftool"): first update (init, refresh, download), nginx on 127.0.0.1"
echo "machine: $(nproc) cores, $(uname -sr); python-tuf $("$PYTHON" -c 'import tuf; print(tuf.__version__)'); runs per figure: $RUNS"
printf '%-8s %8s %12s %12s %16s\n' client target "median ms" "fastest ms" "mast faster by"
for size in "${SIZES[@]}"; do
    for client in "${CLIENTS[@]}"; do
        ratio="-"
        if [ "$client" != mast ]; then
            ratio="$(awk -v a="${MEDIAN[$client,$size]}" -v b="${MEDIAN[mast,$size]}" 'BEGIN { printf "%.2fx", a / b }')"
        fi
        printf '%-8s %6s MiB %12s %12s %16s\n' "$client" "$size" "${MEDIAN[$client,$size]}" \
            "${MIN[$client,$size]}" "$ratio"
    done
done
echo
for size in "${SIZES[@]}"; do
    goal=2.0
    [ "$size" = 100 ] && goal=1.3
    best=""
    for client in "${CLIENTS[@]}"; do
        [ "$client" = mast ] && continue
        if [ -z "$best" ] || [ "${MEDIAN[$client,$size]}" -lt "${MEDIAN[$best,$size]}" ]; then best="$client"; fi
    done
    awk -v a="${MEDIAN[$best,$size]}" -v b="${MEDIAN[mast,$size]}" -v g="$goal" -v s="$size" -v c="$best" \
        'BEGIN { r = a / b; printf "goal at %s MiB: >= %.1fx the faster other client (%s): %.2fx, %s\n",
                 s, g, c, r, (r >= g) ? "met" : "MISSED" }'
done
[ -z "$TUFTOOL_NOTE" ] || echo "$TUFTOOL_NOTE"
