#!/bin/sh
# Build the pristine Debian bookworm root file system the testbed boots (systemd-nspawn + overlayfs).
# Usage: mkrootfs.sh DEST [MIRROR]
# The package list lives in this file; testbed::rootfs() keys its cache on this file's sha256, so
# any change here rebuilds the cache. Needs root and mmdebstrap.
set -eu
DEST=$1
MIRROR=${2:-http://deb.debian.org/debian}
# faketime: the clock-jump tests run the helper under libfaketime (the container shares the
# host's clock, which the tests must not set). strace: the security tests check that the helper
# reaches nothing below the server's directories by a path (tests/security_e2e.rs). postgresql:
# a real PostgreSQL as a real Stalwart's data store (tests/real_crossing.rs); mariadb-server: the
# same for MariaDB (benches/downtime's row); neither started at boot.
PACKAGES=systemd,systemd-sysv,dbus,libpam-systemd,python3,apt-utils,unattended-upgrades,iproute2,ca-certificates,rpm,dnf,dnf-plugins-core,curl,procps,faketime,strace,postgresql,mariadb-server

command -v mmdebstrap >/dev/null || {
    echo "mmdebstrap is missing: apt-get install -y --no-install-recommends mmdebstrap systemd-container" >&2
    exit 1
}

mmdebstrap --quiet --variant=minbase --include="$PACKAGES" --components=main bookworm "$DEST" "$MIRROR"

# A fresh machine-id per boot (nspawn fills an empty file); the hostname comes from --hostname.
: > "$DEST/etc/machine-id"
rm -f "$DEST/etc/hostname"

# PostgreSQL and MariaDB only where a test starts them (`systemctl start postgresql|mariadb`).
rm -f "$DEST/etc/systemd/system/multi-user.target.wants/postgresql.service" \
      "$DEST/etc/systemd/system/multi-user.target.wants/mariadb.service"

# Units that need the network or a clock, or that would race the tests: masked.
for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer dnf-makecache.timer \
         dnf-makecache.service e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
         systemd-networkd-wait-online.service getty@tty1.service console-getty.service; do
    ln -sf /dev/null "$DEST/etc/systemd/system/$u"
done

# rpm on Debian defaults to ~/.rpmdb; the packaging tests need the system database.
mkdir -p "$DEST/etc/rpm" "$DEST/var/lib/rpm"
echo '%_dbpath /var/lib/rpm' >> "$DEST/etc/rpm/macros"

# dnf-plugins-core brings the versionlock plugin (the helper's dnf hold) but also enables the
# `local` plugin, which mirrors every installed rpm into a gpg-checked _dnf_local repository.
sed -i 's/^enabled *=.*/enabled = 0/' "$DEST/etc/dnf/plugins/local.conf"

# No network inside (--private-network): apt must not try the Debian mirror.
rm -f "$DEST/etc/apt/sources.list" "$DEST/etc/apt/sources.list.d/"*.list "$DEST/etc/apt/sources.list.d/"*.sources 2>/dev/null || true
apt_lists="$DEST/var/lib/apt/lists"
[ -d "$apt_lists" ] && find "$apt_lists" -maxdepth 1 -type f ! -name lock -delete || true
