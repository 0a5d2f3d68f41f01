#!/bin/sh
# aftercall-entrypoint: turns compose secret files into what aftercall reads, then execs the
# command. The image runs it as the unprivileged `aftercall` user (USER 10001:10001).
#
#   SMPP_PASSWORD_FILE, KANNEL_USER_FILE, KANNEL_PASSWORD_FILE, AFTERCALL_SIM_PASSWORD_FILE
#       -> the variable without _FILE (rules.yaml's ${SMPP_PASSWORD}, the simulator's password)
#   AFTERCALL_AMI_SECRET_FILE
#       -> read by aftercall itself; started as root, a private copy for the aftercall user
#
# Compose's file secrets are bind mounts that keep the host file's owner and mode (Compose v1
# ignores a secret's uid/gid/mode), so as uid 10001 they must be readable by uid or gid 10001.
# Started as root instead (`user: "0"`, for 0600 files you cannot hand over), it copies the AMI
# secret for the aftercall user and drops to it. Secret values are never printed.
# AFTERCALL_RUN_AS (default aftercall; empty: stay as is) and AFTERCALL_RUNTIME_DIR (default
# /run/aftercall) exist for tests and custom images.
set -eu

die() { echo "aftercall-entrypoint: $*" >&2; exit 64; }

# unreadable NAME PATH: the error for a secret file this process cannot read.
unreadable() {
    if [ -e "$2" ] && ! $is_root; then
        die "$1=$2 is not readable by uid $(id -u) (gid $(id -g)): a compose file secret keeps" \
            "its host owner and mode; make it readable by that uid or gid (see" \
            "docker/secrets/README.md) or run the service as user \"0\""
    fi
    die "$1=$2 is not a readable file"
}

run_as="${AFTERCALL_RUN_AS-aftercall}"
runtime_dir="${AFTERCALL_RUNTIME_DIR:-/run/aftercall}"
is_root=false
if [ "$(id -u)" = 0 ]; then is_root=true; fi

# file_env NAME: if NAME_FILE is set, export NAME with the file's first line.
file_env() {
    eval "path=\${${1}_FILE:-}"
    [ -n "$path" ] || return 0
    [ -r "$path" ] || unreadable "${1}_FILE" "$path"
    value="$(head -n 1 "$path" | tr -d '\r')"
    [ -n "$value" ] || die "${1}_FILE=$path is empty"
    export "$1=$value"
    unset "${1}_FILE" value
}

for name in SMPP_PASSWORD KANNEL_USER KANNEL_PASSWORD AFTERCALL_SIM_PASSWORD; do
    file_env "$name"
done

drop=false
if $is_root && [ -n "$run_as" ]; then
    drop=true
    group="$(id -gn "$run_as")" || die "no user $run_as in this image"
fi

if [ -n "${AFTERCALL_AMI_SECRET_FILE:-}" ]; then
    src="$AFTERCALL_AMI_SECRET_FILE"
    [ -r "$src" ] || unreadable AFTERCALL_AMI_SECRET_FILE "$src"
    if $drop; then
        install -d -m 0700 -o "$run_as" -g "$group" "$runtime_dir"
        install -m 0400 -o "$run_as" -g "$group" "$src" "$runtime_dir/ami_secret"
        export AFTERCALL_AMI_SECRET_FILE="$runtime_dir/ami_secret"
    fi
fi

if $drop; then
    # Fresh named volumes are created from the image and already belong to the user; a bind
    # mount from the host may not.
    data_dir="$(dirname "${AFTERCALL_DB:-/var/lib/aftercall/aftercall.db}")"
    if [ -d "$data_dir" ]; then chown "$run_as:$group" "$data_dir"; fi
    exec setpriv --reuid="$run_as" --regid="$group" --init-groups -- "$@"
fi
exec "$@"
