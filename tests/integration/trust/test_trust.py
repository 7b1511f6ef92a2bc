"""Trust end to end: certificates signed by a key made with openssl, checked with openssl and
`greencert verify`; every tampering case fails with its own reason; recertification is byte-identical;
the label renders to a one-page PDF (headless Chromium, checked with poppler); the registry lists
every certificate of the sample fleet.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import write_golden_bundle
from greencert.certificate import registry as reg
from greencert.certificate.issue import publish_certificate
from greencert.certificate.render import GRADE_COLOURS
from greencert.certificate.verify import EXIT_CODES
from greencert.cli import main
from greencert.pipeline import certify
from trust_helpers import new_key, openssl, run_cli

pytestmark = pytest.mark.integration

VALID_AT = "2026-03-01T00:00:00Z"  # the golden period is 2026-01-01 00:00-01:00; valid 6 months
OPENSSL_OK = "Signature Verified Successfully"


def openssl_verify(pem: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin", "-in", str(cert),
        "-sigfile", f"{cert}.sig", check=False,
    )  # fmt: skip


def openssl_key_id(pem: Path) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pem), "-outform", "DER"], capture_output=True, check=True
    ).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True)
    return digest.stdout.decode().split()[0][:32]


def tree(root: Path) -> dict[str, bytes]:
    """The certificate files; registry-wide signed state (index, TUF metadata, issuance log and proofs)
    carries the time it was signed and is left out."""
    skip = {"index.json", "index.html", ".index.lock"}
    return {
        rel: p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name not in skip
        and not (rel := p.relative_to(root).as_posix()).startswith(("metadata/", "log/"))
        and not rel.endswith(".log.json")
    }


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENCERT_HOME", str(base / "home"))
        mp.delenv("GREENCERT_SIGNING_KEY", raising=False)
        private, public = new_key(base, "issuer")
        bundle = write_golden_bundle(base / "bundle")
        cert = Path(certify(bundle, base / "registry", work_dir=base / "work", signing_key=private, pdf=True))
    return {
        "base": base,
        "bundle": bundle,
        "private": private,
        "public": public,
        "cert": cert,
        "registry": base / "registry",
        "work": base / "work",
    }


@pytest.fixture
def copy(issued: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the registry to tamper with; returns (registry, certificate)."""
    root = tmp_path / "registry"
    shutil.copytree(issued["registry"], root)
    return root, root / issued["cert"].relative_to(issued["registry"])


def test_openssl_verifies_the_published_certificate(issued: dict[str, Path]) -> None:
    cert = issued["cert"]
    beside = cert.with_name(cert.name.removesuffix(".json") + ".issuer.pem")
    for pem in (issued["public"], beside, issued["registry"] / "issuer.pem"):
        result = openssl_verify(pem, cert)
        assert result.returncode == 0, result.stderr
        assert OPENSSL_OK in result.stdout
    assert beside.read_bytes() == issued["public"].read_bytes()
    signing = json.loads(cert.read_bytes())["signing"]
    assert signing["key_id"] == openssl_key_id(issued["public"])
    assert signing["development_key"] is False
    assert len(Path(f"{cert}.sig").read_bytes()) == 64
    assert (issued["registry"] / "keys" / f"{signing['key_id']}.pem").read_bytes() == beside.read_bytes()


def test_greencert_verify_passes(issued: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "verify", str(issued["cert"]), "--key", str(issued["public"]), "--at", VALID_AT
    )
    assert code == 0, err
    assert "signature: ok" in out and "recomputed figures: ok" in out
    kid = openssl_key_id(issued["public"])
    assert f"issuer: trusted issuer.pub.pem (key {kid}; pinned with --key" in out  # names issuer and fingerprint
    assert "status: issued, not revoked (signed registry status v" in out  # found three levels up
    assert "issuance log: entry 1 of 1" in out and "(inclusion proof ok)" in out
    from greencert.grading import load_scheme

    assert f"scheme: {load_scheme().version} (current)" in out  # the default scheme supersedes nothing


