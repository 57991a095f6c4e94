#!/usr/bin/env bash
# Debian packages the test suite needs (servers and a Kafka client nobody here wrote).
set -euo pipefail
need=()
command -v kcat >/dev/null || need+=(kcat)
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v chromium >/dev/null || need+=(chromium)
command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (install them as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
