#!/usr/bin/env bash
# Proves that `.ci/services.sh` sets up everything the tests need on a fresh Debian machine with
# only Rust and Python: a debootstrap of Debian 12 (minbase, plus python3, and gcc for Rust to
# link with), in a network namespace of its own (so that its servers do not meet this
# machine's on the same ports) with NAT to the package registries. It runs services.sh there,
# then checks each service the way the tests reach it. Needs root, debootstrap, iproute2 and
# iptables; takes about 15 minutes (smongo is built from its sdist). Not part of CI: it changes
# this machine's forwarding and NAT while it runs, and puts them back.
#
#   bash xtask/scripts/fresh-machine.sh [WORKDIR]     (default /var/tmp/hepdb-fresh-machine)
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${1:-/var/tmp/hepdb-fresh-machine}"
ROOT="$WORK/root"
NS=hepdb-fresh
SUBNET=10.213.0

cleanup() {
  # Ending the namespace's first process ends every server in it.
  [ -f "$WORK/init.pid" ] && kill -9 "$(cat "$WORK/init.pid")" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ip link del veth-hepdb 2>/dev/null || true
  iptables -t nat -D POSTROUTING -s "$SUBNET.0/24" -j MASQUERADE 2>/dev/null || true
  [ -n "${FORWARD_WAS:-}" ] && sysctl -q net.ipv4.ip_forward="$FORWARD_WAS" || true
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK"
echo "fresh-machine: debootstrap of Debian 12 into $ROOT"
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$ROOT" \
  http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1
# What the machine around it needs to reach the registries (an egress CA, pip's settings), and
# a linker for Rust: not what services.sh is being tested on.
cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n' "$(hostname)" >"$ROOT/etc/hosts"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev >/dev/null
mkdir -p "$ROOT/src/.ci" "$ROOT/src/xtask" "$ROOT/root/.cargo" "$ROOT/root/.rustup"
cp "$HERE/.ci/services.sh" "$ROOT/src/.ci/"
cp -r "$HERE/xtask/scripts" "$ROOT/src/xtask/"

ip netns add "$NS"
ip link add veth-hepdb type veth peer name veth-inside
ip link set veth-inside netns "$NS"
ip addr add "$SUBNET.1/24" dev veth-hepdb && ip link set veth-hepdb up
ip netns exec "$NS" ip addr add "$SUBNET.2/24" dev veth-inside
ip netns exec "$NS" ip link set veth-inside up
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip route add default via "$SUBNET.1"
FORWARD_WAS="$(sysctl -n net.ipv4.ip_forward)"
sysctl -q net.ipv4.ip_forward=1
iptables -t nat -A POSTROUTING -s "$SUBNET.0/24" -j MASQUERADE

# The namespace's first process mounts what a booted machine has, runs services.sh, then the
# checks, and stays (with the servers) until this script ends it.
cat >"$WORK/inside.sh" <<'EOF'
set -e
R="$1"
mount --bind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# "Rust": this machine's toolchain.
mount --bind /root/.cargo "$R/root/.cargo"
mount --bind /root/.rustup "$R/root/.rustup"
chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  bash -c '
    set -e
    cd /src
    bash .ci/services.sh
    echo "fresh-machine: checking each service as the tests reach it"
    psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1" >/dev/null
    PGPASSWORD=hepdb-dev-root psql "host=127.0.0.1 port=5433 user=postgres dbname=postgres sslmode=verify-full sslrootcert=/var/tmp/hepdb-engines/tls/ca.crt" -Atc "SELECT 1" >/dev/null
    mariadb -h127.0.0.1 -uroot -e "SELECT 1" >/dev/null
    rabbitmq-diagnostics -q check_port_listener 5672 >/dev/null
    rabbitmq-diagnostics -q check_port_listener 5671 >/dev/null
    /var/tmp/hepdb-smongo/bin/python -c "
from pymongo import MongoClient
c = MongoClient(\"mongodb://root:hepdb-dev-root@127.0.0.1:27017/admin\", serverSelectionTimeoutMS=5000)
c.admin.command(\"ping\")"
    kubectl version --client >/dev/null
    /var/tmp/hepdb-kube-validate/bin/kubernetes-validate --version >/dev/null
    docker-compose version >/dev/null
    echo "fresh-machine: every service answers"
  '
echo "fresh-machine: rc=0"
exec sleep infinity
EOF
echo "fresh-machine: running .ci/services.sh inside (log: $WORK/inside.log)"
ip netns exec "$NS" unshare --mount --pid --fork bash "$WORK/inside.sh" "$ROOT" \
  >"$WORK/inside.log" 2>&1 &
for _ in $(seq 1 1800); do
  grep -q "fresh-machine: rc=0" "$WORK/inside.log" && break
  if ! ip netns pids "$NS" 2>/dev/null | grep -q .; then break; fi
  sleep 1
done
# The namespace's first process: the one whose parent is the unshare above.
pgrep -P "$!" >"$WORK/init.pid" || true
cat "$WORK/inside.log"
grep -q "fresh-machine: every service answers" "$WORK/inside.log"
