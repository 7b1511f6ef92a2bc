"""``verify`` during a publication in flight: it waits for the publication instead of reporting its
half-renamed state, and a real fault still fails (the second look happens under the registry lock)."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import write_golden_bundle
from greencert.certificate import registry as reg
from greencert.certificate.verify import TrustOptions, verify_certificate
from greencert.errors import VerificationFailed
from greencert.pipeline import certify

AT = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)  # inside the golden certificate's validity
OPTIONS = TrustOptions(allow_development_key=True)


def _waiters_on(lock_file: Path) -> int:
    """Processes or threads blocked on ``lock_file`` (Linux /proc/locks marks them with ``->``)."""
    inode = os.stat(lock_file).st_ino
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if "->" in line and line.split()[6].split(":")[-1] == str(inode))


@pytest.fixture()
def published(tmp_path: Path) -> Path:
    return Path(certify(write_golden_bundle(tmp_path / "bundle"), tmp_path / "registry", pdf=False))


def test_a_verify_that_meets_a_publication_in_flight_waits_for_it(published: Path) -> None:
    root = published.parents[2]
    aside = published.with_name(published.name + ".renaming")
    moved, done = threading.Event(), threading.Event()
    problems: list[str] = []

    def publisher() -> None:
        # Holds the registry lock as a publication does between its signed commit and its last
        # rename; the certificate file is away meanwhile (a corrected bundle's old file withdrawn).
        with reg.registry_lock(root):
            published.rename(aside)
            moved.set()
            deadline = time.monotonic() + 120
            while _waiters_on(root / reg.LOCK) == 0:  # the reader is waiting for the lock
                if time.monotonic() > deadline:
                    problems.append("the reader never waited for the registry lock")
                    break
                time.sleep(0.01)
            aside.rename(published)
        done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    assert moved.wait(60)
    result = verify_certificate(published, at=AT, options=OPTIONS)
    thread.join(60)
    assert done.is_set() and not problems, problems
    assert result.lines[-1].startswith("recomputed figures: ok")


def test_a_missing_certificate_file_still_fails_after_the_second_look(published: Path) -> None:
    published.with_name(published.name + ".sig").unlink()
    with pytest.raises(VerificationFailed) as err:
        verify_certificate(published, at=AT, options=OPTIONS)
    assert err.value.reason == "bad-signature"


def test_a_changed_byte_still_fails_after_the_second_look(published: Path) -> None:
    raw = bytearray(published.read_bytes())
    raw[raw.index(b'"grade":"') + 9] ^= 0x01  # another letter: the signature no longer matches
    published.write_bytes(bytes(raw))
    with pytest.raises(VerificationFailed) as err:
        verify_certificate(published, at=AT, options=OPTIONS)
    assert err.value.reason == "bad-signature"
