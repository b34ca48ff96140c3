#!/usr/bin/env bash
# Starts each local service the tests need unless it is already answering, then waits until all
# answer. Safe to run any number of times.
# - the machine's PostgreSQL (metadata, 5432), MariaDB (engine, 3306) and RabbitMQ (5672);
# - a tenant PostgreSQL engine of its own (5433): initdb into $ENGINES/postgres, scram-sha-256
#   for every TCP login, superuser postgres / hepdb-dev-root; never the metadata server;
# - a MongoDB engine (27017): the smongo stand-in (no mongod can be installed here), root /
#   hepdb-dev-root, installed from PyPI into a virtualenv on first use.
set -euo pipefail

# One run at a time: two would make certificates over each other and restart servers twice.
# `flock -o`: the servers this script starts must not inherit the lock, or they would hold it
# for as long as they run.
if [ -z "${HEPDB_SERVICES_LOCKED:-}" ]; then
  HEPDB_SERVICES_LOCKED=1 exec flock -o /tmp/hepdb-services.run.lock bash "$0" "$@"
fi

ENGINES="${HEPDB_ENGINES_DIR:-/var/tmp/hepdb-engines}"
ROOT_PW=hepdb-dev-root
HERE="$(cd "$(dirname "$0")/.." && pwd)"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
  for _ in $(seq 1 "$3"); do up "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2
  return 1
}

# On a fresh Debian machine, the three servers come from Debian's packages first, set up the
# way the built-in defaults expect (development only): PostgreSQL trusting local TCP logins,
# MariaDB's root reachable over TCP without a password.
install_pkg() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null; }
}
# A virtualenv (Debian's Python refuses `pip install` outside one, PEP 668); `venv` itself
# needs Debian's python3-venv.
python_venv() { # dir [venv options]
  python3 -m venv "$@" >/dev/null 2>&1 \
    || { rm -rf "$1"; install_pkg python3-venv; python3 -m venv "$@"; }
}
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "services: installing PostgreSQL (Debian's package)"
  install_pkg postgresql
  cluster="$(ls /etc/postgresql | head -1)"
  hba="/etc/postgresql/$cluster/main/pg_hba.conf"
  sed -i -E 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' "$hba"
  # The package may have started the cluster already: make it read the change.
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload >/dev/null 2>&1 || true
fi
if [ ! -x /usr/sbin/mariadbd ]; then
  echo "services: installing MariaDB (Debian's package)"
  install_pkg mariadb-server
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "services: installing RabbitMQ (Debian's package)"
  install_pkg rabbitmq-server
fi

if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! up 3306; then
  echo "services: starting MariaDB"
  # As systemd would: its socket directory, and the server as `mysql` (it refuses root).
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
fi

# Certificates for the TLS tests: a CA of the tests' own, a server certificate it signed for
# localhost and 127.0.0.1 (the tenant PostgreSQL serves it), and a second, unrelated CA (a
# client that trusts only that one must refuse the server).
TLS="$ENGINES/tls"
if [ ! -f "$TLS/other-ca.crt" ]; then
  echo "services: making the test certificates"
  # Made aside, then moved into place whole: never a certificate from one run and a CA from
  # another.
  final="$TLS"
  mkdir -p "$ENGINES"
  TLS="$(mktemp -d "$ENGINES/tls.XXXXXX")"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hepdb test CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > "$TLS/server.ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 3650 -extfile "$TLS/server.ext" -out "$TLS/server.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=not hepdb's CA" \
    -keyout "$TLS/other-ca.key" -out "$TLS/other-ca.crt" 2>/dev/null
  chown postgres "$TLS/server.key" && chmod 600 "$TLS/server.key"
  chmod 755 "$TLS"
  rm -rf "$final"
  mv "$TLS" "$final"
  TLS="$final"
fi

# RabbitMQ gets an amqps listener on 5671 with the same certificate; a broker running without
# it restarts once.
RMQ_TLS=/etc/rabbitmq/hepdb-tls
[ -f /etc/rabbitmq/rabbitmq.conf ] || touch /etc/rabbitmq/rabbitmq.conf
rmq_restart=
if ! cmp -s "$TLS/server.crt" "$RMQ_TLS/server.crt"; then
  mkdir -p "$RMQ_TLS"
  cp "$TLS/ca.crt" "$TLS/server.crt" "$TLS/server.key" "$RMQ_TLS/"
  chown -R rabbitmq: "$RMQ_TLS" && chmod 600 "$RMQ_TLS/server.key"
  rmq_restart=1
fi
if ! grep -q '^listeners.ssl.default' /etc/rabbitmq/rabbitmq.conf; then
  rmq_restart=1
  cat >> /etc/rabbitmq/rabbitmq.conf <<CONF
# hepdb's TLS tests: an amqps listener with the tests' certificate (.ci/services.sh).
listeners.ssl.default = 127.0.0.1:5671
ssl_options.cacertfile = $RMQ_TLS/ca.crt
ssl_options.certfile = $RMQ_TLS/server.crt
ssl_options.keyfile = $RMQ_TLS/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
fi
if [ -n "$rmq_restart" ]; then
  if up 5672; then
    echo "services: restarting RabbitMQ with its amqps listener"
    rabbitmqctl stop >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do up 5672 || break; sleep 1; done
  fi
