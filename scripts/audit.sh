#!/usr/bin/env bash
# Audit the installed dependencies for known vulnerabilities with pip-audit (in a venv of its
# own, so that its dependencies do not mix with hashsvc's). Fails on any known vulnerability.
# Where no vulnerability service can be reached (the development and CI machines of this
# repository reach neither PyPI's JSON API nor OSV), every distribution is reported as NOT
# AUDITED, loudly; set HASHSVC_AUDIT_REQUIRED=1 to fail then too (do, where the internet is
# reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
AUDIT_VENV=${HASHSVC_AUDIT_VENV:-.venv-audit}
required=()
[ "${HASHSVC_AUDIT_REQUIRED:-0}" = "1" ] && required=(--required)
if [ ! -x "$AUDIT_VENV/bin/pip-audit" ]; then
    if ! { python3 -m venv "$AUDIT_VENV" \
           && "$AUDIT_VENV/bin/pip" install -q pip-audit > "$AUDIT_VENV.log" 2>&1; }; then
        echo "audit: NOT AUDITED: pip-audit could not be installed ($AUDIT_VENV.log)" >&2
        [ ${#required[@]} -eq 0 ] || exit 2
        exit 0
    fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip freeze --exclude-editable > "$work/installed.txt"
# --no-deps --disable-pip: audit exactly the pinned list, without installing anything.
"$AUDIT_VENV/bin/pip-audit" -r "$work/installed.txt" --no-deps --disable-pip --progress-spinner off \
    --format json -o "$work/report.json" 2> "$work/stderr" || true
if [ ! -s "$work/report.json" ]; then
    echo "audit: NOT AUDITED: pip-audit failed: $(tail -1 "$work/stderr")" >&2
    [ ${#required[@]} -eq 0 ] || exit 2
    exit 0
fi
.venv/bin/python scripts/audit_summary.py "$work/report.json" "${required[@]}"
