#!/bin/sh
# Install shelfd as a systemd service: binary, unit, config, user and library folder.
# Usage (as root): sh packaging/systemd/install-service.sh dist/shelfd
set -eu
binary=${1:-dist/shelfd}
here=$(dirname "$0")
[ -x "$binary" ] || { echo "no executable at $binary (run make dist first)" >&2; exit 1; }
install -m 0755 "$binary" /usr/local/bin/shelfd
install -m 0644 "$here/shelfd.service" /etc/systemd/system/shelfd.service
mkdir -p /etc/shelf
[ -e /etc/shelf/shelfd.ini ] || printf '[shelfd]\nmax_clients = 64\nidle_timeout = 300\n' > /etc/shelf/shelfd.ini
id shelf >/dev/null 2>&1 || useradd --system --home-dir /srv/shelf --shell /usr/sbin/nologin shelf
mkdir -p /srv/shelf && chown shelf:shelf /srv/shelf
systemctl daemon-reload
echo "installed: systemctl enable --now shelfd"
