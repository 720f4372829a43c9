"""Commands of the analyst's review: ``hashsvc review list|confirm|reject`` and the signed
deletion report, ``hashsvc report SCAN_ID --format json|html|pdf|vics --out FILE``."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from hashsvc.cli import Context, _fail, main, pass_ctx, report
from hashsvc.errors import HashsvcError


def _reviewer_option(func: Any) -> Any:
    return click.option("--reviewer", default=None,
                        help="The analyst's name recorded with the decision (default: the "
                             "login name).")(func)


def _reviewer(name: str | None) -> Any:
    from hashsvc.review import Reviewer

    return Reviewer(name or getpass.getuser())


@main.group()
def review() -> None:
    """Confirm or reject a scan's candidates (only confirmed ones go into deletion reports)."""


@review.command("list")
@click.argument("scan_id")
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON lines.")
@pass_ctx
def review_list(ctx: Context, scan_id: str, as_json: bool) -> None:
    """The scan's candidates with every distance, the locator and the current decision."""
    from hashsvc import audit
    from hashsvc.review import candidates, summary

    try:
        items = candidates(ctx.store, scan_id)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    audit.record(ctx.store, action="scan.candidates", target_type="scan", target_id=scan_id,
                 details={"via": "cli", "count": len(items)})
    for item in items:
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False, sort_keys=True))
            continue
        review = item["review"]
        state = (f"{review['decision']} by {review['reviewer']}" if review else "unreviewed")
        distances = " ".join(f"{k}={v}" for k, v in sorted((item["distances"] or {}).items()))
        flags = " deleted" if item.get("deleted") else ""
        version = f" version={item['version_id']}" if item.get("version_id") else ""
        click.echo(f"{item['match_id']:>8}  {state:<28} {item['case']:<16} "
                   f"{item['algorithm']}:{item['distance']} [{distances}]{flags}{version}  "
                   f"{click.unstyle(item['path'])}")
    counts = summary(items)
    click.echo(f"{len(items)} candidates: {counts['confirmed']} confirmed, "
               f"{counts['rejected']} rejected, {counts['unreviewed']} unreviewed", err=True)


@review.command("confirm")
@click.argument("scan_id")
@click.argument("match_ids", nargs=-1)
@click.option("--all-exact", is_flag=True, help="Every candidate with an exact-hash match.")
@click.option("--all", "all_", is_flag=True, help="Every candidate of the scan.")
@click.option("--reason", default=None, help="Why (optional for a confirmation).")
@_reviewer_option
@pass_ctx
def review_confirm(ctx: Context, scan_id: str, match_ids: tuple[str, ...], all_exact: bool,
                   all_: bool, reason: str | None, reviewer: str | None) -> None:
    """Confirm candidates: MATCH_ID..., or --all-exact, or --all."""
    from hashsvc.review import matched_file_ids

    if sum((bool(match_ids), all_exact, all_)) != 1:
        raise click.UsageError("give MATCH_IDs, or --all-exact, or --all (one of them)")
    try:
        ids: list[Any] = list(match_ids) if match_ids else matched_file_ids(
            ctx.store, scan_id, exact_only=all_exact)
        if not ids:
            raise click.ClickException("no candidates to confirm")
        _decide(ctx, scan_id, ids, "confirmed", reviewer, reason)
    except HashsvcError as exc:
        raise _fail(exc) from exc


@review.command("reject")
@click.argument("scan_id")
@click.argument("match_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why the candidate is not the registered image.")
@_reviewer_option
@pass_ctx
def review_reject(ctx: Context, scan_id: str, match_ids: tuple[str, ...], reason: str,
                  reviewer: str | None) -> None:
    """Reject candidates, with a reason."""
    try:
        _decide(ctx, scan_id, list(match_ids), "rejected", reviewer, reason)
    except HashsvcError as exc:
        raise _fail(exc) from exc


def _decide(ctx: Context, scan_id: str, ids: list[Any], decision: str, reviewer: str | None,
            reason: str | None) -> None:
    """Record a decision and print what changed as JSON."""
    from hashsvc.review import decide

    ctx.store.get_scan(scan_id)  # NotFound for an unknown scan
    changed = decide(ctx.store, scan_id, ids, decision, _reviewer(reviewer), reason)
    click.echo(json.dumps({"scan_id": scan_id, "decision": decision, "changed": changed},
                          ensure_ascii=False, indent=2))


@report.command("build")
@click.argument("scan_id")
@click.option("--format", "fmt", type=click.Choice(["json", "html", "pdf", "vics"]),
              default="json", show_default=True, help="json is the signed artefact.")
@click.option("--out", "out", required=True, help="Where to write it ('-': standard output).")
@click.option("--examiner", default=None, help="The examiner named in the report (default: "
                                                "the login name).")
