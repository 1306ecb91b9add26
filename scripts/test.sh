#!/usr/bin/env bash
# The test command for mast. On a fresh Debian 12 machine it first installs what the suite needs and is
# missing (nginx, docker-registry, skopeo from apt; python-tuf into ./.venv), then runs every test of the
# workspace with the tools required: a test that needs a missing tool fails here, it never skips.
#
# Usage: scripts/test.sh [extra args for the test runner, e.g. a test name filter]
# See scripts/README.md for the environment variables it reads and exports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOG_DIR="$ROOT/.tmp/test-logs"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/scripts/requirements-test.txt"
START_SECONDS=$SECONDS

# log, die, as_root, find_tool, apt_install and restore_policy_rc.
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
trap restore_policy_rc EXIT

# --- apt packages -------------------------------------------------------------------------------------

# Looks every tool up, honouring MAST_TEST_* set by the caller; prints the apt packages still needed.
locate_tools() {
    NGINX="${MAST_TEST_NGINX:-$(find_tool /usr/sbin/nginx nginx || true)}"
    REGISTRY="${MAST_TEST_REGISTRY:-$(find_tool /usr/bin/docker-registry docker-registry || true)}"
    SKOPEO="${MAST_TEST_SKOPEO:-$(find_tool /usr/bin/skopeo skopeo || true)}"
    MISSING_PACKAGES=()
    [ -n "$NGINX" ] || MISSING_PACKAGES+=(nginx)
    [ -n "$REGISTRY" ] || MISSING_PACKAGES+=(docker-registry)
    [ -n "$SKOPEO" ] || MISSING_PACKAGES+=(skopeo)
}

install_tools() {
    locate_tools
    if [ "${#MISSING_PACKAGES[@]}" -gt 0 ]; then
        apt_install "${MISSING_PACKAGES[@]}"
        locate_tools
        [ "${#MISSING_PACKAGES[@]}" -eq 0 ] || die "still missing after apt-get: ${MISSING_PACKAGES[*]}"
    fi
    local tool
    for tool in "$NGINX" "$REGISTRY" "$SKOPEO"; do
        [ -x "$tool" ] || die "not an executable: $tool"
    done
    # The publisher tests PUT into nginx: Debian's nginx has the dav module built in, but not every build does.
    "$NGINX" -V 2>&1 | grep -q -- '--with-http_dav_module' || die "$NGINX was built without http_dav_module"
}

# --- python-tuf in ./.venv ----------------------------------------------------------------------------

# Prints a Python (3.10 or newer: securesystemslib's floor) to create the venv with.
bootstrap_python() {
    local candidate path
    for candidate in "${MAST_BOOTSTRAP_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        path="$(find_tool "$candidate")" || continue
        if "$path" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            printf '%s\n' "$path"
            return 0
        fi
    done
    return 1
}

install_venv() {
    local python stamp want
    mkdir -p "$LOG_DIR"
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        python="$(bootstrap_python)" || die "no python3 >= 3.10 found to create $VENV"
        log "creating $VENV with $python"
        rm -rf "$VENV"
        if ! "$python" -m venv "$VENV" >"$LOG_DIR/venv.log" 2>&1; then
            # Debian's own python3 ships venv's ensurepip in a separate package.
            if [ "$python" = /usr/bin/python3 ] || [ "${python#/usr/bin/python3.}" != "$python" ]; then
                apt_install "python3-venv"
                rm -rf "$VENV"
                "$python" -m venv "$VENV" >"$LOG_DIR/venv.log" 2>&1 || die "venv failed: $(cat "$LOG_DIR/venv.log")"
            else
                die "venv failed: $(cat "$LOG_DIR/venv.log")"
            fi
        fi
    fi
    # Reinstall only when the pins changed: the stamp is the hash of the requirements file last installed.
    stamp="$VENV/.mast-requirements.sha256"
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        log "installing python packages from ${REQUIREMENTS#"$ROOT"/}"
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --require-virtualenv \
            --prefer-binary -q -r "$REQUIREMENTS" >"$LOG_DIR/pip.log" 2>&1; then
            tail -n 30 "$LOG_DIR/pip.log" >&2
            die "pip install failed (full log: $LOG_DIR/pip.log)"
        fi
        printf '%s\n' "$want" >"$stamp"
    fi
    local tuf_pin
    tuf_pin="$(sed -n 's/^tuf==\([^ ;]*\).*/\1/p' "$REQUIREMENTS")"
    MAST_TUF_PIN="$tuf_pin" "$VENV/bin/python" - <<'EOF' || die "python-tuf in $VENV does not work"
import os

from securesystemslib.signer import CryptoSigner
import tuf
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

assert tuf.__version__ == os.environ["MAST_TUF_PIN"], (tuf.__version__, os.environ["MAST_TUF_PIN"])
CryptoSigner.generate_ed25519()
EOF
}

