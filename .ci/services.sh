#!/usr/bin/env bash
# Starts each local service the tests need unless it is already answering, then waits until all
# answer. Safe to run any number of times.
# - the machine's PostgreSQL (metadata, 5432), MariaDB (engine, 3306) and RabbitMQ (5672);
# - a tenant PostgreSQL engine of its own (5433): initdb into $ENGINES/postgres, scram-sha-256
#   for every TCP login, superuser postgres / hepdb-dev-root; never the metadata server;
# - a MongoDB engine (27017): the smongo stand-in (no mongod can be installed here), root /
#   hepdb-dev-root, installed from PyPI on first use.
set -euo pipefail

ENGINES="${HEPDB_ENGINES_DIR:-/var/tmp/hepdb-engines}"
ROOT_PW=hepdb-dev-root
HERE="$(cd "$(dirname "$0")/.." && pwd)"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
  for _ in $(seq 1 "$3"); do up "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2
  return 1
}

if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! up 3306; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
if ! up 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
fi

if ! up 5433; then
  echo "services: starting the tenant PostgreSQL engine on 5433"
  bin="/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -1)/bin"
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
    -o "-p 5433 -c listen_addresses=127.0.0.1 -k $data -c max_connections=200" >/dev/null
fi
if ! up 27017; then
  echo "services: starting the MongoDB engine (smongo) on 27017"
  python3 -c 'import smongo' 2>/dev/null || pip install --quiet smongo==1.2.8
  mkdir -p "$ENGINES"
  setsid nohup python3 "$HERE/xtask/scripts/smongo_engine.py" --port 27017 \
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
  python3 -m venv "$KVAL" && "$KVAL/bin/pip" install --quiet kubernetes-validate==1.37.0
fi

wait_for PostgreSQL 5432 60
wait_for "tenant PostgreSQL" 5433 60
wait_for MongoDB 27017 60
wait_for MariaDB 3306 60
wait_for RabbitMQ 5672 120
# RabbitMQ accepts TCP before it accepts AMQP sessions; ping until the node is fully up.
for _ in $(seq 1 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
echo "services: PostgreSQL, MariaDB, RabbitMQ and the PostgreSQL and MongoDB engines are up"
