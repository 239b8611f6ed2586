#!/usr/bin/env bash
# Builds the Debian package of kassa with dpkg-deb (no cargo-deb, no root needed).
#
#   cargo build --profile dist && packaging/build-deb.sh [--binary PATH] [--out FILE]
#
# --binary  the kassa binary to package (default: target/dist/kassa, from the command above)
# --out     the .deb to write (default: target/dist/kassa_<version>_<arch>.deb)
# The version is Cargo.toml's, the architecture dpkg's. Prints the path of the package last.
set -euo pipefail

usage() {
  sed -n '2,8s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="$repo/target/dist/kassa"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --binary=*) binary="${1#*=}"; shift ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) echo "build-deb.sh: unknown argument: $1" >&2; usage ;;
  esac
done

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  echo "build-deb.sh: no kassa binary at $binary; build it with: cargo build --profile dist" >&2
  exit 1
fi
for tool in dpkg-deb dpkg; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build-deb.sh: $tool is missing" >&2; exit 1; }
done

# The first `version = "..."` of Cargo.toml's [package] section.
version="$(awk '
  /^\[/ { in_package = ($0 == "[package]") }
  in_package && /^version[[:space:]]*=/ {
    sub(/^version[[:space:]]*=[[:space:]]*"/, ""); sub(/".*/, ""); print; exit
  }' "$repo/Cargo.toml")"
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "build-deb.sh: cannot read the version from $repo/Cargo.toml (got \"$version\")" >&2
  exit 1
fi
arch="$(dpkg --print-architecture)"

if [ -z "$out" ]; then
  out="$repo/target/dist/kassa_${version}_${arch}.deb"
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

stage="$(mktemp -d "${TMPDIR:-/tmp}/kassa-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
umask 022
chmod 0755 "$stage"

install -D -m 0755 "$binary" "$stage/usr/bin/kassa"
install -D -m 0644 "$repo/packaging/kassa.service" "$stage/lib/systemd/system/kassa.service"
install -D -m 0644 "$repo/packaging/kassa.toml" "$stage/etc/kassa/kassa.toml"
install -d -m 0700 "$stage/etc/kassa/credentials"
install -D -m 0644 "$repo/packaging/README.md" "$stage/usr/share/doc/kassa/README.md"
install -d -m 0755 "$stage/DEBIAN"

installed_size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat >"$stage/DEBIAN/control" <<EOF
Package: kassa
Version: $version
Architecture: $arch
Maintainer: kassa developers
Installed-Size: $installed_size
Depends: libc6
Section: net
Priority: optional
Description: card payments through Korean PGs, refunded exactly once
 One binary that takes card payments through PortOne, Toss Payments and
 Payple, refunds them exactly once and settles every day. It runs as the
 hardened systemd service kassa.service, configured in /etc/kassa/kassa.toml
 with secrets in /etc/kassa/credentials/, and keeps its data in
 /var/lib/kassa. As installed it serves the built-in sandbox PG on
 127.0.0.1:8080.
EOF
echo "/etc/kassa/kassa.toml" >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Enables and starts kassa on a first install (the shipped config is the sandbox PG on
# loopback, so it runs with no PG account); after an upgrade, starts it again if it is enabled.
set -e
if [ "$1" = "configure" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ -z "$2" ]; then
    systemctl enable --now kassa.service ||
      echo "kassa: the service did not start; see: journalctl -u kassa" >&2
  elif systemctl is-enabled --quiet kassa.service; then
    systemctl restart kassa.service ||
      echo "kassa: the service did not start; see: journalctl -u kassa" >&2
  fi
fi
exit 0
EOF

cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Stops kassa before its files are removed or replaced (SIGTERM: in-flight refunds finish).
set -e
case "$1" in
  remove|upgrade|deconfigure)
    if [ -d /run/systemd/system ]; then
      systemctl stop kassa.service || true
    fi
    ;;
esac
exit 0
EOF

cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# Removes nothing under /var/lib, not even on purge: /var/lib/private/kassa holds the payment
# records (and the generated admin token), and /etc/kassa/credentials/ the operator's secrets.
# Delete them by hand if that is really meant.
set -e
case "$1" in
  remove|purge)
    if [ "$1" = "purge" ]; then
      rm -f "${DPKG_ROOT:-}/etc/systemd/system/multi-user.target.wants/kassa.service"
      echo "kassa: purged; the data in /var/lib/private/kassa and any secrets in /etc/kassa/credentials are kept" >&2
    fi
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload || true
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"

dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
