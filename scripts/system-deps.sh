#!/usr/bin/env bash
# System packages the tests need: redis-server and the PostgreSQL 15 server
# (the tests start their own servers in temporary folders; see tests/fixtures/).
# Installed with apt-get when missing, so CI on a fresh machine passes.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
INSTALLED=()
apt_install() {
  INSTALLED+=("$@")
  echo "installing system packages: $*"
  [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || apt_install redis-server

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # Debian 12 ships 15; elsewhere take the distribution's default server (the fixture finds it)
  if apt-cache show postgresql-15 >/dev/null 2>&1; then apt_install postgresql-15; else apt_install postgresql; fi
fi
# the server runs as this user when the tests run as root (initdb refuses root)
id postgres >/dev/null 2>&1 || $SUDO useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres

# what we just installed may have started a service we do not use; tests start their own servers
if [ ${#INSTALLED[@]} -gt 0 ] && command -v service >/dev/null 2>&1; then
  service redis-server stop >/dev/null 2>&1 || true
  service postgresql stop >/dev/null 2>&1 || true
fi
exit 0
