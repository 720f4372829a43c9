"""Read pip-audit's JSON report and say plainly what it shows (used by scripts/audit.sh).

Exit status: 1 when any installed distribution has a known vulnerability; 2 when nothing (or
not everything) could be checked and ``--required`` is given; 0 otherwise. pip-audit itself
prints "No known vulnerabilities found" even when it reached no vulnerability service and
checked nothing, which is why this exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def summarise(report: dict, required: bool) -> tuple[int, list[str]]:
    """The exit status and the lines to print for a pip-audit JSON report."""
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    checked = len(deps) - len(skipped)
    lines = [f"audit: {checked} of {len(deps)} installed distributions checked against the "
             "vulnerability service"]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            lines.append(f"audit: VULNERABLE {dep['name']} {dep.get('version', '')}: "
                         f"{vuln.get('id')} (fixed in: {fixes})")
    if skipped:
        lines.append(f"audit: NOT AUDITED: {len(skipped)} distributions could not be checked, "
                     f"e.g. {skipped[0]['skip_reason']}")
    if vulnerable:
        return 1, lines
    if skipped and required:
        lines.append("audit: HASHSVC_AUDIT_REQUIRED is set: failing")
        return 2, lines
    if not skipped:
        lines.append("audit: no known vulnerabilities")
    return 0, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pip-audit --format json output")
    parser.add_argument("--required", action="store_true",
                        help="fail (status 2) when any distribution could not be checked")
    args = parser.parse_args()
    status, lines = summarise(json.loads(args.report.read_text()), args.required)
    print("\n".join(lines), file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
