"""The ``connector`` command: look users up, try logins, check everything, export and import,
migrate from the Node connector."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from connector import __version__, errors
from connector.logs import configure
from connector.settings import Settings, load_settings
from connector.settings.files import config_file
from connector.settings.sealing import seal_config_file

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1  # the directory said no (wrong password, no such user, check failed)
EXIT_CONFIG = 2  # the settings are wrong
EXIT_UNAVAILABLE = 3  # the directory could not be reached


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))


def _settings(args: argparse.Namespace, require_directory: bool = True) -> Settings:
    settings = load_settings(args.config, require_directory=require_directory)
    configure(args.log_level or settings.log_level, settings.log_format)
    return settings


def _error_exit(exc: errors.ConnectorError) -> int:
    print(json.dumps({"err": exc.to_wire()}, ensure_ascii=False), file=sys.stdout)
    print(f"error: {exc}", file=sys.stderr)
    if isinstance(exc, errors.ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, errors.DirectoryUnavailable | errors.HubUnavailable):
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


def cmd_user(args: argparse.Namespace) -> int:
    """Print the profile that would be sent for a user (no password involved)."""
    from connector.directory import Directory

    directory = Directory(_settings(args))
    try:
        _print_json(directory.get_profile(args.name))
    finally:
        directory.close()
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    """Ask for a password, check it, print the profile or the precise error."""
    from connector.directory import Directory

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
    directory = Directory(settings)
    try:
        _print_json(directory.authenticate(args.name, password))
    finally:
        directory.close()
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Run the troubleshooter (the console's checks) and say what is wrong."""
    from connector.troubleshoot import run_checks

    settings = _settings(args, require_directory=False)
    report = run_checks(settings, args.user)
    for result in report.checks:
        print(result.line())
    for note in report.notes:
        print(f"NOTE {note}")
    failed = report.failed
    print(f"{len(report.checks) - len(failed)} passed, {len(failed)} failed")
    return EXIT_OK if report.ok else EXIT_REFUSED


def _passphrase(args: argparse.Namespace, confirm: bool) -> str:
    if args.passphrase_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Archive passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise errors.ConfigError(["the two passphrases differ"], "the passphrase prompt")
    return first


def cmd_export(args: argparse.Namespace) -> int:
    """Write the encrypted archive that clones this connector."""
    from pathlib import Path

    from connector.archive import export_archive

    settings = _settings(args, require_directory=False)
    data = export_archive(settings, _passphrase(args, confirm=True))
    target = Path(args.file)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    print(f"exported to {target} ({len(data)} bytes); keep the passphrase apart from the file")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Check an archive, say what changes and (unless --dry-run) install it."""
    from pathlib import Path

    from connector.archive import MAX_ARCHIVE_BYTES, import_archive

    settings = _settings(args, require_directory=False)
    source = Path(args.file)
    with open(source, "rb") as fh:
        data = fh.read(MAX_ARCHIVE_BYTES + 1)
    report = import_archive(
        data,
        _passphrase(args, confirm=False),
        str(settings.config_path),
        secret_key_file=settings.secret_key_file,
        dry_run=args.dry_run,
    )
    for line in report.lines():
        print(line)
    if report.applied:
        print(
            "imported; restart the workers to use it: systemctl reload connector "
            "(or kill -HUP the gunicorn master)"
        )
    elif args.dry_run:
        print("dry run: nothing written")
    return EXIT_OK


def cmd_console_password(args: argparse.Namespace) -> int:
    """Make a new admin console password and print it once (only its hash is kept)."""
    from connector import consolepw

    settings = _settings(args, require_directory=False)
    if settings.console_password:
        print(
            "error: CONSOLE_PASSWORD is set (in the environment, or sealed in config.json as "
            "CONSOLE_CREDENTIALS): the console asks for that one. Remove it to use a generated "
            "password instead.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    password = consolepw.create(settings.state_dir)
    print(f"console password: {password}")
    address = settings.console_address
    if address is not None:
        print(f"console: {consolepw.console_url(address)} (on this machine, or through ssh -L)")
    print(
        f"Shown only now: {consolepw.record_path(settings.state_dir)} keeps its hash. "
        "Running this again makes a new one and signs everyone out."
    )
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring a Node connector's config.json, certificate and key over; say what stays."""
    from pathlib import Path

    from connector.migrate import apply, plan
    from connector.secretbox import SecretBox

    target = config_file(args.config)
    if target.exists() and not args.dry_run and not args.force:
        raise errors.ConfigError(
            ["it exists already: migrate into a new directory, or give --force to replace it"],
            str(target),
        )
    box = SecretBox.for_config(target, os.environ)
    migration = plan(Path(args.node_dir), box, os.environ)
    for line in migration.lines:
        print(line)
    for todo in migration.todo:
        print(f"TO DO {todo}")
    if args.dry_run:
        print("dry run: nothing written")
        return EXIT_OK
    for path in apply(migration, target, box):
        print(f"wrote {path}")
    print(f"next: connector --config {target} check")
    return EXIT_OK


def cmd_seal(args: argparse.Namespace) -> int:
    """Seal the plain secrets of config.json in place (loading settings never writes)."""
    config = config_file(args.config)
    notes = seal_config_file(config)
    for level, note in notes:
        print(note, file=sys.stderr if level >= logging.WARNING else sys.stdout)
    if not notes:
        print(f"nothing to seal in {config}")
    return EXIT_CONFIG if any(level >= logging.WARNING for level, _ in notes) else EXIT_OK


