#!/usr/bin/env bash
# mast end to end on one machine, in about a minute: a release engineer packs and signs the example app in
# examples/edge-gateway, a mirror serves the repository on 127.0.0.1, and a site's agent verifies and
# applies it; then one manifest changes, and the site's second pass fetches only the chunk that changed.
#
# Usage: scripts/demo.sh [--release]
#
#   --release         build the binaries with the release profile (default: debug, which builds faster;
#                     the demo measures bytes, not speed)
#   MAST_BIN_DIR      use the `mast` and `mast-agent` already in this directory; build nothing
#   MAST_DEMO_SERVER  nginx or python (default: nginx when installed, else installed with apt when this
#                     user may, else python3's http.server)
#   MAST_DEMO_KEEP=1  keep the temporary directory (keys, repository, site state) and print where it is
#
# Everything lives in one temporary directory, removed on exit; the server listens on 127.0.0.1 only and
# is stopped by its PID. The script stops at the first failure with a non-zero exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

EXAMPLE="$ROOT/examples/edge-gateway"
CHANNEL=stable
PROFILE=debug
while [ "$#" -gt 0 ]; do
    case "$1" in
        --release) PROFILE=release ;;
        -h | --help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

# Only the demo's own settings come from the caller's environment: a MAST_CHANNEL or MAST_MIRRORS left in
# a shell would silently change what the agent does, and MAST_*_KEY what the packager signs with.
while read -r name; do
    case "$name" in
        MAST_BIN_DIR | MAST_DEMO_*) ;;
        MAST_*) unset "$name" ;;
    esac
done < <(compgen -e)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mast-demo.XXXXXX")"
LOG_DIR="$WORK/logs"
mkdir -p "$LOG_DIR"
SERVER_PID=""
cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    restore_policy_rc
    if [ "${MAST_DEMO_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    if [ "$status" -ne 0 ]; then
        log "FAILED (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STEP=0
step() {
    STEP=$((STEP + 1))
    printf '\n== %s. %s\n' "$STEP" "$*"
}
# Prints a command as it would be typed, the binaries by name and paths under the work directory
# shortened, then runs it.
show() {
    local line
    line="$(printf '%q ' "$@")"
    if [ -n "${AGENT:-}" ]; then
        line="${line//"$AGENT"/mast-agent}"
        line="${line//"$MAST"/mast}"
    fi
    line="${line//"$WORK"/\$DEMO}"
    printf '$ %s\n' "${line% }"
    "$@"
}

# --- 1. binaries ----------------------------------------------------------------------------------------
if [ -n "${MAST_BIN_DIR:-}" ]; then
    step "Binaries: prebuilt, from MAST_BIN_DIR"
    BIN_DIR="$(cd "$MAST_BIN_DIR" && pwd)"
else
    step "Build mast (the packager) and mast-agent ($PROFILE profile)"
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain, or set MAST_BIN_DIR"
    profile_flag=()
    [ "$PROFILE" = release ] && profile_flag=(--release)
    (cd "$ROOT" && show cargo build --locked "${profile_flag[@]}" -p mast-packager -p mast-agent --bins)
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
fi
MAST="$BIN_DIR/mast"
AGENT="$BIN_DIR/mast-agent"
for bin in "$MAST" "$AGENT"; do
    [ -x "$bin" ] || die "not an executable: $bin"
done
echo "mast:       $MAST ($("$MAST" --version))"
echo "mast-agent: $AGENT ($("$AGENT" --version))"
echo "work dir:   $WORK (referred to as \$DEMO below)"
if [ -n "${KUBECONFIG:-}" ]; then
    echo "note:       KUBECONFIG is set; this demo still applies to a directory with the dir: applier and"
    echo "            leaves your cluster alone (applier = \"kube\" applies with server-side apply)."
fi

# --- 2. keys and repository -----------------------------------------------------------------------------
step "Throw-away keys and a new TUF repository (release engineer)"
mkdir -p "$WORK/keys"
for role in root targets snapshot timestamp; do
    "$MAST" keygen --out "$WORK/keys/$role.pem" >/dev/null
done
echo "keys: root, targets, snapshot, timestamp (ed25519, PKCS#8) in \$DEMO/keys"
show "$MAST" repo init "$WORK/repo" --root-key "$WORK/keys/root.pem" --targets-key "$WORK/keys/targets.pem" \
    --snapshot-key "$WORK/keys/snapshot.pem" --timestamp-key "$WORK/keys/timestamp.pem"

# --- 3. pack and release ----------------------------------------------------------------------------------
step "Pack examples/edge-gateway and release it on channel '$CHANNEL'"
# A copy, so that the edit of step 8 never touches the checkout.
cp -R "$EXAMPLE" "$WORK/manifests"
show "$MAST" pack "$WORK/manifests" --out "$WORK/bundle-1.tar"
show "$MAST" release "$WORK/repo" "$WORK/bundle-1.tar" --channel "$CHANNEL"

# --- 4. the mirror ------------------------------------------------------------------------------------------
step "Serve the repository on 127.0.0.1 (any static web server is a mirror)"
ACCESS_LOG="$LOG_DIR/access.log"
: >"$ACCESS_LOG"

# A port that nothing answers on now. Another process may still take it before the server binds: the
# caller retries with another.
pick_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
}

