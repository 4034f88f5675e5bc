#!/bin/sh
# Install shelfd as a systemd service from the packaged one-file binary: the server needs
# neither Python nor the source tree.
#
#   sh install-service.sh [BINARY]        (as root)
#
# The files it installs are looked up beside this script (the layout of the
# dist/shelfd-service.tar.gz that `make dist` writes: shelfd, install-service.sh,
# shelfd.service, shelfd.ini, shelfd.logrotate). BINARY defaults to the shelfd beside
# this script, then to dist/shelfd when run from the source tree.
# Installs: /usr/local/bin/shelfd, /etc/systemd/system/shelfd.service,
# /etc/shelf/shelfd.ini (an existing one is kept), the system user "shelf" and /srv/shelf.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "install-service.sh: $*" >&2; exit 1; }
first_file() { for candidate in "$@"; do [ -f "$candidate" ] && { echo "$candidate"; return 0; }; done; return 1; }

[ "$(id -u)" = 0 ] || die "run me as root"
binary=${1:-$(first_file "$here/shelfd" "$here/../../dist/shelfd" || echo "$here/shelfd")}
[ -f "$binary" ] && [ -x "$binary" ] || die "no executable at $binary (make dist builds dist/shelfd)"
unit=$(first_file "$here/shelfd.service") || die "shelfd.service is not beside $0"
ini=$(first_file "$here/shelfd.ini") || die "shelfd.ini is not beside $0"
# The packaged binary carries its own Python but needs the system's C library: say so
# here rather than in a failing service.
version=$("$binary" --version 2>&1) || die "$binary does not run on this system: $version"

install -m 0755 "$binary" /usr/local/bin/shelfd
install -m 0644 "$unit" /etc/systemd/system/shelfd.service
mkdir -p /etc/shelf
if [ -e /etc/shelf/shelfd.ini ]; then
    echo "kept /etc/shelf/shelfd.ini (the new template is $ini)"
else
    install -m 0644 "$ini" /etc/shelf/shelfd.ini
fi
id shelf >/dev/null 2>&1 ||
    useradd --system --user-group --home-dir /srv/shelf --no-create-home \
            --shell /usr/sbin/nologin shelf
mkdir -p /srv/shelf
chown shelf:shelf /srv/shelf
# The accounts file, readable by the service only; `shelfd user add` keeps its owner.
[ -e /etc/shelf/users ] || install -m 0600 -o shelf -g shelf /dev/null /etc/shelf/users
echo "installed $version as /usr/local/bin/shelfd; settings in /etc/shelf/shelfd.ini"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet shelfd; then
        echo "shelfd is running the old binary: systemctl restart shelfd"
    else
        echo "start it now and at boot: systemctl enable --now shelfd"
    fi
else
    echo "systemd is not running here: skipped daemon-reload; after boot: systemctl enable --now shelfd"
fi
