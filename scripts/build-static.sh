#!/usr/bin/env bash
# Builds a fully static `mast-agent` for x86_64 Linux (musl libc), the binary deploy/container/Containerfile
# copies into a FROM-scratch image and that runs on any edge node whatever its libc.
#
# Usage: scripts/build-static.sh [--out PATH]
#
# It installs what is missing, only when missing: Debian's `musl-tools` (musl-gcc, for the C parts of the
# build: SQLite, zstd, ring's assembly) with apt, and the Rust standard library for
# x86_64-unknown-linux-musl with `rustup target add`. Then it builds `mast-agent` in release mode, checks
# with `file` and `ldd` that the result is statically linked, and prints its path and size.
#
# The build uses its own target directory (target/musl), so it never holds the lock of target/ that other
# builds on the same machine wait for. TLS roots are compiled in (webpki-root-certs), so the binary needs
# no /etc/ssl; an extra CA for a private mirror is the agent's `ca_bundle` key.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=x86_64-unknown-linux-musl
TARGET_DIR="${CARGO_TARGET_DIR_STATIC:-$ROOT/target/musl}"
OUT=""

log() { printf 'build-static.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --out)
            [ "$#" -ge 2 ] || die "--out needs a path"
            OUT="$2"
            shift 2
            ;;
        -h | --help)
            sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ "$(uname -m)" = x86_64 ] || die "this script builds for $TARGET and expects an x86_64 host, not $(uname -m)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

# --- musl-gcc ------------------------------------------------------------------------------------------
if ! command -v musl-gcc >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "musl-gcc not found and no apt-get to install musl-tools"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        die "musl-gcc not found; install Debian's musl-tools as root (apt-get install musl-tools)"
    fi
    log "installing musl-tools with apt"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        die "apt-get update failed"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        musl-tools || die "apt-get install musl-tools failed"
fi
MUSL_GCC="$(command -v musl-gcc)"

# --- the Rust target -----------------------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "adding the Rust target $TARGET with rustup"
        if ! rustup target add "$TARGET"; then
            die "rustup could not download the standard library for $TARGET. It comes from the Rust \
distribution server (static.rust-lang.org), not from crates.io: on a machine that reaches only package \
registries this step cannot work; install the target where the toolchain is provisioned, or build on a \
machine that can reach it"
        fi
    fi
else
    # A toolchain not managed by rustup (a distribution's rustc): the target must already be there.
    rustc --print target-list | grep -qx "$TARGET" || die "rustc does not know $TARGET"
    log "no rustup: assuming the standard library for $TARGET is installed with rustc"
fi

# --- build -----------------------------------------------------------------------------------------------
log "building mast-agent for $TARGET (release; target dir ${TARGET_DIR#"$ROOT"/})"
# musl-gcc compiles every C dependency against musl's headers (cc-rs reads CC_<target>). The link is left
# to Rust's musl target, which is static by default (crt-static) with its own copy of musl's libc.a and
# start files: linking with musl-gcc instead would make a dynamic PIE that needs /lib/ld-musl-x86_64.so.1.
export CC_x86_64_unknown_linux_musl="$MUSL_GCC"
(cd "$ROOT" && cargo build --locked --release -p mast-agent --bin mast-agent --target "$TARGET" \
    --target-dir "$TARGET_DIR")
BIN="$TARGET_DIR/$TARGET/release/mast-agent"
[ -x "$BIN" ] || die "the build did not produce $BIN"

# --- check that it is static -----------------------------------------------------------------------------
description="$(file -b "$BIN")"
case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$BIN is not statically linked: file says: $description" ;;
esac
# glibc's ldd says "not a dynamic executable" (exit 1) for a static binary, and "statically linked" for a
# static PIE; anything listing libraries means a dynamic one.
ldd_output="$(ldd "$BIN" 2>&1 || true)"
case "$ldd_output" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) die "$BIN has dynamic dependencies: ldd says: $ldd_output" ;;
esac
"$BIN" --version >/dev/null || die "$BIN does not run"

if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    cp "$BIN" "$OUT"
    BIN="$OUT"
fi
size="$(stat -c %s "$BIN")"
echo "binary: $BIN"
echo "file:   $description"
echo "ldd:    $ldd_output"
echo "size:   $size bytes ($((size / 1024 / 1024)) MiB)"
