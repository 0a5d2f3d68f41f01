#!/bin/sh
# aftercall-asterisk-entrypoint: writes the AMI secret Asterisk includes, prepares the runtime
# directories, then execs the command (Asterisk in the foreground).
#
# The secret comes from AMI_SECRET_FILE (default /run/secrets/ami_secret, a compose secret) or,
# failing that, from AMI_SECRET. It is never printed. ASTERISK_ROOT prefixes every path (tests).
set -eu

root="${ASTERISK_ROOT:-}"
etc="$root/etc/asterisk"
secret_file="${AMI_SECRET_FILE:-/run/secrets/ami_secret}"

die() { echo "aftercall-asterisk-entrypoint: $*" >&2; exit 64; }

if [ -r "$secret_file" ]; then
    secret="$(head -n 1 "$secret_file" | tr -d '\r')"
    origin="$secret_file"
elif [ -n "${AMI_SECRET:-}" ]; then
    secret="$AMI_SECRET"
    origin="AMI_SECRET"
else
    die "no AMI secret: create docker/secrets/ami_secret (see docker/secrets/README.md), or set AMI_SECRET"
fi
unset AMI_SECRET

# Asterisk's config parser ends a value at ';' and trims blanks, so such a secret would silently
# differ from the one the agent sends.
case "$secret" in
    "") die "the AMI secret in $origin is empty" ;;
    *[\;[:space:]]*) die "the AMI secret in $origin contains ';' or whitespace, which Asterisk's config parser would cut; use letters, digits, '-' and '_'" ;;
esac

owner=""
if id asterisk >/dev/null 2>&1; then owner="asterisk"; fi

umask 027
printf 'secret = %s\n' "$secret" > "$etc/aftercall_secret.conf"
unset secret
if [ -n "$owner" ] && [ "$(id -u)" = 0 ]; then
    chown "root:$owner" "$etc/aftercall_secret.conf"
fi
chmod 0640 "$etc/aftercall_secret.conf"

# /run is empty in a new container; the rest may be fresh named volumes.
umask 022
for d in run/asterisk var/lib/asterisk var/spool/asterisk var/log/asterisk \
         var/log/asterisk/cdr-csv var/cache/asterisk; do
    mkdir -p "$root/$d"
    if [ -n "$owner" ] && [ "$(id -u)" = 0 ]; then chown "$owner:$owner" "$root/$d"; fi
done

exec "$@"
