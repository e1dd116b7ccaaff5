"""Command-line parsing (pflag rules, defaults, errors) and the processes' observable behaviour."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from casedata import REPO
from fakecri import HANG, FakeCri, FakeCriThread

from image_prefetcher import cli
from image_prefetcher.cli import DEFAULT_MAX_PARALLEL_PULLS, FETCH_FLAGS, FetchOptions, fetch_options
from image_prefetcher.durations import MINUTE, SECOND
from image_prefetcher.flags import FlagError, HelpRequested, parse_flags
from image_prefetcher.logs import LOGGER_NAME
from infra._util import wait_until


def parse(*argv: str) -> FetchOptions:
    return fetch_options(parse_flags(FETCH_FLAGS, argv))


def test_defaults_match_upstream() -> None:
    options = parse()
    assert options.cri_socket == "/run/containerd/containerd.sock"
    assert (options.docker_config, options.image_list_file, options.metrics_endpoint) == ("", "", "")
    assert options.image_list_timeout == MINUTE
    assert options.initial_pull_attempt_timeout == 30 * SECOND
    assert options.max_pull_attempt_timeout == 5 * MINUTE
    assert options.overall_timeout == 20 * MINUTE
    assert options.initial_pull_attempt_delay == SECOND
    assert options.max_pull_attempt_delay == 10 * MINUTE
    assert options.debug is False
    # The one default that is not upstream's: the Go tool pulls everything at once (documented difference).
    assert options.max_parallel_pulls == 32
    assert (options.pull_policy, options.not_found, options.log_format) == ("Always", "retry", "text")
    assert options.cri_connect_timeout == 60 * SECOND
    assert options.termination_log == "/dev/termination-log"
    assert (options.parallel_nodes, options.instance_name, options.lease_namespace) == (0, "", "")
    assert (options.lease_duration, options.lease_unreachable_timeout) == (30 * SECOND, MINUTE)


def test_the_collection_renders_no_flag_for_the_agents_default_pull_cap() -> None:
    """The collection leaves --max-parallel-pulls out when it equals the agent's default: the two must agree."""
    settings = (REPO / "plugins" / "module_utils" / "_settings.py").read_text()
    match = re.search(r"^AGENT_MAX_PARALLEL_PULLS = (\d+)$", settings, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == DEFAULT_MAX_PARALLEL_PULLS == parse().max_parallel_pulls


def test_mixed_flags_and_positionals() -> None:
    options = parse("a", "--cri-socket=/x.sock", "b", "--overall-timeout", "1h30m", "--debug", "--", "--c", "-d")
    assert options.positional_images == ("a", "b", "--c", "-d")
    assert options.cri_socket == "/x.sock" and options.debug and options.overall_timeout == 90 * MINUTE


@pytest.mark.parametrize(
    ("argv", "debug", "images"),
    [
        (["--debug"], True, ()),
        (["--debug=false"], False, ()),
        (["--debug=T"], True, ()),
        (["--debug", "false"], True, ("false",)),
    ],  # pflag quirk: `--debug false` leaves `false` as an image
)
def test_bool_flag_forms(argv: list[str], debug: bool, images: tuple[str, ...]) -> None:
    options = parse(*argv)
    assert (options.debug, options.positional_images) == (debug, images)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-debug"], "unknown shorthand flag: 'd' in -debug"),
        (["--deb"], "unknown flag: --deb"),  # no abbreviations
        (["--cri-socket"], "flag needs an argument: --cri-socket"),
        (
            ["--overall-timeout=1d"],
            'invalid argument "1d" for "--overall-timeout" flag: time: unknown unit "d" in duration "1d"',
        ),
        (
            ["--debug=maybe"],
            'invalid argument "maybe" for "--debug" flag: strconv.ParseBool: parsing "maybe": invalid syntax',
        ),
        (
            ["--max-parallel-pulls=x"],
            'invalid argument "x" for "--max-parallel-pulls" flag: strconv.ParseInt: parsing "x": invalid syntax',
        ),
        (
            ["--pull-policy=Never"],
            'invalid argument "Never" for "--pull-policy" flag: must be one of Always, IfNotPresent',
        ),
        (["--initial-pull-attempt-timeout=0s"], "--initial-pull-attempt-timeout must be greater than 0, got 0s"),
        (["--overall-timeout=-1s"], "--overall-timeout must be greater than 0, got -1s"),
        (["--initial-pull-attempt-delay=-1s"], "--initial-pull-attempt-delay must not be negative, got -1s"),
        (["--max-parallel-pulls=-1"], "--max-parallel-pulls must be 0 (unlimited) or more, got -1"),
        (["--parallel-nodes=-2"], "--parallel-nodes must be 0 (unlimited) or more, got -2"),
        (["--lease-duration=900ms"], "--lease-duration must be at least 1s, got 900ms"),
        (["--lease-unreachable-timeout=-1s"], "--lease-unreachable-timeout must not be negative, got -1s"),
    ],
)
def test_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as caught:
        parse(*argv)
    assert str(caught.value) == message


