"""The command line: clear one-line failures with named exit codes."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import run_inuqueue


def test_an_unknown_flag_is_a_usage_error() -> None:
    result = run_inuqueue("serve", "--no-such-flag")

    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_a_bad_environment_value_names_the_variable() -> None:
    result = run_inuqueue("serve", env={"INUQUEUE_PORT": "seventy"})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "inuqueue: INUQUEUE_PORT='seventy' is not a valid value"
    ]


def test_an_unusable_data_directory_ends_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    result = run_inuqueue("serve", "--port", "0", "--data", str(blocker / "data"))

    assert result.returncode == 69
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("inuqueue:")]
    assert "data directory" in line and "--data" in line


def test_a_busy_port_ends_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_inuqueue(
            "serve", "--port", str(port), "--data", str(tmp_path / "d")
        )

    assert result.returncode == 69
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("inuqueue:")]
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_an_upstream_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    result = run_inuqueue(
        "serve", "--upstream", "localhost:7860", "--data", str(tmp_path)
    )

    assert result.returncode == 2
    assert "http://" in result.stderr


def test_values_out_of_range_are_usage_errors(tmp_path: Path) -> None:
    for flags in (
        ["--max-attempts", "0"],
        ["--max-body-bytes", "-5"],
        ["--shutdown-grace-s", "-1"],
        ["--data", ""],
        ["--shutdown-grace-s", "nan"],
        ["--token", ""],
        ["--upstream-auth", "nocolon"],
    ):
        result = run_inuqueue("serve", "--port", "0", *flags)
        assert result.returncode == 2, flags
        assert result.stderr.strip(), flags


def test_credentials_in_the_upstream_url_are_moved_out_of_it() -> None:
    from inuqueue.cli import split_credentials

    assert split_credentials("http://alice:pw@127.0.0.1:7860", None) == (
        "http://127.0.0.1:7860",
        "alice:pw",
    )
    assert split_credentials("http://127.0.0.1:7860", "bob:x") == (
        "http://127.0.0.1:7860",
        "bob:x",
    )
