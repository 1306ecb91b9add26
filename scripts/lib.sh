# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/demo.sh: messages, running as root, finding tools, and
# installing Debian packages without starting their services. Source it; it runs nothing by itself.
#
# A caller sets LOG_DIR (where apt's log goes) before apt_install, and calls restore_policy_rc from its
# EXIT trap so that an interrupted install never leaves /usr/sbin/policy-rc.d behind.

# Messages go to stderr, prefixed with the script's name.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Prints the first candidate that is an executable: absolute paths as they are, bare names on PATH.
find_tool() {
    local candidate found
    for candidate in "$@"; do
        case "$candidate" in
            /*) if [ -x "$candidate" ]; then
                printf '%s\n' "$candidate"
                return 0
            fi ;;
            *) if found="$(type -P "$candidate")"; then
                printf '%s\n' "$found"
                return 0
            fi ;;
        esac
    done
    return 1
}

# --- apt packages -------------------------------------------------------------------------------------

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
# Removes the policy-rc.d that apt_install wrote, if it wrote one.
restore_policy_rc() {
    if [ "$POLICY_RC_OURS" -eq 1 ]; then
        as_root rm -f "$POLICY_RC" || log "warning: could not remove $POLICY_RC"
    fi
}

# Installs Debian packages without starting their services: the suite runs its own nginx and registry on
# 127.0.0.1 ephemeral ports, and a system nginx on port 80 or a registry on 5000 must not appear as a
# side effect. policy-rc.d (exit 101 = "action forbidden") is honoured by invoke-rc.d and
# deb-systemd-invoke, which is what the packages' maintainer scripts use to start services.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing packages ($*) and no apt-get to install them"
    mkdir -p "$LOG_DIR"
    if [ ! -e "$POLICY_RC" ]; then
        printf '#!/bin/sh\n# Written by mast scripts/%s while it installs packages: start no service.\nexit 101\n' \
            "${0##*/}" | as_root tee "$POLICY_RC" >/dev/null
        as_root chmod 0755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    log "installing with apt: $*"
    local apt_log="$LOG_DIR/apt.log"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 ||
        ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Use-Pty=0 "$@" >>"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        die "apt-get failed (full log: $apt_log)"
    fi
    restore_policy_rc
    POLICY_RC_OURS=0
    # Where systemd runs, the units were still enabled for the next boot: undo that for what we installed.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        local package
        for package in "$@"; do
            as_root systemctl disable --now "$package.service" >/dev/null 2>&1 || true
        done
    fi
}
