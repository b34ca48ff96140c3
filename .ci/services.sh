#!/usr/bin/env bash
# Starts each local service the tests need (PostgreSQL, MariaDB, RabbitMQ) unless it is already
# answering, then waits until all answer. Safe to run any number of times.
set -euo pipefail

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

wait_for PostgreSQL 5432 60
wait_for MariaDB 3306 60
wait_for RabbitMQ 5672 120
# RabbitMQ accepts TCP before it accepts AMQP sessions; ping until the node is fully up.
for _ in $(seq 1 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
echo "services: PostgreSQL, MariaDB and RabbitMQ are up"