def test_help_flags() -> None:
    for argv in (["-h"], ["x", "--help"]):
        with pytest.raises(HelpRequested):
            parse(*argv)


@pytest.fixture(autouse=True)
def _restore_agent_logger() -> Iterator[None]:
    """`fetch` run in-process points the agent's log handler at the captured stderr; drop it afterwards."""
    logger = logging.getLogger(LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_root_without_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys) == (0, "Please use one of the subcommands. See --help\n", "")


def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "fech")
    assert code == 1 and out == ""
    assert err.startswith('Error: unknown command "fech" for "image-prefetcher" (did you mean fetch?)\n')


def test_fetch_help_shows_go_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "fetch", "--help")
    assert code == 0
    for text in (
        "--overall-timeout duration",
        "(default 20m0s)",
        "(default 1m0s)",
        "(default 10m0s)",
        '(default "/run/containerd/containerd.sock")',
        "--max-parallel-pulls int",
        "--parallel-nodes int",
        "--lease-unreachable-timeout duration",
    ):
        assert text in out


def read_summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_bytes())
    return summary


def assert_fatal_summary(path: Path, err: str) -> dict[str, Any]:
    """DESIGN.md: complete:false, zero counts and `fatal` = the printed one-line error, within 4096 bytes."""
    assert len(path.read_bytes()) <= 4096
    summary = read_summary(path)
    assert summary["complete"] is False
    assert [summary[key] for key in ("ok", "failed", "skipped", "bytes", "attempts")] == [0, 0, 0, 0, 0]
    assert summary["errors"] == {} and summary["retries"] == {}
    assert "Error: " + summary["fatal"] == err.splitlines()[-1]
    return summary


def test_fetch_error_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(capsys, "fetch", "--overall-timeout=5", f"--termination-log={tmp_path}/t")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith('Error: invalid argument "5" for "--overall-timeout" flag')
    assert_fatal_summary(tmp_path / "t", err)


def test_invalid_flag_value_after_validation_writes_fatal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(capsys, "fetch", "--overall-timeout=0s", "--termination-log", f"{tmp_path}/t")
    assert code == 1
    assert_fatal_summary(tmp_path / "t", err)["fatal"].startswith("--overall-timeout must be greater than 0")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "/dev/termination-log"),
        (["--termination-log=/x/t", "--bogus"], "/x/t"),
        (["--bogus", "--termination-log", "/x/t"], "/x/t"),
        (["--docker-config", "--termination-log", "img"], "/dev/termination-log"),  # the docker config's value
        (["--debug", "--termination-log", "/x/t", "--overall-timeout=5"], "/x/t"),
        (["--overall-timeout=5", "--termination-log"], None),  # its value cannot be told: no summary
        (["--", "--termination-log=/x/t"], "/dev/termination-log"),  # after --: an image name
    ],
)
def test_termination_log_of_an_unparsable_command_line(argv: list[str], expected: str | None) -> None:
    assert cli.termination_log_from_argv(FETCH_FLAGS, argv) == expected


def test_flag_error_without_a_usable_termination_log_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_main(capsys, "fetch", "--overall-timeout=5", "--termination-log")
    assert code == 1 and list(tmp_path.iterdir()) == []


def test_sleep_rejects_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "sleep", "--debug")
    assert code == 1 and "unknown flag: --debug" in err


def test_unreadable_list_fails_before_cri(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys, "fetch", f"--image-list-file={tmp_path}/none.txt", f"--termination-log={tmp_path}/t"
    )
    assert code == 1
    assert err.splitlines()[-1] == f"Error: open {tmp_path}/none.txt: no such file or directory"
    assert_fatal_summary(tmp_path / "t", err)


