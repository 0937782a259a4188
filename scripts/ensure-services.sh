#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers the scale-out tests use are up.
# Starts them when they are installed but stopped; fails loudly otherwise.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 50); do
    up "$port" && return 0
    sleep 0.2
  done
  echo "error: $name is not listening on 127.0.0.1:$port and could not be started" >&2
  exit 1
}

if ! up 5432; then
  echo "starting PostgreSQL..."
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for PostgreSQL 5432
fi

if ! up 6379; then
  echo "starting Redis..."
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/keel-redis.log || true
  fi
  wait_for Redis 6379
fi
