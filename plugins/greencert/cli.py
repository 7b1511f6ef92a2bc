"""``greencert`` command line: a thin caller of the same stage functions the DAG uses."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

from greencert.errors import GreenCertError

EXIT_OK = 0
EXIT_USAGE = 64


def _day(text: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def cmd_simulate(args: argparse.Namespace) -> int:
    from greencert.sources.simulate import SAMPLE_FLEET, simulate_deployment

    out = Path(args.out)
    if args.fleet:
        from greencert.sources.fleet import FleetSpec, write_fleet_day

        spec = FleetSpec(scale=args.scale, step_seconds=args.step, seed=args.seed)
        for day in range(args.days):
            print(write_fleet_day(spec, args.date + dt.timedelta(days=day), out))
        return EXIT_OK
    written = []
    for day in range(args.days):
        start = args.date + dt.timedelta(days=day)
        end = start + dt.timedelta(days=1)
        for profile in SAMPLE_FLEET:
            target = out / profile.deployment / start.strftime("%Y-%m-%d")
            written.append(
                simulate_deployment(profile, start, end, target, args.step, args.format, args.seed)
            )
    for path in written:
        print(path)
    return EXIT_OK


def cmd_certify_fleet(args: argparse.Namespace) -> int:
    from greencert.fleet import certify_fleet_day, deployment_bundles

    run = certify_fleet_day(
        deployment_bundles(Path(args.fleet_day)),
        args.out,
        args.work_dir,
        args.scheme,
        signing_key=args.key,
        pdf=False,
        partials_dir=args.partials,
    )
    for deployment, path in sorted(run.certificates.items()):
        print(f"{deployment}: {path}")
    for deployment, reason in sorted(run.failures.items()):
        print(f"{deployment}: NOT CERTIFIED: {reason}", file=sys.stderr)
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in run.seconds.items())
    print(f"{len(run.certificates)} certified, {len(run.failures)} failed, {run.rows:,} rows; {phases}")
    return EXIT_OK if not run.failures else 1


def _writable_registry(out: str) -> None:
    """Create (or find) the local registry folder and prove it writable before any work starts.

    A read-only file system, a regular file on the path or missing permissions end in a
    PublishError naming the path, not in a traceback after minutes of validation.
    URLs (s3://...) are checked by the registry code when it writes.
    """
    from greencert.errors import PublishError

    if "://" in str(out):
        return
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".greencert-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PublishError(
            f"registry folder cannot be written ({exc.strerror or exc}); nothing was published",
            str(exc.filename or root),
        ) from None


def cmd_certify(args: argparse.Namespace) -> int:
    from greencert.errors import PublishError
    from greencert.segments import certify_bundle

    _writable_registry(args.out)
    # A bundle that declares segments (engine, model or GPU change) gives one certificate per segment.
    try:
        paths = certify_bundle(
            args.bundle,
            args.out,
            args.scheme,
            args.work_dir,
            signing_key=args.signing_key,
            pdf=False if args.no_pdf else None,
        )
    except OSError as exc:
        # Bundle problems are BundleErrors already; an OSError left is the registry or the work folder.
        raise PublishError(
            f"cannot write ({exc.strerror or exc}); what was published before is kept",
            str(exc.filename or args.out),
        ) from None
    from greencert.certificate.registry import registry_root

    for path in paths:
        cert = json.loads(registry_root(path).read_bytes())  # the registry may be an fsspec URL
        m = cert["metrics"]
        e, c = m["energy_per_million_tokens"], m["carbon_per_million_tokens"]
        interval = f" (95 % {e['interval95'][0]:.4g}-{e['interval95'][1]:.4g})" if "interval95" in e else ""
        print(
            f"certificate {cert['certificate_id']}: grade {cert['grade']}, "
            f"{e['value']:.6g} kWh/Mtok{interval}, "
            f"{c['value']:.6g} gCO2e/Mtok"
        )
        print(path)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from greencert.certificate.verify import TrustOptions, verify_certificate

    result = verify_certificate(
        Path(args.certificate),
        Path(args.bundle) if args.bundle else None,
        at=args.at,
        registry=args.registry,
        options=TrustOptions(
            keys=[Path(k) for k in args.key or []],
            trust_store=Path(args.trust_store) if args.trust_store else None,
            allow_development_key=args.allow_development_key,
            offline=args.offline,
            min_scheme=args.min_scheme,
        ),
    )
    for line in result.lines:
        print(line)
    print(f"OK: {result.certificate_id} verified")
    return EXIT_OK


def cmd_trust(args: argparse.Namespace) -> int:
    from greencert.trust import store

    if args.action == "add":
        if not args.target:
            raise GreenCertError("trust add needs the issuer's public key PEM", "trust add")
        anchor = store.add(args.target, args.name, args.development, args.trust_store)
        print(f"trusted {anchor.describe()}")
        return EXIT_OK
    if args.action == "remove":
        if not args.target:
            raise GreenCertError("trust remove needs a key id (see `greencert trust list`)", "trust remove")
        if not store.remove(args.target, args.trust_store):
            raise GreenCertError(
                f"key {args.target} is not in the trust store", str(store.store_path(args.trust_store))
            )
        print(f"no longer trusted: {args.target}")
        return EXIT_OK
    anchors = store.load_anchors(args.trust_store)
    for a in anchors:
        print(f"{a.key_id}  {a.name}{'  (development key)' if a.development else ''}")
    print(f"{len(anchors)} trusted issuer key(s) in {store.store_path(args.trust_store)}")
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    """Check that the registry's current (or a given newer) tree head extends an older one."""
    from greencert.files import registry_root
    from greencert.trust import log as issuance_log
    from greencert.trust.store import resolve_anchors

    root = registry_root(args.registry)
    old = issuance_log.read_tree_head(Path(args.old))
    new = issuance_log.read_tree_head(Path(args.new)) if args.new else issuance_log.latest_tree_head(root)
    if new is None:
        raise GreenCertError("the registry has no issuance log", str(root))
    anchors = {
        a.key_id: a
        for a in resolve_anchors([Path(k) for k in args.key or []], args.trust_store, use_store=not args.key)
    }
    anchor = anchors.get(new.document.get("key_id"))
    if anchor is None:
        raise GreenCertError(
            f"tree head signed by key {new.document.get('key_id')}, which you do not trust", args.registry
        )
    proof = issuance_log.prove_consistency(root, old.size, new.size) if new.size > old.size else {}
    try:
        issuance_log.check_consistency(old, new, proof, [a.public for a in anchors.values()])
    except issuance_log.LogProofError as exc:
        print(f"error[log-inconsistent]: {args.registry}: {exc}", file=sys.stderr)
        return 27
    print(
        f"log consistent: {old.size} entries ({old.document['timestamp']}) are a prefix of "
        f"{new.size} entries ({new.document['timestamp']}), signed by {anchor.describe()}"
    )
    return EXIT_OK


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time (2026-03-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (write Z or +00:00)")
    return moment.astimezone(dt.UTC)


def cmd_revoke(args: argparse.Namespace) -> int:
    from greencert.certificate.registry import revoke

    path = revoke(args.registry, args.certificate_id, args.reason, args.signing_key, args.at)
    print(f"revoked {args.certificate_id}: {args.reason}")
    print(path)
    return EXIT_OK


def cmd_registry(args: argparse.Namespace) -> int:
    from greencert.certificate.registry import list_certificates, rebuild_index, registry_lock, update_trust
    from greencert.certificate.sign import load_key_file, load_signing_key
    from greencert.files import registry_root

    if args.action in ("rebuild", "refresh"):
        # refresh = rebuild with the issuer key: re-signs the status (TUF timestamp) and the log.
        key = load_signing_key(args.signing_key) if (args.signing_key or args.action == "refresh") else None
        print(rebuild_index(args.registry, args.at, signing_key=key))
        return EXIT_OK
    if args.action == "adopt":
        key = load_signing_key(args.signing_key)
        root = registry_root(args.registry)
        with registry_lock(root):
            update_trust(root, key, adopt=True)
        print(rebuild_index(root, args.at, signing_key=key))
        return EXIT_OK
    if args.action == "rotate-key":
        from greencert.trust.metadata import rotate_root

        if not (args.old_key and args.new_key):
            raise GreenCertError(
                "rotate-key needs --old-key and --new-key (private key PEMs)", "registry rotate-key"
            )
        root = registry_root(args.registry)
        with registry_lock(root):
            version = rotate_root(
                root, load_key_file(args.old_key), load_key_file(args.new_key), compromised=args.compromised
            )
        new_key = load_key_file(args.new_key)
        rebuild_index(root, args.at, signing_key=new_key)
        print(f"root v{version}: issuer key is now {new_key.key_id}")
        return EXIT_OK
    rows = list_certificates(args.registry, args.at, _reader_anchors(args))
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return EXIT_OK
    for r in rows:
        energy, carbon = r["energy_kwh_per_mtok"], r["carbon_gco2e_per_mtok"]
        figures = (
            f"{energy:.4g} kWh/Mtok  {carbon:.4g} gCO2e/Mtok"
            if energy is not None and carbon is not None
            else ""
        )
        print(f"{r['certificate_id']}  {r['grade']}  {figures}  {_status_text(r)}")
    print(f"{len(rows)} certificate(s)")
    return EXIT_OK


def _reader_anchors(args: argparse.Namespace) -> list:
    from greencert.trust.store import resolve_anchors

    keys = [Path(k) for k in getattr(args, "key", None) or []]
    return resolve_anchors(keys, getattr(args, "trust_store", None), use_store=not keys)


def _status_text(row: dict) -> str:
    text = row["status"]
    if row["status"] == "unverified":
        text += f" ({row['verification']})"
    elif row.get("development_key"):
        text += " (development key)"
    return text


def cmd_report(args: argparse.Namespace) -> int:
    from greencert.certificate.reports import write_reports
    from greencert.certificate.verify import load_certificate

    cert, _raw = load_certificate(Path(args.certificate))
    out = Path(args.out) if args.out else Path(args.certificate).with_suffix(".reports")
    folder = write_reports(cert, out)
    for name in sorted(p.name for p in folder.iterdir()):
        print(folder / name)
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from greencert.certificate.registry import list_certificates
    from greencert.files import registry_root

    root = registry_root(args.registry)
    if not root.is_dir():
        raise GreenCertError("no such registry folder", str(args.registry))
    rows = []
    for r in list_certificates(root, None, _reader_anchors(args)):
        energy, carbon = r["energy_kwh_per_mtok"], r["carbon_gco2e_per_mtok"]
        rows.append(
            (
                r["site"],
                r["deployment"],
                r["period"]["start"][:10],
                r["grade"],
                f"{energy:.4f}" if energy is not None else "",
                f"{carbon:.1f}" if carbon is not None else "",
                _status_text(r),
            )
        )
    header = ("site", "deployment", "day", "grade", "kWh/Mtok", "gCO2e/Mtok", "status")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(rows)} certificate(s) in {args.registry}")
    return EXIT_OK if rows else 1


# --- sources check / extract (issue 14): logic in greencert.sources.commands ---------------------
def cmd_sources_check(args: argparse.Namespace) -> int:
    from greencert.sources.commands import check_command

    print(check_command(args.config, args.deployment, args.start, args.end, args.json))
    return EXIT_OK


def cmd_extract(args: argparse.Namespace) -> int:
    from greencert.sources.commands import extract

    print(extract(args.config, args.deployment, args.start, args.end, args.out))
    return EXIT_OK


def _add_sources_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sources", help="inspect where deployments' telemetry comes from")
    action = p.add_subparsers(dest="sources_command", required=True)
    c = action.add_parser("check", help="pull in memory and show devices, churn, MIG and attribution shares")
    c.add_argument("config", help="fleet config YAML")
    c.add_argument("--deployment", default=None, help="only this deployment")
    c.add_argument("--start", default=None, help="RFC 3339 (default: one hour before --end)")
    c.add_argument("--end", default=None, help="RFC 3339 (default: the last whole hour)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_sources_check)
    p = sub.add_parser("extract", help="write one deployment's evidence bundle, as the DAG's extract task")
    p.add_argument("config", help="fleet config YAML")
    p.add_argument("deployment")
    p.add_argument("--start", required=True, help="RFC 3339, e.g. 2026-02-01T00:00:00Z")
    p.add_argument("--end", required=True, help="RFC 3339")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.set_defaults(func=cmd_extract)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greencert", description="Certify energy and carbon per million AI tokens."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write deterministic sample-fleet evidence bundles")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--date", type=_day, default=_day("2026-01-01"), help="first day (UTC), default 2026-01-01"
    )
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--step", type=float, default=15.0, help="sampling interval in seconds")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fleet",
        action="store_true",
        help="a 1,000-node fleet instead (8,000 GPUs, 50 deployments, 3 sites; Parquet; one folder per day)",
    )
    p.add_argument("--scale", type=float, default=1.0, help="with --fleet: fleet size (0.04 = 40 nodes)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "certify-fleet", help="certify every deployment bundle of a fleet-day folder (simulate --fleet)"
    )
    p.add_argument("fleet_day", help="folder of one day's deployment bundles")
    p.add_argument("--out", required=True, help="registry folder to publish into")
    p.add_argument("--work-dir", required=True, help="stage outputs, one folder per deployment")
    p.add_argument("--partials", default=None, help="also save each deployment's daily partial here")
    p.add_argument("--scheme", default=None, help="grading scheme YAML (default: the packaged scheme)")
    p.add_argument("--key", default=None, help="signing key (PEM); default as for certify")
    p.set_defaults(func=cmd_certify_fleet)

    p = sub.add_parser("certify", help="validate, compute, grade and publish one evidence bundle")
    p.add_argument("bundle")
    p.add_argument("--out", required=True, help="registry folder to publish into")
    p.add_argument("--scheme", default=None, help="grading scheme YAML (default: the packaged scheme)")
    p.add_argument("--work-dir", default=None, help="keep stage outputs here (default: a temporary folder)")
    p.add_argument(
        "--signing-key",
        default=None,
        help="Ed25519 private key PEM (default: $GREENCERT_SIGNING_KEY, an Airflow connection, or the dev key)",
    )
    p.add_argument("--no-pdf", action="store_true", help="skip the PDF label (no Chromium needed)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser(
        "verify",
        help="check a certificate: trusted issuer, signed status, log inclusion, hashes, recomputed figures",
    )
    p.add_argument("certificate")
    p.add_argument("--bundle", default=None, help="evidence bundle (default: the copy published beside it)")
    p.add_argument(
        "--key",
        action="append",
        default=None,
        help="issuer public key PEM to trust (repeatable); without it, the trust store's keys are trusted",
    )
    p.add_argument(
        "--trust-store",
        default=None,
        help="trust store file (default: $GREENCERT_TRUST_STORE or $GREENCERT_HOME/trust.json)",
    )
    p.add_argument(
        "--registry",
        default=None,
        help="registry (folder, fsspec or https:// URL) or a copy of its metadata/ (default: 3 folders up)",
    )
    p.add_argument(
        "--at", type=_moment, default=None, help="check expiry at this RFC 3339 time (default: now)"
    )
    p.add_argument(
        "--allow-development-key", action="store_true", help="accept a development-key certificate"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="accept an unknown revocation status (no registry, or its status expired); the output says so",
    )
    p.add_argument(
        "--min-scheme", default=None, help="fail if graded under an older scheme version (e.g. 2026.2)"
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "trust", help="manage the issuer keys you trust (add ISSUER.pem | list | remove KEY_ID)"
    )
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("target", nargs="?", default=None, help="add: public key PEM; remove: key id")
    p.add_argument("--name", default=None, help="add: a name for the issuer")
    p.add_argument("--development", action="store_true", help="add: the key is a development key")
    p.add_argument(
        "--trust-store",
        default=None,
        help="trust store file (default: $GREENCERT_TRUST_STORE or $GREENCERT_HOME/trust.json)",
    )
    p.set_defaults(func=cmd_trust)

    p = sub.add_parser("log", help="check that the registry's issuance log extends an older signed tree head")
    p.add_argument("action", choices=("consistency",))
    p.add_argument("registry")
    p.add_argument("--old", required=True, help="older tree head you kept (a copy of log/tree-head.json)")
    p.add_argument("--new", default=None, help="newer tree head (default: the registry's current one)")
    p.add_argument("--key", action="append", default=None, help="issuer public key PEM to trust (repeatable)")
    p.add_argument("--trust-store", default=None, help="trust store file")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("revoke", help="add a certificate to the registry's signed revocation list")
    p.add_argument("certificate_id")
    p.add_argument("--registry", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--signing-key", default=None, help="issuer private key PEM (default as for certify)")
    p.add_argument("--at", type=_moment, default=None, help="revocation time (default: now)")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser(
        "registry",
        help="list the registry, rebuild its index, refresh its signed status, adopt it, or rotate its key",
    )
    p.add_argument("action", choices=("list", "rebuild", "refresh", "adopt", "rotate-key"))
    p.add_argument("registry")
    p.add_argument("--at", type=_moment, default=None, help="evaluate expiry at this time (default: now)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.add_argument("--key", action="append", default=None, help="list: issuer public key PEM to trust")
    p.add_argument("--trust-store", default=None, help="list: trust store file")
    p.add_argument(
        "--signing-key",
        default=None,
        help="refresh/adopt (and rebuild, to re-sign): issuer private key PEM (default as for certify)",
    )
    p.add_argument("--old-key", default=None, help="rotate-key: current issuer private key PEM")
    p.add_argument("--new-key", default=None, help="rotate-key: new issuer private key PEM")
    p.add_argument(
        "--compromised",
        action="store_true",
        help="rotate-key: the old key is compromised: certificates it signed stop verifying",
    )
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("report", help="write the SCI, EU EED and GB 40879 reports of a certificate")
    p.add_argument("certificate")
    p.add_argument("--out", default=None, help="folder (default: <certificate>.reports beside it)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("summary", help="print a table of the certificates in a registry, with checked status")
    p.add_argument("registry")
    p.add_argument("--key", action="append", default=None, help="issuer public key PEM to trust")
    p.add_argument("--trust-store", default=None, help="trust store file")
    p.set_defaults(func=cmd_summary)
    _add_sources_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args))
    except GreenCertError as exc:
        code = getattr(exc, "reason", None)
        prefix = f"error[{code}]" if code else "error"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