def test_bad_docker_config_is_fatal_without_secrets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"auths": {"quay.io": {"password": "s3cr3t-pw", "auth": "pants"}}}')
    code, _, err = run_main(capsys, "fetch", f"--docker-config={config}", f"--termination-log={tmp_path}/t", "img")
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: failed to load image pull secrets: unmarshalling docker config failed: "
        "illegal base64 data at input byte 4"
    )
    assert "s3cr3t" not in err
    summary = assert_fatal_summary(tmp_path / "t", err)
    assert "illegal base64 data" in summary["fatal"]
    text = (tmp_path / "t").read_text()
    assert "s3cr3t" not in text and "pants" not in text


def test_bad_credential_provider_yaml_is_one_line_without_its_source(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "credprovider.yaml"
    config.write_text("kind: CredentialProviderConfig\nproviders:\n  - env: [{name: TOKEN, value: s3cr3t-token]\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    code, _, err = run_main(
        capsys,
        "fetch",
        f"--image-credential-provider-config={config}",
        f"--image-credential-provider-bin-dir={bin_dir}",
        f"--termination-log={tmp_path}/t",
        "img",
    )
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("Error: failed to initialize credential provider plugins: failed to read credential "
                          "provider config: error converting YAML to JSON: while parsing a flow mapping")
    assert "line 3, column" in err and "s3cr3t" not in err
    assert "s3cr3t" not in assert_fatal_summary(tmp_path / "t", err)["fatal"]


def test_error_text_is_one_line() -> None:
    assert cli.error_text(ValueError("a\n  in x, line 1:\n    secret: v\n    ^\nproblem")) == "a in x, line 1: problem"
    assert cli.error_text(ValueError("plain")) == "plain"


# --- processes -----------------------------------------------------------------------------------------


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "agent" / "src"), env.get("PYTHONPATH", "")])
    env.pop("NODE_NAME", None)
    return env


def start_agent(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "image_prefetcher", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(),
    )