def test_certificate_records_validity_and_stack(issued: dict[str, Path]) -> None:
    cert = json.loads(issued["cert"].read_bytes())
    assert cert["issued_at"] == "2026-01-01T01:00:00Z"
    assert cert["valid_until"] == "2026-07-01T01:00:00Z"  # six months, from the scheme
    assert cert["software_stack"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert cert["software_stack"]["hardware"] == "1x NVIDIA H100 80GB"


def test_tampered_digit_fails_bad_signature(
    issued: dict[str, Path], copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, cert = copy
    raw = cert.read_bytes()
    match = re.search(rb'"energy_per_million_tokens":\{[^}]*"value":(\d)', raw)
    assert match is not None
    digit = match.group(1)
    tampered = raw[: match.start(1)] + str((int(digit) + 1) % 10).encode() + raw[match.end(1) :]
    assert len(tampered) == len(raw) and tampered != raw
    cert.write_bytes(tampered)
    code, _, err = run_cli(capsys, "verify", str(cert), "--key", str(issued["public"]), "--at", VALID_AT)
    assert code == EXIT_CODES["bad-signature"] == 12
    assert "error[bad-signature]" in err and "signature does not match" in err
    result = openssl_verify(issued["public"], cert)
    assert result.returncode != 0 and OPENSSL_OK not in result.stdout


def test_another_pinned_key_is_not_the_issuer(
    issued: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, other_pub = new_key(tmp_path, "other")
    code, _, err = run_cli(capsys, "verify", str(issued["cert"]), "--key", str(other_pub), "--at", VALID_AT)
    assert code == EXIT_CODES["untrusted-issuer"] == 20
    assert openssl_key_id(other_pub) in err  # the message names the key it trusted
    assert openssl_verify(other_pub, issued["cert"]).returncode != 0


def test_expired_fails(issued: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pin = ("--key", str(issued["public"]))
    code, _, err = run_cli(capsys, "verify", str(issued["cert"]), *pin, "--at", "2026-07-01T01:00:00Z")
    assert code == EXIT_CODES["expired"] == 14
    assert "error[expired]" in err and "2026-07-01T01:00:00Z" in err
    code, _, _ = run_cli(capsys, "verify", str(issued["cert"]), *pin, "--at", "2026-07-01T00:59:59Z")
    assert code == 0


def test_recertification_is_byte_identical(issued: dict[str, Path], tmp_path: Path) -> None:
    again = Path(certify(issued["bundle"], tmp_path / "again", signing_key=issued["private"], pdf=True))
    first, second = tree(issued["registry"]), tree(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert again.name == issued["cert"].name
    assert any(name.endswith(".pdf") for name in first)


def test_dev_key_certificates_are_identical_and_refused_unless_allowed(
    issued: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    one = Path(certify(issued["bundle"], tmp_path / "one", pdf=False))
    two = Path(certify(issued["bundle"], tmp_path / "two", pdf=False))
    assert one.read_bytes() == two.read_bytes()
    assert Path(f"{one}.sig").read_bytes() == Path(f"{two}.sig").read_bytes()
    assert json.loads(one.read_bytes())["signing"]["development_key"] is True
    assert "DEVELOPMENT key" in one.with_suffix(".html").read_text()
    assert openssl_verify(tmp_path / "one" / "issuer.pem", one).returncode == 0
    # This installation trusts its own development key, and still refuses it without the flag.
    code, _, err = run_cli(capsys, "verify", str(one), "--at", VALID_AT)
    assert code == EXIT_CODES["development-key"] == 21, err
    code, out, err = run_cli(capsys, "verify", str(one), "--at", VALID_AT, "--allow-development-key")
    assert code == 0, err
    assert "WARNING: signed with a development key" in out


def read_ppm(path: Path) -> np.ndarray:
    """Binary PPM (P6) as an (h, w, 3) uint8 array; the header is 'P6 w h maxval' then one whitespace."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    assert fields[0] == b"P6" and fields[3] == b"255"
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(data[pos + 1 : pos + 1 + w * h * 3], dtype=np.uint8).reshape(h, w, 3)


def test_pdf_label_renders_on_one_page(issued: dict[str, Path], tmp_path: Path) -> None:
    pdf = issued["cert"].with_suffix(".pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M), info
    assert re.search(r"^Page size:.*pts \(A4\)", info, re.M), info
    subprocess.run(["pdftoppm", "-r", "40", "-singlefile", str(pdf), str(tmp_path / "page")], check=True)
    pixels = read_ppm(tmp_path / "page.ppm")
    # A4 at 40 dpi: 8.27 x 11.69 in -> 331 x 468 pixels.
    assert abs(pixels.shape[1] - 331) <= 1 and abs(pixels.shape[0] - 468) <= 1
    ink = (pixels < 200).any(axis=2).mean()
    assert 0.03 < ink < 0.6, f"share of non-white pixels {ink:.3f}"

    def count(hex_colour: str, tol: int = 12, rows: slice = slice(None)) -> int:
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels[rows].astype(int) - rgb).max(axis=2) <= tol).sum())

    grade = json.loads(issued["cert"].read_bytes())["grade"]
    assert count(GRADE_COLOURS[grade]) > 150  # the achieved band and the big grade badge
    # The chart sits below the scale, the why-text and the figures (docs/label.md): its energy bars
    # are a large green area in the second half of the page.
    height = pixels.shape[0]
    assert count("#4bae32", rows=slice(height // 2, height * 3 // 4)) > 1000
    # Every other band is drawn, dimmed (CSS opacity 0.8 over white).
    for other in set(GRADE_COLOURS) - {grade}:
        rgb = [int(GRADE_COLOURS[other][i : i + 2], 16) for i in (1, 3, 5)]
        dimmed = "#" + "".join(f"{round(0.8 * c + 0.2 * 255):02x}" for c in rgb)
        assert count(dimmed, tol=16) > 20, f"band {other} missing"


def test_reports_published(issued: dict[str, Path]) -> None:
    folder = issued["cert"].with_suffix(".reports")
    assert sorted(p.name for p in folder.iterdir()) == ["eu-eed.json", "gb-40879.json", "sci.json", "sci.md"]
    gb = json.loads((folder / "gb-40879.json").read_text())
    assert gb["pue"] == 1.2 and gb["grade"] == 1  # the golden bundle declares PUE 1.2
    sci = json.loads((folder / "sci.json").read_text())
    assert sci["score"]["unit"] == "gCO2e/Mtok"
    assert {c["symbol"] for c in sci["coefficients"]} >= {"E", "I", "M", "R"}


def test_markup_in_telemetry_is_escaped_in_label_and_index(issued: dict[str, Path], tmp_path: Path) -> None:
    graded = json.loads((issued["work"] / "graded.json").read_text())
    graded["scope"]["model"] = "<script>alert(1)</script>"
    validation = (issued["work"] / "validation.json").read_bytes()
    cert = Path(
        publish_certificate(graded, issued["bundle"], validation, tmp_path / "reg", issued["private"], False)
    )
    for page in (cert.with_suffix(".html"), tmp_path / "reg" / "index.html"):
        html = page.read_text()
        assert "<script>alert(1)" not in html, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, page


def test_unsafe_site_cannot_leave_the_registry(issued: dict[str, Path], tmp_path: Path) -> None:
    from greencert.errors import ConfigError

    graded = json.loads((issued["work"] / "graded.json").read_text())
    graded["scope"]["site"] = "../../etc"
    validation = (issued["work"] / "validation.json").read_bytes()
    with pytest.raises(ConfigError, match="unsafe name"):
        publish_certificate(
            graded, issued["bundle"], validation, tmp_path / "a" / "reg", issued["private"], False
        )
    assert not (tmp_path / "etc").exists() and not any((tmp_path / "a").rglob("*.json"))


def test_fsspec_registry_target(issued: dict[str, Path], tmp_path: Path) -> None:
    """A registry given as a URL goes through fsspec (file:// here, the same code path as s3://)."""
    url = f"file://{tmp_path / 'remote'}"
    cert = certify(issued["bundle"], url, signing_key=issued["private"], pdf=False)
    assert cert.startswith("file://") or cert.startswith(str(tmp_path))
    local = tmp_path / "remote" / issued["cert"].relative_to(issued["registry"])
    assert local.read_bytes() == issued["cert"].read_bytes()
    assert openssl_verify(tmp_path / "remote" / "issuer.pem", local).returncode == 0
    rows = json.loads((tmp_path / "remote" / "index.json").read_text())["certificates"]
    assert [r["certificate_id"] for r in rows] == [issued["cert"].name.removesuffix(".json")]


def test_registry_lists_every_sample_fleet_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from greencert.sources.simulate import SAMPLE_FLEET

    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    assert main(["simulate", "--out", str(tmp_path / "bundles"), "--step", "60"]) == 0
    registry = tmp_path / "registry"
    for bundle in sorted((tmp_path / "bundles").glob("*/2026-01-01")):
        certify(bundle, registry, pdf=False)
    expected = sorted(f"{p.site}.{p.deployment}.20260101T0000Z-20260102T0000Z" for p in SAMPLE_FLEET)
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows = reg.list_certificates(registry, at)
    assert sorted(r["certificate_id"] for r in rows) == expected
    assert {r["status"] for r in rows} == {"valid"}
    index = json.loads((registry / "index.json").read_text())
    assert sorted(r["certificate_id"] for r in index["certificates"]) == expected
    html = (registry / "index.html").read_text()
    for row in rows:
        assert f'href="{row["paths"]["label"]}"' in html
        cert = registry / row["paths"]["json"]
        assert openssl_verify(registry / row["paths"]["public_key"], cert).returncode == 0
    code, out, _ = run_cli(capsys, "registry", "list", str(registry), "--at", VALID_AT)
    assert code == 0 and f"{len(expected)} certificate(s)" in out