def cmd_setup(args: argparse.Namespace) -> int:
    """Provision from a ticket URL: register with the hub and store the result."""
    from connector.channel.provision import setup_from_ticket

    configure(args.log_level or "info")
    config = config_file(args.config)
    result = setup_from_ticket(
        config,
        args.ticket,
        sign_in_endpoint=args.sign_in_endpoint,
        allow_origins=tuple(args.allow_hub_origin),
        allow_ip_ranges=tuple(args.allow_ip_range),
    )
    print(
        f"set up: hub {result.ad_hub}, connection {result.connection}, realm {result.realm}\n"
        f"agent certificate {result.kid} "
        f"({'new' if result.created_identity else 'existing'}) registered; saved in {config}"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the connector under gunicorn with the shipped configuration."""
    os.environ["CONNECTOR_CONFIG"] = str(config_file(args.config))
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:connector.gunicorn_config"]
    argv += ["connector.web:create_app()"]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn
    return EXIT_OK  # pragma: no cover - execv does not return


def cmd_devhub(args: argparse.Namespace) -> int:
    """Run the reference hub (for the demo and the tests)."""
    from connector.devhub.server import main as devhub_main

    return int(devhub_main(args.devhub_args) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a sample directory, KDC and hub, and the connector against them."""
    from pathlib import Path

    from connector.demo import DemoOptions, run

    options = DemoOptions(
        directory=Path(args.dir) if args.dir else None,
        port=args.port,
        hub_port=args.hub_port,
        kerberos=not args.no_kerberos,
    )
    return run(options)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="connector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        default=None,
        help="config.json to use (default: $CONNECTOR_CONFIG or ./config.json)",
    )
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("user", help="print the profile that would be sent for a user")
    p.add_argument("name")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("login", help="try a login: prints the profile or the precise error")
    p.add_argument("name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("setup", help="set up from the hub's ticket URL")
    p.add_argument("--ticket", required=True, help="the ticket URL the hub gave you")
    p.add_argument("--sign-in-endpoint", default=None, help="public URL of this connector")
    p.add_argument(
        "--allow-hub-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="accept adHub / postTokenUrl on this origin (scheme://host[:port]) besides the "
        "ticket's; stored in HUB_TRUSTED_ORIGINS (repeatable)",
    )
    p.add_argument(
        "--allow-ip-range",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept this non-private range in the hub's ipRanges (offered Kerberos); stored "
        "in HUB_ALLOWED_IP_RANGES (repeatable)",
    )
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser(
        "console-password",
        help="make a new admin console password and print it (once)",
        description="Generate a random password for the admin console, print it, and keep only "
        "its hash (console-password in the state directory, mode 0600). Run it as the "
        "connector's user. A new password applies at once and ends every console session. "
        "Not used when CONSOLE_PASSWORD is set.",
    )
    p.set_defaults(func=cmd_console_password)

    p = sub.add_parser(
        "migrate",
        help="bring a Node AD/LDAP connector's config.json, certificate and key over",
        description="Read the Node connector installed in NODE_DIR (config.json, certs/), "
        "write this connector's config.json (at --config), agent.crt, agent.key and "
        "secret.key, and say what cannot come over as it is.",
    )
    p.add_argument("node_dir", metavar="NODE_DIR", help="the Node connector's directory")
    p.add_argument("--dry-run", action="store_true", help="only say what would be done")
    p.add_argument("--force", action="store_true", help="replace an existing config.json")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "seal",
        help="encrypt a plain LDAP_BIND_PASSWORD / CONSOLE_PASSWORD in config.json now",
        description="Replace a plain LDAP_BIND_PASSWORD (or CONSOLE_PASSWORD) in config.json "
        "by its encrypted LDAP_BIND_CREDENTIALS (CONSOLE_CREDENTIALS), and reseal a password "
        "the Node connector sealed, under secret.key (created if missing). Setup and the "
        "service's start do this too; loading the settings never writes.",
    )
    p.set_defaults(func=cmd_seal)

    p = sub.add_parser("run", help="serve the sign-in endpoint and poll the hub (gunicorn)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("devhub", help="run the reference hub (demo and tests)", add_help=False)
    p.add_argument("devhub_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_devhub)

    p = sub.add_parser(
        "check",
        help="troubleshoot: LDAP servers, user filter, hub, clock, keytab, header limits",
    )
    p.add_argument("--user", default=None, help="also look this user up")
    p.set_defaults(func=cmd_check)

    stdin_help = "read the passphrase from the first line of standard input"
    p = sub.add_parser("export", help="write an encrypted archive that clones this connector")
    p.add_argument("file", help="the archive to write (mode 0600)")
    p.add_argument("--passphrase-stdin", action="store_true", help=stdin_help)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="install an archive from `connector export`")
    p.add_argument("file", help="the archive to read")
    p.add_argument("--passphrase-stdin", action="store_true", help=stdin_help)
    p.add_argument("--dry-run", action="store_true", help="only say what would change")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "demo",
        help="quick start: sample directory, KDC and hub on this machine",
        description="Start a sample OpenLDAP directory, an MIT KDC (realm DEMO.TEST) and the "
        "reference hub on loopback, set the connector up from the hub's ticket and serve it "
        "under gunicorn. Ctrl-C stops everything.",
    )
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--port", type=int, default=None, help="connector port (default 4000 if free)")
    p.add_argument("--hub-port", type=int, default=None, help="hub port (default 8700 if free)")
    p.add_argument("--no-kerberos", action="store_true", help="no KDC: the form sign-in only")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``connector`` console script."""
    args = build_parser().parse_args(argv)
    configure(args.log_level or "warning")
    try:
        return int(args.func(args))
    except errors.ConnectorError as exc:
        return _error_exit(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