def finish(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def test_missing_cri_socket_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    code, _, err = finish(
        start_agent(
            "fetch",
            f"--cri-socket={tmp_path}/cri.sock",
            "--cri-connect-timeout=1s",  # the agent promises to end within this + 10 s (DESIGN.md), start-up included
            f"--termination-log={tmp_path}/termination-log",
            "img",
        )
    )
    assert code == 1
    assert err.splitlines()[-1] == (
        f"Error: CRI runtime at unix://{tmp_path}/cri.sock did not answer within 1s: "
        f"socket {tmp_path}/cri.sock does not exist"
    )
    assert time.monotonic() - started < 1 + 10
    summary = assert_fatal_summary(tmp_path / "termination-log", err)
    assert summary["fatal"].startswith(f"CRI runtime at unix://{tmp_path}/cri.sock did not answer within 1s")


@pytest.mark.parametrize("kind", ["directory", "regular file"])
def test_a_cri_socket_path_that_is_not_a_socket_fails_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cri.sock"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("")
    connect_timeout_s = 60
    started = time.monotonic()
    code, _, err = finish(
        start_agent(
            "fetch",
            f"--cri-socket={path}",
            f"--cri-connect-timeout={connect_timeout_s}s",
            f"--termination-log={tmp_path}/termination-log",
            "img",
        ),
        timeout=connect_timeout_s + 30,
    )
    assert code == 1
    assert err.splitlines()[-1] == f"Error: CRI socket {path} is not a socket (it is a {kind})"
    assert time.monotonic() - started < connect_timeout_s  # it did not wait for the connect timeout
    assert_fatal_summary(tmp_path / "termination-log", err)


def test_not_a_socket_tells_the_kind(tmp_path: Path) -> None:
    import socket as socketlib

    from image_prefetcher.cri import not_a_socket

    assert not_a_socket(str(tmp_path / "missing")) is None  # may appear later
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        server.bind(str(tmp_path / "real.sock"))
        assert not_a_socket(str(tmp_path / "real.sock")) is None
        (tmp_path / "link.sock").symlink_to(tmp_path / "real.sock")
        assert not_a_socket(str(tmp_path / "link.sock")) is None
    finally:
        server.close()
    os.mkfifo(tmp_path / "fifo")
    assert not_a_socket(str(tmp_path / "fifo")) == f"CRI socket {tmp_path}/fifo is not a socket (it is a named pipe)"
    assert not_a_socket("/dev/null") == "CRI socket /dev/null is not a socket (it is a character device)"


def test_socket_appearing_late_is_waited_for(tmp_path: Path) -> None:
    fake = FakeCri(tmp_path / "cri.sock")
    process = start_agent(
        "fetch",
        f"--cri-socket={fake.socket_path}",
        "--cri-connect-timeout=30s",
        f"--termination-log={tmp_path}/termination-log",
        "r/a:v1",
    )
    try:
        # The runtime starts only once the agent is waiting for it (it logs this line just before it looks for the
        # socket), however long the agent took to start.
        assert process.stderr is not None
        lines = iter(process.stderr.readline, "")
        assert any('msg="starting to pull images"' in line for line in lines), "the agent never started pulling"
        with FakeCriThread(fake):
            code, _, err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert json.loads((tmp_path / "termination-log").read_text())["ok"] == 1


def test_sigterm_cancels_pulls_and_writes_a_partial_summary(tmp_path: Path) -> None:
    fake = FakeCri(tmp_path / "cri.sock", scripts={"r/stall:v1": [HANG]}, present=set())
    termination_log = tmp_path / "termination-log"
    with FakeCriThread(fake):
        # One pull at a time, the quick image first: once the stalled pull has reached the runtime, the quick image
        # has ended in the agent too (its size lookup included), so the partial summary holds it whatever the speed.
        process = start_agent(
            "fetch",
            f"--cri-socket={fake.socket_path}",
            f"--termination-log={termination_log}",
            "--max-parallel-pulls=1",
            "r/ok:v1",
            "r/stall:v1",
        )
        try:
            assert wait_until(lambda: any(c.image == "r/stall:v1" for c in fake.calls), 60), "the pull never started"
            process.send_signal(signal.SIGTERM)
            code, _, err = finish(process)
        finally:
            if process.poll() is None:
                process.kill()
        stall = next(c for c in fake.calls if c.image == "r/stall:v1")
        wait_until(lambda: stall.cancelled, 30)  # the server learns about the cancellation a moment later
    assert code == 143
    assert stall.cancelled  # the RPC really was cancelled, not left running
    summary: dict[str, Any] = json.loads(termination_log.read_text())
    assert summary["complete"] is False and summary["ok"] == 1 and summary["failed"] == 1
    assert summary["errors"]["r/stall:v1"].startswith("cancelled: ")
    assert "fetch interrupted" in err


def test_overall_timeout_is_a_hard_bound_and_exit_is_0(tmp_path: Path) -> None:
    fake = FakeCri(tmp_path / "cri.sock", scripts={"r/stall:v1": [HANG]})
    termination_log = tmp_path / "termination-log"
    with FakeCriThread(fake):
        started = time.monotonic()
        code, _, _ = finish(
            start_agent(
                "fetch",
                f"--cri-socket={fake.socket_path}",
                f"--termination-log={termination_log}",
                "--overall-timeout=2s",
                "--initial-pull-attempt-timeout=1m",
                "--log-format=json",
                "r/stall:v1",
            )
        )
        elapsed = time.monotonic() - started
    assert code == 0 and elapsed < 2 + 10
    summary = json.loads(termination_log.read_text())
    assert summary["complete"] is False and summary["errors"]["r/stall:v1"].startswith("timeout: ")


def test_json_logs_are_json_lines(tmp_path: Path) -> None:
    fake = FakeCri(tmp_path / "cri.sock")
    with FakeCriThread(fake):
        code, _, err = finish(
            start_agent(
                "fetch",
                f"--cri-socket={fake.socket_path}",
                "--log-format=json",
                f"--termination-log={tmp_path}/t",
                "r/a:v1",
            )
        )
    assert code == 0
    records = [json.loads(line) for line in err.splitlines()]
    assert {"time", "level", "msg"} <= set(records[0])
    assert any(r["msg"] == "image pulled successfully" and r["image"] == "r/a:v1" for r in records)


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupt")])
def test_sleep_until_signal(signum: int, name: str) -> None:
    process = start_agent("sleep", "ignored-arg")
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == "Sleeping...\n"
        process.send_signal(signum)
        code, _, err = finish(process, timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0 and err == f"Terminating due to {name}\n"
