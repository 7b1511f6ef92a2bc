"""What the CLI says (issue 18): help for every argument, the exit-status table in --help and in the
docs, one meaning per option name, a clear documented error for a missing or mistyped path.

Expected codes come from the tables the CLI is supposed to print (``EXIT_CODES`` of
certificate/verify.py and the CLI's ``EXIT_STATUSES``), and are checked against what it prints,
returns and documents; the paths are made up here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from greencert.certificate.verify import EXIT_CODES
from greencert.cli import EXIT_NO_INPUT, EXIT_STATUSES, EXIT_USAGE, VERIFY_REASONS, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "greencert"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{prefix} {name}")


def test_every_argument_of_every_command_has_help() -> None:
    missing = []
    commands = list(_subparsers(build_parser()))
    assert len(commands) >= 14  # greencert, its 12 commands, sources check
    for name, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_every_verify_reason_has_a_meaning() -> None:
    assert set(VERIFY_REASONS) == set(EXIT_CODES)
    # the command's own statuses do not collide with verify's
    assert not set(EXIT_STATUSES) & set(EXIT_CODES.values())


@pytest.mark.parametrize("argv", [["--help"], ["verify", "--help"]])
def test_help_prints_every_exit_status(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    text = capsys.readouterr().out
    table = dict(re.findall(r"^\s+(\d+)  (.+)$", text.split("exit statuses:")[1], re.M))
    for reason, code in EXIT_CODES.items():
        assert table[str(code)].startswith(f"verify: {reason}: "), (code, reason)
    for code in EXIT_STATUSES:
        assert str(code) in table, code


def test_docs_cli_has_the_same_exit_table() -> None:
    doc = (REPO / "docs" / "cli.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (`[a-z-]+`|) \|", doc, re.M))
    for reason, code in EXIT_CODES.items():
        assert rows.get(str(code)) == f"`{reason}`", (code, reason)
    for code in EXIT_STATUSES:
        assert rows.get(str(code)) == "", code
    assert "docs/cli.md" in (REPO / "README.md").read_text()


def test_usage_errors_exit_64_not_the_bad_input_status(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["no-such-command"], ["certify"], ["verify", "x.json", "--at", "yesterday"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert "usage: greencert" in err and "error:" in err


def test_option_names_have_one_meaning() -> None:
    parser = build_parser()
    signing, trusted = set(), set()
    for name, sub in _subparsers(parser):
        for action in sub._actions:
            if "--signing-key" in action.option_strings:
                signing.add(name)
                assert "private" in action.help, name
            if "--key" in action.option_strings and action.dest != "signing_key":
                trusted.add(name)
                assert "public" in action.help, name
            if "--registry" in action.option_strings:
                assert "registry" in action.help, name
    assert {"greencert certify", "greencert certify-fleet", "greencert revoke"} <= signing
    assert {"greencert verify", "greencert summary", "greencert log"} <= trusted


def test_old_spellings_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    fleet = parser.parse_args(
        ["certify-fleet", "day", "--out", "reg", "--work-dir", "w", "--key", "issuer.pem"]
    )
    assert (fleet.registry, fleet.signing_key) == ("reg", "issuer.pem")
    # --key means a trusted public key elsewhere: the old certify-fleet spelling says so
    assert "--key is deprecated here, use --signing-key" in capsys.readouterr().err
    certify = parser.parse_args(["certify", "bundle", "--out", "reg"])
    assert certify.registry == "reg"
    assert parser.parse_args(["certify", "bundle", "--registry", "reg2"]).registry == "reg2"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["summary", "{missing}"], "no such registry folder"),
        (["registry", "list", "{missing}"], "no such registry folder"),
        (["verify", "{missing}/x.json"], "no such certificate file"),
        (["verify", "{file}", "--registry", "{missing}"], "no such registry folder"),
        (["certify", "{missing}", "--registry", "{tmp}/reg"], "no such evidence bundle folder"),
        (["certify", "{file}", "--registry", "{tmp}/reg"], "not a folder"),
        (["certify-fleet", "{missing}", "--registry", "{tmp}/reg", "--work-dir", "{tmp}/w"], "no such fleet-day folder"),
        (["sources", "check", "{missing}.yaml"], "no such fleet config file"),
        (["summary", "{tmp}"], "not a GreenCert registry"),
        (["registry", "list", "{tmp}"], "not a GreenCert registry"),
    ],
)  # fmt: skip
def test_missing_or_mistyped_paths_are_clear_errors_with_exit_66(
    argv: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder"
    some_file = tmp_path / "file.json"
    some_file.write_text("{}")
    (tmp_path / "stray").mkdir()  # a folder that is not a registry
    values = {"missing": str(missing), "file": str(some_file), "tmp": str(tmp_path)}
    code, out, err = _run([a.format(**values) for a in argv], capsys)
    assert code == EXIT_NO_INPUT == 66
    assert err.startswith("error: ") and problem in err, err
    named = missing if "{missing}" in " ".join(argv) else (some_file if "{file}" in argv[1] else tmp_path)
    assert str(named) in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "reg").exists() and not (tmp_path / "w").exists()  # nothing was started


def test_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from greencert.cli import progress

    with progress("working", total=2) as update:  # pytest captures stderr: not a terminal
        update(advance=1)
    assert capsys.readouterr().err == ""
