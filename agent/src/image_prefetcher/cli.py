"""Command line of `image-prefetcher`: `fetch`, `sleep`, `aggregate-metrics` (a drop-in for the Go tool's CLI).

Errors print one line `Error: <msg>` plus a usage hint to stderr and exit 1 (cobra prints the usage text and the
message twice; one line is easier to read in pod logs).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from image_prefetcher.durations import MINUTE, SECOND, format_duration
from image_prefetcher.errors import CommandError
from image_prefetcher.flags import Flag, FlagError, HelpRequested, ParsedArgs, flag_usage, parse_flags

PROG = "image-prefetcher"
# The Go tool starts every pull at once. Beyond about 100 concurrent pulls containerd 2.x completes none: each pull's
# progress tracker lists every ingest in flight, and the metadata store's single writer serialises the rest, so all
# attempts time out and their work is thrown away (docs/runtimes.md, "Many images at once"). 32 keeps clear of that
# on containerd 1.6 and 2.x and CRI-O, and is more than a registry's bandwidth needs.
DEFAULT_MAX_PARALLEL_PULLS = 32

FETCH_FLAGS: tuple[Flag, ...] = (
    Flag("cri-socket", "string", "/run/containerd/containerd.sock", "Path to CRI UNIX socket."),
    Flag("docker-config", "string", "", "Path to dockercfg file holding image pull secrets."),
    Flag("image-list-file", "string", "", "Path to text file containing images to pull (one per line)."),
    Flag("metrics-endpoint", "string", "", "A host:port to submit image pull metrics to."),
    Flag("image-credential-provider-config", "string", "", "Path to credential provider plugin config file."),
    Flag("image-credential-provider-bin-dir", "string", "", "Path to credential provider plugin binary directory."),
    Flag("image-list-timeout", "duration", 1 * MINUTE, "Timeout for image list calls (for debugging)."),
    Flag("initial-pull-attempt-timeout", "duration", 30 * SECOND, "Timeout for initial image pull call."),
    Flag("max-pull-attempt-timeout", "duration", 5 * MINUTE, "Maximum timeout for image pull call (doubles)."),
    Flag("overall-timeout", "duration", 20 * MINUTE, "Hard deadline for the whole run."),
    Flag("initial-pull-attempt-delay", "duration", 1 * SECOND, "Delay before the first retry (doubles)."),
    Flag("max-pull-attempt-delay", "duration", 10 * MINUTE, "Maximum delay between retries."),
    Flag("debug", "bool", False, "Debug logging, plus listing the runtime's images before and after."),
    Flag(
        "max-parallel-pulls",
        "int",
        DEFAULT_MAX_PARALLEL_PULLS,
        "Maximum images pulled at once (0 = unlimited, as the Go tool).",
    ),
    Flag(
        "pull-policy",
        "choice",
        "Always",
        "Always, or IfNotPresent to skip images already present.",
        ("Always", "IfNotPresent"),
    ),
    Flag(
        "not-found", "choice", "retry", "What a NOT_FOUND pull error does: retry, or fail at once.", ("retry", "fail")
    ),
    Flag("cri-connect-timeout", "duration", 60 * SECOND, "How long to wait at start-up for the CRI socket to answer."),
    Flag("log-format", "choice", "text", "Log format on stderr: text or json.", ("text", "json")),
    Flag(
        "termination-log",
        "string",
        "/dev/termination-log",
        "Where the JSON result summary is written (skipped when its directory does not exist).",
    ),
    Flag(
        "parallel-nodes",
        "int",
        0,
        "Maximum nodes of this instance pulling at once, through the Leases <instance>-slot-<i> (0 = unlimited).",
    ),
    Flag("instance-name", "string", "", "Instance name for the node-slot Leases (default $INSTANCE_NAME)."),
    Flag(
        "lease-namespace",
        "string",
        "",
        "Namespace of the node-slot Leases (default $POD_NAMESPACE, else the service account's namespace).",
    ),
    Flag("lease-duration", "duration", 30 * SECOND, "How long a node slot stays held without renewal."),
    Flag(
        "lease-unreachable-timeout",
        "duration",
        1 * MINUTE,
        "How long the API server may not answer while waiting for a node slot before pulling without one.",
    ),
    Flag(
        "canary",
        "bool",
        False,
        "With --parallel-nodes: the first node pulls alone first; the images it finds invalid or missing "
        "(--not-found=fail) are skipped by every later node.",
    ),
    Flag(
        "progress-interval",
        "duration",
        0,
        "How often the progress of the pulls is written to this pod's annotation prefetch.stackrox.io/progress "
        "(0s = never).",
    ),
)

AGGREGATE_FLAGS: tuple[Flag, ...] = (
    Flag("grpc-port", "int", 8443, "Port for the gRPC metrics Submit endpoint."),
    Flag("http-port", "int", 8080, "Port for the HTTP /metrics endpoint."),
    Flag("debug", "bool", False, "Debug logging."),
)


@dataclass(frozen=True)
class FetchOptions:
    """Every `fetch` setting; durations in nanoseconds (Go form), images in list order (file first)."""

    cri_socket: str
    docker_config: str
    image_list_file: str
    metrics_endpoint: str
    image_credential_provider_config: str
    image_credential_provider_bin_dir: str
    image_list_timeout: int
    initial_pull_attempt_timeout: int
    max_pull_attempt_timeout: int
    overall_timeout: int
    initial_pull_attempt_delay: int
    max_pull_attempt_delay: int
    debug: bool
    max_parallel_pulls: int
    pull_policy: str
    not_found: str
    cri_connect_timeout: int
    log_format: str
    termination_log: str
    parallel_nodes: int
    instance_name: str
    lease_namespace: str
    lease_duration: int
    lease_unreachable_timeout: int
    canary: bool
    progress_interval: int
    positional_images: tuple[str, ...]


@dataclass(frozen=True)
class AggregateOptions:
    grpc_port: int
    http_port: int
    debug: bool


def validate_fetch(options: FetchOptions) -> None:
    """Reject settings the Go tool accepts but that only make the run misbehave (documented difference)."""
    must_be_positive = (
        "image-list-timeout",
        "initial-pull-attempt-timeout",
        "max-pull-attempt-timeout",
        "overall-timeout",
        "cri-connect-timeout",
    )
    for name in must_be_positive:
        value = getattr(options, name.replace("-", "_"))
        if value <= 0:
            raise FlagError(f"--{name} must be greater than 0, got {format_duration(value)}")
    for name in ("initial-pull-attempt-delay", "max-pull-attempt-delay"):
        value = getattr(options, name.replace("-", "_"))
        if value < 0:
            raise FlagError(f"--{name} must not be negative, got {format_duration(value)}")
    if options.max_parallel_pulls < 0:
        raise FlagError(f"--max-parallel-pulls must be 0 (unlimited) or more, got {options.max_parallel_pulls}")
    if options.parallel_nodes < 0:
        raise FlagError(f"--parallel-nodes must be 0 (unlimited) or more, got {options.parallel_nodes}")
    if options.lease_duration < SECOND:  # leaseDurationSeconds is a whole number of seconds, at least 1
        raise FlagError(f"--lease-duration must be at least 1s, got {format_duration(options.lease_duration)}")
    if options.canary and options.parallel_nodes <= 0:
        raise FlagError("--canary needs --parallel-nodes N > 0 (the canary is found through the node-slot Leases)")
    if options.lease_unreachable_timeout < 0:
        shown = format_duration(options.lease_unreachable_timeout)
        raise FlagError(f"--lease-unreachable-timeout must not be negative, got {shown}")
    if options.progress_interval < 0:
        shown = format_duration(options.progress_interval)
        raise FlagError(f"--progress-interval must be 0s (off) or more, got {shown}")


def fetch_options(parsed: ParsedArgs) -> FetchOptions:
    options = FetchOptions(**parsed.values, positional_images=tuple(parsed.positionals))
    validate_fetch(options)
    return options


def _help_text(name: str, summary: str, usage: str, flags: Sequence[Flag]) -> str:
    return f"{summary}\n\nUsage:\n  {PROG} {name} {usage}\n\nFlags:\n{flag_usage(flags)}\n"


def _run_fetch(parsed: ParsedArgs) -> int:
    from image_prefetcher.fetch import run_fetch  # imported late: `sleep` need not load grpc

    return run_fetch(fetch_options(parsed))


def _run_sleep(parsed: ParsedArgs) -> int:
    from image_prefetcher.sleep import run_sleep

    return run_sleep()


def _run_aggregate(parsed: ParsedArgs) -> int:
    try:
        aggregator = importlib.import_module("image_prefetcher.aggregator")
    except ModuleNotFoundError as err:
        if err.name != "image_prefetcher.aggregator":
            raise
        raise FlagError("aggregate-metrics is not available in this build") from None
    result = aggregator.main(AggregateOptions(**parsed.values))
    return int(result or 0)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    usage: str
    flags: tuple[Flag, ...]
    run: Callable[[ParsedArgs], int]
    accepts_flags: bool = True


COMMANDS: dict[str, Command] = {
    "fetch": Command("fetch", "Fetch images using CRI.", "[flags] [<image-name>...]", FETCH_FLAGS, _run_fetch),
    "sleep": Command("sleep", "Sleep until SIGTERM or SIGINT.", "", (), _run_sleep),
    "aggregate-metrics": Command(
        "aggregate-metrics",
        "Accept metrics submissions and serve them as JSON.",
        "[flags]",
        AGGREGATE_FLAGS,
        _run_aggregate,
    ),
}

ROOT_HELP = (
    "Prefetches container images onto Kubernetes nodes through the CRI API.\n\n"
    f"Usage:\n  {PROG} [command]\n\nAvailable Commands:\n"
    + "".join(f"  {c.name:<18} {c.summary}\n" for c in COMMANDS.values())
    + f"  {'help':<18} Help about any command\n\nFlags:\n  -h, --help   help for {PROG}\n\n"
    f'Use "{PROG} [command] --help" for more information about a command.\n'
)


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


class RootError(FlagError):
    """An error before a subcommand was chosen (unknown command or flag)."""


def _unknown_command(name: str) -> FlagError:
    # cobra's suggestions: edit distance <= 2 or a prefix match.
    close = [c for c in COMMANDS if _levenshtein(name.lower(), c) <= 2 or c.startswith(name.lower())]
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return RootError(f'unknown command "{name}" for "{PROG}"{hint}')


def _dispatch(argv: Sequence[str]) -> int:
    args = list(argv)
    for index, arg in enumerate(args):
        if arg in ("-h", "--help"):
            print(ROOT_HELP, end="")
            return 0
        if arg == "--" or arg.startswith("-"):
            raise RootError(f"unknown flag: {arg}" if arg != "--" else "no command given before --")
        return _dispatch_command(arg, args[index + 1 :])
    print("Please use one of the subcommands. See --help")
    return 0


def _dispatch_command(name: str, rest: list[str]) -> int:
    if name == "help":
        target = COMMANDS.get(rest[0]) if rest else None
        if rest and target is None:
            raise _unknown_command(rest[0])
        print(_help_text(target.name, target.summary, target.usage, target.flags) if target else ROOT_HELP, end="")
        return 0
    command = COMMANDS.get(name)
    if command is None:
        raise _unknown_command(name)
    try:
        parsed = parse_flags(command.flags, rest)
    except HelpRequested:
        print(_help_text(command.name, command.summary, command.usage, command.flags), end="")
        return 0
    except FlagError as err:
        error = FlagError(f"{err} (see '{PROG} {command.name} --help')")
        if command.name == "fetch":
            _write_fatal_summary(termination_log_from_argv(command.flags, rest), error_text(error))
        raise error from None
    if command.name != "fetch":
        return command.run(parsed)
    try:
        return command.run(parsed)
    except (FlagError, CommandError) as err:
        _write_fatal_summary(str(parsed.values.get("termination_log") or ""), error_text(err))
        raise


def termination_log_from_argv(flags: Sequence[Flag], argv: Sequence[str]) -> str | None:
    """`--termination-log` of a command line that did not parse: its value, the default when the flag is not
    given, None when its value cannot be told (the flag is last, without a value). Scans as parse_flags does."""
    by_name = {flag.name: flag for flag in flags}
    path: str | None = next(flag.default for flag in flags if flag.name == "termination-log")
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name, has_value, value = arg[2:].partition("=")
        flag = by_name.get(name)
        if flag is None or has_value or flag.kind == "bool":
            if name == "termination-log":
                path = value
            continue
        if i >= len(argv):
            if name == "termination-log":
                path = None
            break
        if name == "termination-log":
            path = argv[i]
        i += 1
    return path


def _write_fatal_summary(path: str | None, message: str) -> None:
    """DESIGN.md: a `fetch` that cannot run still leaves `complete:false`, zero counts and `fatal` for the
    rollout module. Never fatal itself."""
    if not path:
        return
    import os
    import socket

    from image_prefetcher.logs import get_logger
    from image_prefetcher.summary import build_fatal_summary, write_termination_log

    node = os.environ.get("NODE_NAME") or socket.gethostname()
    write_termination_log(path, build_fatal_summary(node, message), get_logger())


def error_text(err: BaseException) -> str:
    """The one line shown after `Error: ` (and kept as the summary's `fatal`). A multi-line message loses its quoted
    source lines (PyYAML's errors quote the offending config lines, indented by 4 spaces, and those may hold
    secrets); the rest is joined into one line."""
    lines = str(err).splitlines()
    kept = [line.strip() for line in lines if not line.startswith("    ") and line.strip()]
    return " ".join(kept)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except RootError as err:
        print(f"Error: {error_text(err)}\nRun '{PROG} --help' for usage.", file=sys.stderr)
        return 1
    except (FlagError, CommandError) as err:
        print(f"Error: {error_text(err)}", file=sys.stderr)
        return 1
