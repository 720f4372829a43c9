#!/usr/bin/env bash
# Start the PostgreSQL and Redis servers the tests use, on loopback, when they are not running.
# On the project's machines both usually run already; a fresh machine may have neither.
set -euo pipefail

PGHOST=127.0.0.1
PGPORT=5432

have() { command -v "$1" >/dev/null 2>&1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null
  as_root apt-get install -y -qq "$@" >/dev/null
}

pg_up() { have pg_isready && pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

if ! pg_up; then
  echo "ensure-services: starting PostgreSQL" >&2
  have pg_ctlcluster || apt_install postgresql postgresql-client
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    as_root pg_createcluster "$version" main >/dev/null
  fi
  conf=/etc/postgresql/$version/main
  # Trust auth on loopback, as the test machines are set up.
  if ! grep -q "hashsvc-tests" "$conf/pg_hba.conf"; then
    as_root sh -c "printf '%s\n' '# hashsvc-tests' 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' 'local all all trust' | cat - '$conf/pg_hba.conf' > '$conf/pg_hba.tmp' && mv '$conf/pg_hba.tmp' '$conf/pg_hba.conf'"
  fi
  as_root pg_ctlcluster "$version" main start || as_root pg_ctlcluster "$version" main reload
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "ensure-services: PostgreSQL did not start" >&2; exit 1; }
fi

# The tests connect as the OS user's name or 'postgres' to database 'test'.
if ! psql -h "$PGHOST" -p "$PGPORT" -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null 2>&1 || true
fi

redis_up() { have redis-cli && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if ! redis_up; then
  echo "ensure-services: starting Redis" >&2
  have redis-server || apt_install redis-server
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  redis_up || { echo "ensure-services: Redis did not start" >&2; exit 1; }
fi

# Command-line tools the evidence-source tests use to build disk images and E01 files (no
# mounting): mkfs.fat/mtools for FAT, e2fsprogs for ext4, sfdisk for partition tables,
# ewfacquire for E01, and The Sleuth Kit's command-line tools to cross-check what pytsk3 reads.
missing=()
have mkfs.fat || missing+=(dosfstools)
have mcopy || missing+=(mtools)
have mke2fs || missing+=(e2fsprogs)
have debugfs || missing+=(e2fsprogs)
have sfdisk || missing+=(fdisk)
have ewfacquire || missing+=(ewf-tools)
have fls || missing+=(sleuthkit)
have pdftotext || missing+=(poppler-utils)
# PDF reports print any file name with DejaVu Sans (hashsvc.deletion_report.find_unicode_font).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The web pages' tests drive Debian's Chromium headless through Playwright (tests/browser.py);
# Playwright's own browser download is never used.
have chromium || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-services: installing ${missing[*]}" >&2
  apt_install "${missing[@]}"
fi