fi
# Started only now, with its configuration complete.
if ! up 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
fi

# A tenant PostgreSQL left running without TLS, or with an older certificate, restarts with
# the current one. (Only when it answers and says so: a busy server is left alone.)
pg_bin="/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -1)/bin"
tenant_pg() { PGPASSWORD="$ROOT_PW" psql "host=127.0.0.1 port=5433 user=postgres dbname=postgres $1" -Atqc "$2" 2>/dev/null; }
if up 5433 && { [ "$(tenant_pg sslmode=disable 'SHOW ssl')" = off ] \
  || { [ "$(tenant_pg sslmode=disable 'SELECT 1')" = 1 ] \
       && ! tenant_pg "sslmode=verify-full sslrootcert=$TLS/ca.crt" 'SELECT 1' >/dev/null; }; }; then
  echo "services: restarting the tenant PostgreSQL engine with TLS"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$ENGINES/postgres" -w stop -m fast >/dev/null
fi
if ! up 5433; then
  echo "services: starting the tenant PostgreSQL engine on 5433"
  bin="$pg_bin"
  data="$ENGINES/postgres"
  mkdir -p "$ENGINES"
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"; install -d -o postgres -g postgres -m 700 "$data"
    pwfile="$(mktemp)"; echo "$ROOT_PW" > "$pwfile"; chown postgres "$pwfile"
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=peer -E UTF8 >/dev/null
    rm -f "$pwfile"
  fi
  runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start \
    -o "-p 5433 -c listen_addresses=127.0.0.1 -k $data -c max_connections=200 -c ssl=on -c ssl_cert_file=$TLS/server.crt -c ssl_key_file=$TLS/server.key" >/dev/null
fi
# The MongoDB stand-in lives in a virtualenv of its own; the tests' private instances and
# `cargo xtask` run its Python too. It sees the system's packages, so a smongo already there is
# used; otherwise pip builds it (an sdist: with the machine's Rust, several minutes).
SMONGO="${HEPDB_SMONGO_VENV:-/var/tmp/hepdb-smongo}"
if ! "$SMONGO/bin/python" -c 'import smongo' >/dev/null 2>&1; then
  echo "services: installing smongo (the MongoDB stand-in) into $SMONGO"
  python_venv "$SMONGO" --system-site-packages
  "$SMONGO/bin/python" -c 'import smongo' >/dev/null 2>&1 \
    || "$SMONGO/bin/pip" install --quiet smongo==1.2.8
fi
if ! up 27017; then
  echo "services: starting the MongoDB engine (smongo) on 27017"
  mkdir -p "$ENGINES"
  setsid nohup "$SMONGO/bin/python" "$HERE/xtask/scripts/smongo_engine.py" --port 27017 \
    --dir "$ENGINES/mongo" --root-password "$ROOT_PW" >"$ENGINES/mongo.log" 2>&1 < /dev/null &
fi

# `docker compose config` validates docker-compose.yml in the tests; there is no Docker engine
# here, but the validator needs none. Debian's docker-compose is enough.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  echo "services: installing docker-compose (to validate the compose file)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker-compose >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q docker-compose >/dev/null; }
fi

# The Kubernetes manifests are rendered with `kubectl kustomize` and validated against the
# Kubernetes schemas (kubernetes-validate, from PyPI, in a virtualenv of its own) in the tests.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "services: installing kubectl (to render the Kubernetes manifests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q kubernetes-client >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q kubernetes-client >/dev/null; }
fi
KVAL="${HEPDB_KUBE_VALIDATE_VENV:-/var/tmp/hepdb-kube-validate}"
if ! "$KVAL/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  echo "services: installing kubernetes-validate (to validate the Kubernetes manifests)"
  python_venv "$KVAL" && "$KVAL/bin/pip" install --quiet kubernetes-validate==1.37.0
fi

wait_for PostgreSQL 5432 60
wait_for MariaDB 3306 60
# A fresh Debian root logs in by socket only; the defaults connect as root over TCP.
if ! mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  echo "services: letting MariaDB's root log in over TCP (development)"
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')"
fi
wait_for "tenant PostgreSQL" 5433 60
wait_for MongoDB 27017 60
wait_for MariaDB 3306 60
wait_for RabbitMQ 5672 120
# A broker that was still booting without the amqps listener when its configuration changed
# (a package's own start, on a fresh machine) restarts once.
for _ in $(seq 1 15); do up 5671 && break; sleep 1; done
if ! up 5671; then
  echo "services: restarting RabbitMQ to open its amqps listener"
  rabbitmqctl stop >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do up 5672 || break; sleep 1; done
  rabbitmq-server -detached
  wait_for RabbitMQ 5672 120
fi
wait_for "RabbitMQ (amqps)" 5671 60
# RabbitMQ accepts TCP before it accepts AMQP sessions; ping until the node is fully up.
for _ in $(seq 1 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
echo "services: PostgreSQL, MariaDB, RabbitMQ and the PostgreSQL and MongoDB engines are up"
