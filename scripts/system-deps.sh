#!/usr/bin/env bash
# System packages the tests need: redis-server and the PostgreSQL 15 server.
# Installed with apt-get when missing, so CI on a fresh machine passes.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# the installers may start services we do not use; tests start their own servers
(command -v service >/dev/null && service redis-server stop >/dev/null 2>&1) || true
exit 0
