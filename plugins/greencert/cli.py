"""``greencert`` command line: a thin caller of the same stage functions the DAG uses.

Conventions (docs/cli.md): ``--registry`` is always the registry (folder or URL) a command
publishes into or reads from, ``--out`` a folder of files the command writes, ``--signing-key``
the issuer's *private* key that signs, ``--key`` an issuer *public* key you trust, ``--at`` the
moment statuses are evaluated at. Progress goes to stderr, only when stderr is a terminal; results
go to stdout. Every exit status is in :data:`EXIT_STATUSES` (printed by ``greencert --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 64
EXIT_NO_INPUT = 66

# The command's own exit statuses; the verification ones come from
# greencert.certificate.verify.EXIT_CODES (one table) with the meanings below.
EXIT_STATUSES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INCOMPLETE: "finished, but not everything: certify-fleet left deployments uncertified, "
    "or summary found no certificate",
    2: "bad input: bundle, manifest, fleet config, scheme or value (the message names file, row, column, time)",
    3: "the evidence failed a critical validation (Great Expectations) expectation",
    4: "a telemetry or grid source failed (unreachable, partial data, missing series)",
    5: "the registry could not be written (nothing half-written is published)",
    EXIT_USAGE: "usage: unknown command or option, missing or malformed argument",
    EXIT_NO_INPUT: "a file or folder named on the command line does not exist, or is not what the "
    "command needs (e.g. not a registry)",
}
VERIFY_REASONS: dict[str, str] = {
    "unreadable": "the certificate file cannot be read or lacks a required field",
    "not-canonical": "the file is not RFC 8785 canonical JSON",
    "bad-signature": "the Ed25519 signature does not match the file's bytes",
    "expired": "past valid_until (at --at, default now)",
    "revoked": "the registry's signed status revokes it",
    "bundle-missing": "the evidence bundle (or a file of it) is missing or a symbolic link",
    "input-hash-mismatch": "an evidence file's sha256 differs from the certificate's",
    "figure-mismatch": "figures recomputed from the evidence differ from the certificate's",
    "evidence-invalid": "the evidence no longer passes validation",
    "untrusted-issuer": "signed by a key you do not trust (--key, trust store)",
    "development-key": "signed with a development key (pass --allow-development-key to check it anyway)",
    "status-unknown": "no fresh signed registry status (pass --registry, or --offline to accept)",
    "not-listed": "the registry's signed metadata does not list the certificate",
    "metadata-mismatch": "the signed metadata lists other bytes for it",
    "rollback": "the registry's signed metadata went back in version",
    "bad-metadata": "the registry's signed metadata does not verify",
    "log-inclusion": "the issuance-log inclusion (or, for `log consistency`, consistency) proof fails",
    "scheme-too-old": "graded under a scheme older than --min-scheme",
    "day-certificate-missing": "a month's day has no certificate beside it",
    "day-certificate-invalid": "a month's day certificate does not verify (revoked, tampered, ...)",
    "day-mismatch": "a month's day partial differs from that day's signed certificate",
}


def exit_code_table(verify: bool = True) -> str:
    """The exit statuses as an aligned text table (``--help`` epilogs and docs/cli.md)."""
    rows = list(EXIT_STATUSES.items())
    if verify:
        from greencert.certificate.verify import EXIT_CODES

        rows += [(code, f"verify: {reason}: {VERIFY_REASONS[reason]}") for reason, code in EXIT_CODES.items()]
    return "\n".join(f"  {code:>3}  {text}" for code, text in sorted(rows))


class NoInput(GreenCertError):
    """A path named on the command line does not exist or is not what the command needs."""

    exit_code = EXIT_NO_INPUT


class _Parser(argparse.ArgumentParser):
    """argparse with the documented usage status (64, not argparse's 2, which means bad input here)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _Deprecated(argparse.Action):
    """An older option spelling: still accepted, with a note on stderr naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        print(f"note: {option_string} is deprecated here, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _is_url(path: str | Path) -> bool:
    return "://" in str(path)


def _absolute(path: str) -> str:
    """A local path made absolute (the registry code compares resolved paths); URLs unchanged."""
    return path if _is_url(path) else str(Path(path).resolve())


def _need_dir(path: str | Path, what: str) -> Path:
    """``path`` as a local folder that exists (URLs are left to the code that opens them)."""
    p = Path(path)
    if _is_url(path):
        return p
    if not p.exists():
        raise NoInput(f"no such {what} folder", str(path))
    if not p.is_dir():
        raise NoInput(f"not a folder (a {what} folder is expected)", str(path))
    return p


def _need_registry(path: str | Path) -> Path:
    """An existing registry folder: one with certificates or registry files, not any folder."""
    root = _need_dir(path, "registry")
    if _is_url(path):
        return root
    from greencert.certificate.registry import INDEX_JSON, ISSUER_PEM, KEYS_DIR

    if not any((root / name).exists() for name in ("metadata", INDEX_JSON, ISSUER_PEM, KEYS_DIR)):
        raise NoInput(
            f"not a GreenCert registry (no metadata/, {INDEX_JSON}, {ISSUER_PEM} or {KEYS_DIR}/): check the path",
            str(path),
        )
    return root


# --- progress on stderr (rich), only on a terminal -----------------------------------------------
# The pipeline's stage messages (first word) and what comes next.
_STAGES = {
    "validated": "computing the figures",
    "computed": "grading",
    "graded": "signing and publishing",
    "published": "published",
}


class _StageHandler(logging.Handler):
    """Moves a progress bar on the stage messages the pipeline logs (validated, computed, ...)."""

    def __init__(self, advance: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.advance = advance

    def emit(self, record: logging.LogRecord) -> None:
        first = str(record.msg).split(" ", 1)[0]
        if record.levelno == logging.INFO and first in _STAGES:
            self.advance(_STAGES[first])


def _show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("GREENCERT_NO_PROGRESS")


@contextlib.contextmanager
def progress(
    description: str, total: int | None = None, step: str | None = None, stages: bool = True
) -> Generator[Callable[..., None], None, None]:
    """A rich progress bar on stderr while the block runs (a spinner when ``total`` is None).

    ``step`` is shown after the description until the first stage message replaces it. Yields
    ``update(description=None, advance=0, completed=None)``. Does nothing when stderr is not
    a terminal (pipes, CI, files) or ``GREENCERT_NO_PROGRESS`` is set. While it runs, the pipeline's
    stage messages advance it (unless ``stages`` is False), and warnings print above it.
    """
    if not _show_progress():
        yield lambda *args, **kwargs: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{description}: {step}" if step else description, total=total)

        def update(
            description: str | None = None, advance: float = 0, completed: float | None = None
        ) -> None:
            fields: dict[str, Any] = {"advance": advance}
            if description is not None:
                fields["description"] = description
            if completed is not None:
                fields["completed"] = completed
            bar.update(task, **fields)

        def on_stage(next_step: str) -> None:
            update(description=f"{description}: {next_step}", advance=1 if total else 0)

        logger = logging.getLogger("greencert")
        handler = _StageHandler(on_stage)
        level = logger.level
        root_handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
        streams = [h.setStream(sys.stderr) for h in root_handlers]  # rich's redirected stderr
        if stages:
            logger.addHandler(handler)
        if stages and logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # stage messages reach the bar; the root handler still filters
        try:
            yield update
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            for h, stream in zip(root_handlers, streams, strict=True):
                if stream is not None:
                    h.setStream(stream)


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


def _grade_text(cert: dict[str, Any]) -> str:
    """``B`` or ``B (confirmed C)`` (scheme 2026.3+: the letter is the efficiency grade)."""
    from greencert.certificate import status as statuses

    return statuses.grade_text(cert)


def _statements_text(cert: dict[str, Any]) -> str:
    """``, confirmed at 95 %: C, measurement: GPU sensors only`` for 2026.3+ certificates, else ``""``.

    Appended after ``grade: B (size class ...)``, so the efficiency grade keeps its place in the line.
    """
    from greencert.certificate import status as statuses

    out = ""
    if cert.get("confirmed_grade"):
        out += f", confirmed at 95 %: {cert['confirmed_grade']}"
    if cert.get("measurement_class"):
        out += f", measurement: {statuses.measurement_text(cert)}"
    return out


def _grade_counts(grades: list[str]) -> str:
    from collections import Counter

    counted = Counter(grades)
    return ", ".join(f"{grade} {counted[grade]}" for grade in sorted(counted))


def cmd_certify_fleet(args: argparse.Namespace) -> int:
    from greencert.certificate import status as statuses
    from greencert.fleet import certify_fleet_day, deployment_bundles

    folder = _need_dir(args.fleet_day, "fleet-day")
    bundles = deployment_bundles(folder)
    if not bundles:
        raise NoInput(
            "no deployment bundles here (no fleet.json and no <deployment>/manifest.yaml): "
            "write one with `greencert simulate --fleet`",
            str(args.fleet_day),
        )
    _writable_registry(args.registry)
    args.registry = _absolute(args.registry)
    began = time.perf_counter()
    # The helper process publishes too (its stage messages stay there): a spinner and the time.
    with progress(
        f"certifying {len(bundles)} deployment bundles of {folder.name} on a process pool", stages=False
    ):
        run = certify_fleet_day(
            bundles,
            args.registry,
            args.work_dir,
            args.scheme,
            signing_key=args.signing_key,
            pdf=False,
            partials_dir=args.partials,
            workers=args.workers,
        )
    seconds = time.perf_counter() - began
    rows, grades = [], []
    for deployment, path in sorted(run.certificates.items()):
        cert = _read_published(path)
        m = cert["metrics"]
        grades.append(cert["grade"])
        rows.append(
            (
                deployment,
                _grade_text(cert),
                f"{m['energy_per_million_tokens']['value']:.4f}",
                f"{m['carbon_per_million_tokens']['value']:.1f}",
                (cert.get("grading") or {}).get("size_class") or "-",
                statuses.measurement_text(cert),
                path,
            )
        )
    if rows:
        _print_table(
            ("deployment", "grade", "kWh/Mtok", "gCO2e/Mtok", "size class", "measurement", "certificate"),
            rows,
        )
    for deployment, reason in sorted(run.failures.items()):
        print(f"{deployment}: NOT CERTIFIED: {reason}", file=sys.stderr)
    summary = f"{len(run.certificates)} of {len(bundles)} deployments certified"
    if grades:
        summary += f" (grades: {_grade_counts(grades)})"
    if run.failures:
        summary += f", {len(run.failures)} not certified (reasons above)"
    print(f"{summary}; {run.rows:,} rows in {seconds:.1f} s; registry {args.registry}")
    logging.getLogger("greencert").info(
        "fleet phases: %s", ", ".join(f"{k} {v:.2f} s" for k, v in run.seconds.items())
    )
    return EXIT_OK if not run.failures else EXIT_INCOMPLETE


def _read_published(path: str | Path) -> dict[str, Any]:
    from greencert.files import registry_root

    # Publication returns the certificate with its path: never read it back through a path that
    # another run of the same period may be replacing at this moment.
    published = getattr(path, "certificate", None)
    if published is not None:
        return published
    return json.loads(registry_root(path).read_bytes())  # the registry may be an fsspec URL


def _print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


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
    from greencert.certificate import status as statuses
    from greencert.errors import PublishError
    from greencert.segments import certify_bundle

    _need_dir(args.bundle, "evidence bundle")
    _writable_registry(args.registry)
    args.registry = _absolute(args.registry)
    # A bundle that declares segments (engine, model or GPU change) gives one certificate per segment.
    try:
        bundle = Path(args.bundle)
        with progress(f"certifying {bundle.parent.name}/{bundle.name}", total=4, step="validating"):
            paths = certify_bundle(
                args.bundle,
                args.registry,
                args.scheme,
                args.work_dir,
                signing_key=args.signing_key,
                pdf=False if args.no_pdf else None,
            )
    except OSError as exc:
        # Bundle problems are BundleErrors already; an OSError left is the registry or the work folder.
        raise PublishError(
            f"cannot write ({exc.strerror or exc}); what was published before is kept",
            str(exc.filename or args.registry),
        ) from None
    now = dt.datetime.now(dt.UTC)
    for path in paths:
        cert = _read_published(path)
        m = cert["metrics"]
        e, c = m["energy_per_million_tokens"], m["carbon_per_million_tokens"]
        interval = f" (95 % {e['interval95'][0]:.4g}-{e['interval95'][1]:.4g})" if "interval95" in e else ""
        size_class = (cert.get("grading") or {}).get("size_class")
        print(
            f"certificate {cert['certificate_id']}: grade {cert['grade']}"
            f"{f' (size class {size_class})' if size_class else ''}{_statements_text(cert)}, "
            f"{e['value']:.6g} kWh/Mtok{interval}, "
            f"{c['value']:.6g} gCO2e/Mtok"
        )
        until = cert.get("valid_until")
        expired = until is not None and _utc(str(until)) <= now
        row = {
            "status": statuses.EXPIRED if expired else statuses.VALID,
            "development_key": bool((cert.get("signing") or {}).get("development_key")),
            "valid_until": until,
        }
        print(f"status: {statuses.status_text(row)}")
        if expired:
            print(
                f"warning: {cert['certificate_id']} expired at {until} (certificates are valid for 6 months "
                "after their period): `greencert verify` will reject it; certify a recent period",
                file=sys.stderr,
            )
        elif row["development_key"]:
            print(
                "note: signed with this installation's development key: a test certificate; "
                "`greencert verify` accepts it only with --allow-development-key",
                file=sys.stderr,
            )
        print(path)
    return EXIT_OK


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def cmd_verify(args: argparse.Namespace) -> int:
    from greencert.certificate import status as statuses
    from greencert.certificate.verify import TrustOptions, verify_certificate
    from greencert.errors import VerificationFailed

    certificate = Path(args.certificate)
    if not certificate.exists():
        raise NoInput("no such certificate file", str(certificate))
    if certificate.is_dir():
        raise NoInput("is a folder (a certificate .json file is expected)", str(certificate))
    if args.registry and not _is_url(args.registry):
        _need_dir(args.registry, "registry")
    if args.bundle:
        _need_dir(args.bundle, "evidence bundle")
    try:
        with progress(f"verifying {certificate.name}: signature, status, log, recomputing the figures"):
            result = verify_certificate(
                certificate,
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
    except VerificationFailed as exc:
        print(f"error[{exc.reason}]: {exc}", file=sys.stderr)
        print(f"status: {statuses.verify_status(exc.reason)}", file=sys.stderr)
        return exc.exit_code
    for line in result.lines:
        print(line)
    cert = json.loads(certificate.read_bytes())  # its bytes verified above
    size_class = (cert.get("grading") or {}).get("size_class")
    print(
        f"grade: {cert.get('grade')}"
        + (f" (size class {size_class})" if size_class else "")
        + _statements_text(cert)
    )
    print(f"status: {statuses.verify_status(None, result.development_key)}")
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
    anchor = anchors.get(str(new.document.get("key_id")))
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
    from greencert.certificate import status as statuses

    _need_registry(args.registry)
    with progress(f"checking the certificates of {args.registry}"):
        rows = list_certificates(args.registry, args.at, _reader_anchors(args))
    if args.json:
        for r in rows:
            r["display_status"] = statuses.display_status(r)
        print(json.dumps(rows, indent=1, sort_keys=True))
        return EXIT_OK
    for r in rows:
        energy, carbon = r["energy_kwh_per_mtok"], r["carbon_gco2e_per_mtok"]
        figures = (
            f"{energy:.4g} kWh/Mtok  {carbon:.4g} gCO2e/Mtok"
            if energy is not None and carbon is not None
            else ""
        )
        print(
            f"{r['certificate_id']}  {statuses.grade_text(r)}  {statuses.size_class_text(r)}  "
            f"{statuses.measurement_text(r)}  {figures}  "
            f"{statuses.status_text(r)}"
        )
    print(f"{len(rows)} certificate(s){_count_text(rows)}")
    return EXIT_OK


def _count_text(rows: list[dict[str, Any]]) -> str:
    from greencert.certificate import status as statuses

    counted = {k: v for k, v in statuses.counts(rows).items() if v}
    return ": " + ", ".join(f"{v} {k}" for k, v in counted.items()) if counted else ""


def _reader_anchors(args: argparse.Namespace) -> list:
    from greencert.trust.store import resolve_anchors

    keys: list[str | Path] = [Path(k) for k in getattr(args, "key", None) or []]
    return resolve_anchors(keys, getattr(args, "trust_store", None), use_store=not keys)


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
    from greencert.certificate import status as statuses
    from greencert.certificate.registry import list_certificates

    root = _need_registry(args.registry)
    rows = []
    with progress(f"checking the certificates of {args.registry}"):
        listed = list_certificates(root, args.at, _reader_anchors(args))
    for r in listed:
        energy, carbon = r["energy_kwh_per_mtok"], r["carbon_gco2e_per_mtok"]
        rows.append(
            (
                r["site"],
                r["deployment"],
                r["period"]["start"][:10],
                statuses.grade_text(r),
                statuses.size_class_text(r),
                statuses.measurement_text(r),
                f"{energy:.4f}" if energy is not None else "",
                f"{carbon:.1f}" if carbon is not None else "",
                statuses.status_text(r),
            )
        )
    _print_table(
        (
            "site",
            "deployment",
            "day",
            "grade",
            "size class",
            "measurement",
            "kWh/Mtok",
            "gCO2e/Mtok",
            "status",
        ),
        rows,
    )
    print(f"{len(rows)} certificate(s) in {args.registry}{_count_text(listed)}")
    return EXIT_OK if rows else EXIT_INCOMPLETE


# --- sources check / extract (issue 14): logic in greencert.sources.commands ---------------------
def cmd_sources_check(args: argparse.Namespace) -> int:
    from greencert.sources.commands import check_command

    _need_config(args.config)
    text, ok = check_command(args.config, args.deployment, args.start, args.end, args.json)
    print(text)
    return EXIT_OK if ok else 4


def cmd_extract(args: argparse.Namespace) -> int:
    from greencert.sources.commands import extract

    _need_config(args.config)
    print(extract(args.config, args.deployment, args.start, args.end, args.out))
    return EXIT_OK


def _need_config(path: str) -> None:
    if not Path(path).is_file():
        raise NoInput("no such fleet config file" if not Path(path).exists() else "not a file", path)


def _add_sources_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sources",
        help="inspect where deployments' telemetry comes from",
        description="Inspect where deployments' telemetry comes from (docs/connect-telemetry.md).",
    )
    action = p.add_subparsers(dest="sources_command", required=True, metavar="ACTION")
    c = action.add_parser(
        "check",
        help="query the configured Prometheus: per profile, the series found, scrape interval, labels",
        description=(
            "Query the Prometheus of each deployment pulled from one (nothing is written) and report, "
            "per source profile and role, the query, the series found with their label sets, samples "
            "and scrape interval, label churn stitched, MIG instances and attribution shares; a "
            "deployment whose series are missing is reported with the reason (exit 4)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("config", help="fleet config YAML (e.g. docs/examples/fleet-prometheus.yaml)")
    c.add_argument("--deployment", default=None, help="only this deployment")
    c.add_argument("--start", default=None, help="RFC 3339 (default: one hour before --end)")
    c.add_argument("--end", default=None, help="RFC 3339 (default: the last whole hour)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_sources_check)
    p = sub.add_parser("extract", help="write one deployment's evidence bundle, as the DAG's extract task")
    p.add_argument("config", help="fleet config YAML")
    p.add_argument("deployment", help="deployment name in the fleet config")
    p.add_argument("--start", required=True, help="RFC 3339, e.g. 2026-02-01T00:00:00Z")
    p.add_argument("--end", required=True, help="RFC 3339")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.set_defaults(func=cmd_extract)


TRUST_STORE_HELP = "trust store file (default: $GREENCERT_TRUST_STORE or $GREENCERT_HOME/trust.json)"
PUBLIC_KEY_HELP = (
    "issuer public key PEM to trust (repeatable); without it, the trust store's keys are trusted"
)
SIGNING_KEY_HELP = (
    "issuer private key PEM that signs (default: $GREENCERT_SIGNING_KEY, the Airflow connection "
    "greencert_signing_key, or this installation's development key)"
)
SCHEME_HELP = "grading scheme YAML (default: the packaged scheme, greencert-2026.3)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _registry_option(p: argparse.ArgumentParser, help_text: str, required: bool) -> None:
    """``--registry`` (``--out`` is the older spelling certify and certify-fleet still accept)."""
    p.add_argument(
        "--registry", "--out", dest="registry", required=required, metavar="REGISTRY",
        help=f"{help_text} (folder, or an s3:// or other fsspec URL; --out is the older spelling)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    epilog = (
        "exit statuses:\n" + exit_code_table() + "\n\nOptions mean the same in every command: --registry the "
        "registry, --out a folder this command writes,\n--signing-key the issuer's private key, --key an issuer "
        "public key you trust, --at the moment statuses\nare evaluated at. Statuses: valid, development key, "
        "superseded, expired, revoked, unverified.\nDocs: docs/cli.md."
    )
    parser = _Parser(
        prog="greencert",
        description="Certify energy and carbon per million AI tokens.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage (and fleet phase times)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("simulate", help="write deterministic sample-fleet evidence bundles")
    p.add_argument("--out", required=True, help="folder to write the bundles into (<deployment>/<day>/)")
    p.add_argument(
        "--date", type=_day, default=_day("2026-01-01"),
        help="first day (UTC, YYYY-MM-DD), default 2026-01-01: pass a recent day for certificates that are "
        "still valid (they expire 6 months after their period)",
    )  # fmt: skip
    p.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    p.add_argument("--step", type=float, default=15.0, help="sampling interval in seconds (default 15)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format (default csv)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes; default 0)")
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
    p.add_argument("fleet_day", help="folder of one day's deployment bundles (with fleet.json)")
    _registry_option(p, "registry to publish into", required=True)
    p.add_argument("--work-dir", required=True, help="stage outputs, one folder per deployment")
    p.add_argument("--partials", default=None, help="also save each deployment's daily partial here")
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p.add_argument("--signing-key", default=None, help=SIGNING_KEY_HELP)
    p.add_argument(
        "--workers", type=_positive_int, default=None,
        help="worker processes (default: one per CPU); the certificates are the same whatever the number",
    )  # fmt: skip
    p.add_argument(
        "--key", dest="signing_key", action=_Deprecated, new="--signing-key",
        help="deprecated spelling of --signing-key (elsewhere --key is a public key you trust)",
    )  # fmt: skip
    p.set_defaults(func=cmd_certify_fleet)

    p = sub.add_parser("certify", help="validate, compute, grade and publish one evidence bundle")
    p.add_argument("bundle", help="evidence bundle folder (manifest.yaml, power, tokens[, grid])")
    _registry_option(p, "registry to publish into", required=True)
    p.add_argument("--scheme", default=None, help=SCHEME_HELP)
    p.add_argument("--work-dir", default=None, help="keep stage outputs here (default: a temporary folder)")
    p.add_argument("--signing-key", default=None, help=SIGNING_KEY_HELP)
    p.add_argument("--no-pdf", action="store_true", help="skip the PDF label (no Chromium needed)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser(
        "verify",
        help="check a certificate: trusted issuer, signed status, log inclusion, hashes, recomputed figures",
        description=(
            "Check a certificate: trusted issuer, the registry's signed status, the issuance-log "
            "inclusion proof, canonical form, input hashes, and every figure recomputed from the "
            "evidence. Prints the checks and its status; each failure has its own exit status."
        ),
        epilog="exit statuses:\n" + exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("certificate", help="certificate JSON (<registry>/<site>/<deployment>/<id>.json)")
    p.add_argument("--bundle", default=None, help="evidence bundle (default: the copy published beside it)")
    p.add_argument("--key", action="append", default=None, help=PUBLIC_KEY_HELP)
    p.add_argument("--trust-store", default=None, help=TRUST_STORE_HELP)
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
    p.add_argument("action", choices=("add", "list", "remove"), help="add a key, list the keys, remove one")
    p.add_argument("target", nargs="?", default=None, help="add: public key PEM; remove: key id")
    p.add_argument("--name", default=None, help="add: a name for the issuer")
    p.add_argument("--development", action="store_true", help="add: the key is a development key")
    p.add_argument("--trust-store", default=None, help=TRUST_STORE_HELP)
    p.set_defaults(func=cmd_trust)

    p = sub.add_parser("log", help="check that the registry's issuance log extends an older signed tree head")
    p.add_argument("action", choices=("consistency",), help="consistency: the log only grew")
    p.add_argument("registry", help="registry folder (or fsspec URL)")
    p.add_argument("--old", required=True, help="older tree head you kept (a copy of log/tree-head.json)")
    p.add_argument("--new", default=None, help="newer tree head (default: the registry's current one)")
    p.add_argument("--key", action="append", default=None, help=PUBLIC_KEY_HELP)
    p.add_argument("--trust-store", default=None, help=TRUST_STORE_HELP)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("revoke", help="add a certificate to the registry's signed revocation list")
    p.add_argument("certificate_id", help="id of the certificate to revoke (see `greencert registry list`)")
    p.add_argument("--registry", required=True, help="registry folder (or fsspec URL) holding it")
    p.add_argument(
        "--reason", required=True, help="why, in words (recorded in the signed status and the log)"
    )
    p.add_argument("--signing-key", default=None, help=SIGNING_KEY_HELP)
    p.add_argument("--at", type=_moment, default=None, help="revocation time, RFC 3339 (default: now)")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser(
        "registry",
        help="list the registry, rebuild its index, refresh its signed status, adopt it, or rotate its key",
    )
    p.add_argument(
        "action", choices=("list", "rebuild", "refresh", "adopt", "rotate-key"),
        help="list: certificates with checked status; rebuild: index.json/index.html; refresh: re-sign the "
        "status; adopt: sign an older registry's files; rotate-key: new issuer key",
    )  # fmt: skip
    p.add_argument("registry", help="registry folder (or fsspec URL)")
    p.add_argument("--at", type=_moment, default=None, help="evaluate expiry at this time (default: now)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.add_argument("--key", action="append", default=None, help="list: " + PUBLIC_KEY_HELP)
    p.add_argument("--trust-store", default=None, help="list: " + TRUST_STORE_HELP)
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
    p.add_argument("certificate", help="certificate JSON")
    p.add_argument("--out", default=None, help="folder (default: <certificate>.reports beside it)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("summary", help="print a table of the certificates in a registry, with checked status")
    p.add_argument("registry", help="registry folder (or fsspec URL)")
    p.add_argument("--at", type=_moment, default=None, help="evaluate expiry at this time (default: now)")
    p.add_argument("--key", action="append", default=None, help=PUBLIC_KEY_HELP)
    p.add_argument("--trust-store", default=None, help=TRUST_STORE_HELP)
    p.set_defaults(func=cmd_summary)
    _add_sources_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # the progress bar lowers greencert's level; what prints stays the same
    try:
        return int(args.func(args))
    except GreenCertError as exc:
        code = getattr(exc, "reason", None)
        prefix = f"error[{code}]" if code else "error"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