@click.option("--org", default=None, help="The organisation named in the report.")
@click.option("--exhibit", default=None, help="Exhibit label (default: the scan's label).")
@click.option("--court", default=None, help="Court, where an order is sought or made.")
@click.option("--order-ref", default=None, help="Reference of the court's order.")
@pass_ctx
def report_build(ctx: Context, scan_id: str, fmt: str, out: str, examiner: str | None,
                 org: str | None, exhibit: str | None, court: str | None,
                 order_ref: str | None) -> None:
    """Write the signed deletion report of SCAN_ID's confirmed matches."""
    from hashsvc import audit
    from hashsvc.deletion_report import deletion_envelope_for_scan, write_rendering
    from hashsvc.review import confirmed_matches

    context: dict[str, Any] = {"org": org or "(embedded deployment)",
                               "examiner": examiner or getpass.getuser()}
    for key, value in (("exhibit", exhibit), ("court", court), ("order_ref", order_ref)):
        if value is not None:
            context[key] = value
    try:
        envelope = deletion_envelope_for_scan(ctx.store, ctx.settings, scan_id, context,
                                              confirmed_matches)
        write_rendering(envelope, fmt, out)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    audit.record(ctx.store, action="scan.deletion_report", target_type="scan",
                 target_id=scan_id, details={"via": "cli", "format": fmt,
                                             "files": len(envelope["document"]["files"])})
    if out != "-":
        click.echo(f"deletion report of scan {scan_id}: {len(envelope['document']['files'])} "
                   f"confirmed files, signed with key {envelope['signature']['key_id']}, "
                   f"written to {out}", err=True)


@main.command("wipe-record")
@click.argument("scan_id")
@click.option("--medium", required=True, help="The medium sanitised (make, model, serial).")
@click.option("--method", required=True, type=click.Choice(["clear", "purge", "destroy"]),
              help="NIST SP 800-88 sanitisation method.")
@click.option("--technique", default=None, help="e.g. overwrite, block erase, crypto erase.")
@click.option("--tool", required=True, help="The tool used.")
@click.option("--tool-version", default=None, help="Its version.")
@click.option("--verification-method", required=True,
              help="How the result was verified (e.g. full re-scan with hashsvc).")
@click.option("--verification-result", required=True, help="What the verification found.")
@click.option("--operator", required=True, help="Who sanitised the medium.")
@click.option("--verifier", default=None, help="Who verified it.")
@click.option("--date", "date_", required=True, help="When (ISO 8601).")
@click.option("--notes", default=None, help="Anything else for the record.")
@pass_ctx
def wipe_record(ctx: Context, scan_id: str, **fields: Any) -> None:
    """Record how a medium of SCAN_ID's evidence was sanitised (carried into its reports)."""
    from hashsvc import audit
    from hashsvc.verification import add_wipe_record

    fields["date"] = fields.pop("date_")
    try:
        record = add_wipe_record(ctx.store, scan_id, fields, getpass.getuser())
    except HashsvcError as exc:
        raise _fail(exc) from exc
    audit.record(ctx.store, action="scan.wipe_record", target_type="scan", target_id=scan_id,
                 details={"via": "cli", "medium": record["fields"]["medium"],
                          "method": record["fields"]["method"]})
    click.echo(json.dumps(record, ensure_ascii=False, indent=2))


@main.group()
def action() -> None:
    """Actions on evidence that a signed report justifies (S3 sources only)."""


@action.command("delete")
@click.argument("report_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--execute", is_flag=True,
              help="Really delete (without it: a dry run that lists what would go).")
@pass_ctx
def action_delete(ctx: Context, report_file: str, execute: bool) -> None:
    """Delete exactly the confirmed S3 object versions of a signed deletion report.

    The report must verify against this deployment's keys; every deletion (and the dry run)
    is audited, and the result of each is printed as JSON.
    """
    from hashsvc import audit
    from hashsvc.verification import checked_original, delete_s3_versions, s3_deletions

    try:
        with open(report_file, encoding="utf-8") as fh:
            envelope = json.load(fh)
        document = checked_original(envelope, ctx.settings)
        planned = s3_deletions(document)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {report_file}: {exc}") from exc
    except HashsvcError as exc:
        raise _fail(exc) from exc

    def record(result: dict[str, Any]) -> None:
        audit.record(ctx.store, action="s3.delete" if execute else "s3.delete.dry_run",
                     target_type="scan", target_id=document.get("scan_id"),
                     details={"via": "cli", "report_id": document.get("report_id"),
                              **{k: result.get(k) for k in ("bucket", "key", "version_id",
                                                            "outcome", "error")}})

    results = delete_s3_versions(planned, execute, record)
    click.echo(json.dumps({"report_id": document.get("report_id"), "execute": execute,
                           "results": results}, ensure_ascii=False, indent=2))
    if any(r["outcome"] == "failed" for r in results):
        raise SystemExit(1)