# --- the suite ----------------------------------------------------------------------------------------

# Sums "N passed / N failed / N skipped|ignored" over the runners' own closing lines.
count() {
    local word="$1" file="$2"
    { grep -ahoE "[0-9]+ $word" "$file" || true; } | awk '{ n += $1 } END { print n + 0 }'
}

run_suite() {
    mkdir -p "$LOG_DIR"
    local tests_log="$LOG_DIR/tests.log" doc_log="$LOG_DIR/doctests.log" counts="$LOG_DIR/counts.txt"
    local runner="${MAST_TEST_RUNNER:-}" status=0
    if [ -z "$runner" ]; then
        if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
    fi
    # Without arguments: every target of every member. With arguments, they alone choose what runs (a
    # filter, `-p crate`, `--test name`: each conflicts with or widens under --workspace --all-targets).
    local -a scope=()
    [ "$#" -gt 0 ] || scope=(--workspace --all-targets)
    log "running the tests with $runner ${*:-(the whole workspace)} (log: ${tests_log#"$ROOT"/})"
    : >"$counts"
    case "$runner" in
        nextest)
            # One process per test, and a per-test time limit from scripts/nextest.toml (a repository
            # .config/nextest.toml, if one appears, takes precedence over it).
            cargo nextest run "${scope[@]}" --no-fail-fast \
                --tool-config-file "mast-test:$ROOT/scripts/nextest.toml" "$@" 2>&1 | tee "$tests_log" ||
                status=1
            { grep -aE '^ *Summary \[' "$tests_log" || true; } | tail -n 1 | sed 's/ skipped/ ignored/' >>"$counts"
            ;;
        cargo)
            cargo test "${scope[@]}" --no-fail-fast "$@" 2>&1 | tee "$tests_log" || status=1
            { grep -aE '^test result:' "$tests_log" || true; } >>"$counts"
            ;;
        *) die "MAST_TEST_RUNNER must be nextest or cargo, not '$runner'" ;;
    esac
    # Doc tests: nextest cannot run them. A filtered run (arguments given) is about one test: skip them.
    if [ "$#" -eq 0 ]; then
        log "running doc tests (log: ${doc_log#"$ROOT"/})"
        cargo test --workspace --doc --no-fail-fast 2>&1 | tee "$doc_log" || status=1
        { grep -aE '^test result:' "$doc_log" || true; } >>"$counts"
    fi

    local passed failed ignored
    passed=$(count passed "$counts")
    failed=$(($(count failed "$counts") + $(count 'timed out' "$counts")))
    ignored=$(count ignored "$counts")
    echo
    echo "tools:   nginx=$MAST_TEST_NGINX registry=$MAST_TEST_REGISTRY skopeo=$MAST_TEST_SKOPEO"
    echo "python:  $MAST_TEST_PYTHON ($("$MAST_TEST_PYTHON" -c 'import sys, tuf; print("Python", sys.version.split()[0], "tuf", tuf.__version__)'))"
    echo "runner:  $runner$([ "$#" -eq 0 ] && echo ' + doc tests'); setup ${SETUP_SECONDS}s, total $((SECONDS - START_SECONDS))s"
    [ "$status" -eq 0 ] || echo "result:  FAILED (logs in ${LOG_DIR#"$ROOT"/})"
    # The closing line, in the plain form every reader of test output understands.
    echo "summary: $passed passed, $failed failed, $ignored skipped"
    return "$status"
}

install_tools
install_venv
SETUP_SECONDS=$((SECONDS - START_SECONDS))
export MAST_TEST_NGINX="$NGINX"
export MAST_TEST_REGISTRY="$REGISTRY"
export MAST_TEST_SKOPEO="$SKOPEO"
export MAST_TEST_PYTHON="$VENV/bin/python"
export MAST_TEST_REQUIRE_TOOLS=1
run_suite "$@"
