#!/usr/bin/env bash
# Makes sure the services the tests talk to are up on loopback: PostgreSQL on 5432
# (user postgres, trust auth) and Redis on 6379. Installs them from Debian's
# packages when they are missing, starts them when they are stopped, and waits
# until each answers. The S3 server (moto) is started by the tests themselves.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

have() { command -v "$1" >/dev/null 2>&1; }

install_packages() {
  if have apt-get; then
    echo "installing $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "cannot install $*: no apt-get; install them and run again" >&2
    exit 1
  fi
}

wait_for() {
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what did not come up" >&2
  exit 1
}

postgres_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

if ! have pg_isready || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  install_packages postgresql
fi
if ! postgres_up; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
wait_for PostgreSQL postgres_up
psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc "select 1" >/dev/null || {
  echo "PostgreSQL at $PG_HOST:$PG_PORT does not let user postgres in" >&2
  exit 1
}

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG; }

if ! have redis-server || ! have redis-cli; then
  install_packages redis-server
fi
if ! redis_up; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis redis_up
echo "PostgreSQL and Redis are up" >&2