nginx_config() {
    local port="$1" dir="$WORK/nginx"
    mkdir -p "$dir/tmp"
    cat <<EOF
# Written by scripts/demo.sh. A mirror is static files: metadata revalidated on every poll, everything
# named by version or digest cacheable forever.
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
events { worker_connections 64; }
http {
    types { application/json json; application/gzip gz; }
    default_type application/octet-stream;
    log_format mast '\$request_method \$uri \$status \$body_bytes_sent';
    access_log $ACCESS_LOG mast;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    server_tokens off;
    map \$uri \$mast_cache_control {
        "~(^|/)[0-9]+\\.[^/]+\\.json\$" "public, max-age=31536000, immutable";
        "~(^|/)[0-9a-f]{64}(\\.[^/]+)?\$" "public, max-age=31536000, immutable";
        default "no-cache";
    }
    server {
        listen 127.0.0.1:$port;
        root $WORK/repo;
        add_header Cache-Control \$mast_cache_control;
        # The packager's private directory (.mast/) is never published; do not serve it either.
        location ~ /\\. { deny all; }
    }
}
EOF
}

# Starts the chosen server on a free port; sets SERVER_PID and MIRROR.
start_server() {
    local kind="$1" attempt port
    for attempt in 1 2 3 4 5; do
        port="$(pick_port)"
        case "$kind" in
            nginx)
                nginx_config "$port" >"$WORK/nginx.conf"
                "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" \
                    >"$LOG_DIR/server.out" 2>&1 &
                ;;
            python)
                # http.server logs each request to stderr: that is its access log.
                "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WORK/repo" "$port" \
                    >"$LOG_DIR/server.out" 2>"$ACCESS_LOG" &
                ;;
        esac
        SERVER_PID=$!
        local _
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                MIRROR="http://127.0.0.1:$port/"
                return 0
            fi
            sleep 0.1
        done
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        log "the $kind server did not come up on port $port (attempt $attempt of 5)"
    done
    cat "$LOG_DIR/server.out" "$WORK/nginx/error.log" 2>/dev/null >&2 || true
    die "could not start $kind on 127.0.0.1"
}

SERVER="${MAST_DEMO_SERVER:-}"
NGINX="$(find_tool /usr/sbin/nginx nginx || true)"
case "$SERVER" in
    nginx | python) ;;
    "")
        if [ -n "$NGINX" ]; then
            SERVER=nginx
        elif command -v apt-get >/dev/null 2>&1 &&
            { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
            apt_install nginx
            SERVER=nginx
        else
            log "nginx is not installed and cannot be installed here: using python3's http.server"
            SERVER=python
        fi
        ;;
    *) die "MAST_DEMO_SERVER must be nginx or python, not '$SERVER'" ;;
esac
if [ "$SERVER" = nginx ]; then
    NGINX="${NGINX:-$(find_tool /usr/sbin/nginx nginx || true)}"
    [ -n "$NGINX" ] || die "MAST_DEMO_SERVER=nginx, but nginx is not installed"
else
    PYTHON="$(find_tool python3)" || die "python3 not found for http.server (or install nginx)"
fi
start_server "$SERVER"
echo "mirror: $MIRROR ($SERVER, pid $SERVER_PID, serving \$DEMO/repo)"

# The requests in the access log, one a line (http.server also logs lines that are not requests).
requests() { grep -E '(^|")(GET|HEAD) ' "$ACCESS_LOG" || true; }
log_lines() { requests | wc -l; }
# Requests after the first $1 whose path contains $2.
requests_since() {
    requests | tail -n "+$(($1 + 1))" | grep -c -- "$2" || true
}
# The requests after the first $1, indented.
show_requests() {
    requests | tail -n "+$(($1 + 1))" | sed 's/^/    /'
}

# --- 5. the site ------------------------------------------------------------------------------------------
step "A site: its config, its trusted root, its first pass"
mkdir -p "$WORK/site"
# The root a site is provisioned with; every later root it learns from the mirror, signed by this one.
cp "$WORK/repo/metadata/1.root.json" "$WORK/site/root.json"
cat >"$WORK/site/agent.toml" <<EOF
# A site's /etc/mast/agent.toml (every key: deploy/systemd/agent.toml.example). Relative paths are
# relative to this file.
cluster_id = "tower-0042"
channel = "$CHANNEL"
mirrors = ["$MIRROR"]
root = "root.json"
state = "state/state.db"
applier = "dir:manifests"
EOF
echo "\$DEMO/site/agent.toml:"
sed 's/^/    /' "$WORK/site/agent.toml"
agent() { "$AGENT" --config "$WORK/site/agent.toml" "$@"; }
before="$(log_lines)"
show "$AGENT" --config "$WORK/site/agent.toml" once
echo "applied files in \$DEMO/site/manifests:"
(cd "$WORK/site/manifests" && find . -type f ! -name '.*' | sort | sed 's|^\./|    |')
echo "mirror: $(requests_since "$before" /chunks/) chunk requests for release 1"

# --- 6. idle ----------------------------------------------------------------------------------------------
step "Nothing new: an idle pass costs a metadata poll, no content"
before="$(log_lines)"
show "$AGENT" --config "$WORK/site/agent.toml" once
echo "mirror: $(($(log_lines) - before)) requests, $(requests_since "$before" /chunks/) for chunks:"
show_requests "$before"

# --- 7. change one manifest ---------------------------------------------------------------------------------
step "Change one manifest (the gateway's image 1.4.2 -> 1.4.3) and release again"
deployment="$WORK/manifests/30-deployment.yaml"
grep -q 'gateway:1.4.2' "$deployment" || die "$deployment does not have the image this demo edits"
sed -i 's/gateway:1\.4\.2/gateway:1.4.3/; s/version: "1\.4\.2"/version: "1.4.3"/' "$deployment"
diff -u "$EXAMPLE/30-deployment.yaml" "$deployment" | sed -n '3,$p' | grep '^[-+]' | sed 's/^/    /' || true
show "$MAST" pack "$WORK/manifests" --out "$WORK/bundle-2.tar"
show "$MAST" release "$WORK/repo" "$WORK/bundle-2.tar" --channel "$CHANNEL"
CHUNKS_TOTAL="$(find "$WORK/repo/chunks" -type f | wc -l)"

# --- 8. second pass ---------------------------------------------------------------------------------------
step "The site's second pass fetches only what changed"
before="$(log_lines)"
show "$AGENT" --config "$WORK/site/agent.toml" once
CHUNK_REQUESTS="$(requests_since "$before" /chunks/)"
echo "mirror: $CHUNK_REQUESTS chunk requests for release 2 ($CHUNKS_TOTAL chunks on the mirror for both releases); the log:"
show_requests "$before"
cmp -s "$deployment" "$WORK/site/manifests/30-deployment.yaml" ||
    die "the site's 30-deployment.yaml is not the released one"
echo "site:   30-deployment.yaml now runs image $(grep -o 'gateway:[0-9.]*' "$WORK/site/manifests/30-deployment.yaml")"

# --- 9. status --------------------------------------------------------------------------------------------
step "What the site runs, from its state database alone (works offline)"
show "$AGENT" --config "$WORK/site/agent.toml" status
agent status --output json >"$WORK/status.json"

printf '\ndemo: done. The site runs release 2; the second release cost %s chunk request(s).\n' "$CHUNK_REQUESTS"
