"""Export and import (connector.archive and the CLI): a faithful clone, hostile archives refused."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile

import pytest

from connector import archive
from connector.archive import ArchiveError, export_archive, import_archive
from connector.channel.identity import AgentIdentity
from connector.settings import load_settings, seal_config_file

PASS = "correct horse battery staple"
MAPPER = "def map_profile(raw, default):\n    p = default(raw)\n    p['team'] = 'x'\n    return p\n"


def make_state(folder, **cfg):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapper.py").write_text(MAPPER)
    config = {
        "LDAP_URL": "ldap://dc1.example.test",
        "LDAP_BASE": "dc=example,dc=test",
        "LDAP_BIND_USER": "cn=svc,dc=example,dc=test",
        "LDAP_BIND_PASSWORD": "Bind-Secret-42",
        "PROFILE_MAPPER": str(folder / "mapper.py"),
        **cfg,
    }
    (folder / "config.json").write_text(json.dumps(config))
    seal_config_file(folder / "config.json", environ={})  # as setup and the service's start do
    settings = load_settings(folder / "config.json", environ={})
    AgentIdentity.generate().save(folder, settings.secret_box)
    return load_settings(folder / "config.json", environ={})


def test_export_import_round_trip(tmp_path):
    a = make_state(tmp_path / "a")
    data = export_archive(a, PASS)
    assert data.startswith(b"CONNECTOR-EXPORT-1\n")
    for secret in (b"Bind-Secret-42", (tmp_path / "a" / "secret.key").read_bytes().strip()):
        assert secret not in data
    report = import_archive(data, PASS, tmp_path / "b" / "config.json")
    assert report.applied and report.backup is None  # nothing to back up in a fresh folder
    assert report.certificate_changed and report.secret_key_changed
    assert "LDAP_BIND_CREDENTIALS" in report.added
    assert report.added["LDAP_BIND_CREDENTIALS"] == "(secret)"
    assert all("Bind-Secret-42" not in line for line in report.lines())
    b = load_settings(tmp_path / "b" / "config.json", environ={})
    assert b.ldap_bind_password == "Bind-Secret-42"
    assert b.profile_mapper == str(tmp_path / "b" / "profile_mapper.py")
    assert (tmp_path / "b" / "profile_mapper.py").read_text() == MAPPER
    ida = AgentIdentity.load(tmp_path / "a", a.secret_box)
    idb = AgentIdentity.load(tmp_path / "b", b.secret_box)
    assert ida.kid == idb.kid
    for name, mode in (("config.json", 0o600), ("secret.key", 0o600), ("agent.key", 0o600)):
        assert (tmp_path / "b" / name).stat().st_mode & 0o777 == mode
    # importing the same archive again changes nothing
    again = import_archive(data, PASS, tmp_path / "b" / "config.json")
    assert again.nothing_changed and not again.applied


def test_import_reports_what_changes_and_keeps_a_backup(tmp_path):
    make_state(tmp_path / "b", LDAP_BASE="dc=old,dc=test", GROUPS_CACHE_SECONDS=5)
    a = make_state(tmp_path / "a", LDAP_PAGE_SIZE=100)
    data = export_archive(a, PASS)
    before = (tmp_path / "b" / "config.json").read_text()
    dry = import_archive(data, PASS, tmp_path / "b" / "config.json", dry_run=True)
    assert not dry.applied and (tmp_path / "b" / "config.json").read_text() == before
    assert dry.changed["LDAP_BASE"] == ('"dc=old,dc=test"', '"dc=example,dc=test"')
    assert dry.added == {"LDAP_PAGE_SIZE": "100"}
    assert dry.removed == ["GROUPS_CACHE_SECONDS"]
    # the bind password is the same (sealed under different keys): not reported as changed
    assert "LDAP_BIND_CREDENTIALS" not in dry.changed
    assert dry.certificate_changed and dry.secret_key_changed
    assert dry.files == {"profile_mapper.py": "new"}
    done = import_archive(data, PASS, tmp_path / "b" / "config.json")
    assert done.applied and done.backup
    assert json.loads((tmp_path / "b" / done.backup / "config.json").read_text())["LDAP_BASE"] == (
        "dc=old,dc=test"
    )
    assert load_settings(tmp_path / "b" / "config.json", environ={}).ldap_page_size == 100


def test_wrong_passphrase_and_short_passphrase(tmp_path):
    a = make_state(tmp_path / "a")
    with pytest.raises(ArchiveError, match="at least 12"):
        export_archive(a, "short")
    data = export_archive(a, PASS)
    with pytest.raises(ArchiveError, match="wrong passphrase"):
        import_archive(data, PASS + "!", tmp_path / "b" / "config.json")
    with pytest.raises(ArchiveError, match="not a connector export"):
        import_archive(b"PK\x03\x04zip", PASS, tmp_path / "b" / "config.json")
    assert not (tmp_path / "b").exists()


def entries_of(settings):
    """The genuine entries of an export, to tamper with."""
    plain = archive.decrypt(export_archive(settings, PASS), PASS)
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def tar_gz(members):
    """A tar.gz of (TarInfo, bytes or None) pairs, sealed under PASS."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive.encrypt(buf.getvalue(), PASS)


def regular(name, data):
    return tarfile.TarInfo(name), data


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda e: [*e, regular("../evil.py", b"x")], "unexpected entry '../evil.py'"),
        (lambda e: [*e, regular("/etc/cron.d/x", b"x")], "unexpected entry"),
        (lambda e: [*e, regular("sub/config.json", b"{}")], "unexpected entry"),
        (lambda e: [*e, regular("notes.txt", b"x")], "unexpected entry 'notes.txt'"),
        (
            lambda e: [
                *[m for m in e if m[0].name != "ldap-ca.pem"],
                (symlink("ldap-ca.pem", "/etc/shadow"), None),
            ],
            "not a regular file",
        ),
        (lambda e: [*e, (directory("hub-ca.pem"), None)], "not a regular file"),
        (lambda e: [*e, regular("config.json", b"{}")], "appears twice"),
        (
            lambda e: [*e, regular("hub-ca.pem", b"A" * (archive.MAX_ENTRY_BYTES + 1))],
            "larger than",
        ),
        (lambda e: [m for m in e if m[0].name != "agent.key"], "lacks agent.key"),
        (lambda e: replace(e, "config.json", b"[1, 2]"), "not a JSON object"),
        (lambda e: replace(e, "config.json", b'{"LDAP_URL": "http://x"}'), "not valid"),
        (lambda e: replace(e, "secret.key", b"not-a-key"), "secret.key"),
        (lambda e: replace(e, "profile_mapper.py", b"def (:"), "does not compile"),
    ],
)
@pytest.mark.slow
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, tamper, message):
    a = make_state(tmp_path / "a")
    genuine = [regular(name, data) for name, data in entries_of(a).items()]
    data = tar_gz(tamper(genuine))
    target = tmp_path / "b" / "config.json"
    with pytest.raises(ArchiveError, match=message):
        import_archive(data, PASS, target)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "evil.py").exists()


def symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def directory(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def replace(members, name, data):
    return [(m[0], data) if m[0].name == name else m for m in members]


def test_a_decompression_bomb_is_refused(tmp_path):
    bomb = gzip.compress(b"\0" * (archive.MAX_PLAIN_BYTES + 1024))
    with pytest.raises(ArchiveError, match="too large"):
        import_archive(archive.encrypt(bomb, PASS), PASS, tmp_path / "b" / "config.json")


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path):
    a = make_state(tmp_path / "a")
    other = make_state(tmp_path / "other")
    e = entries_of(a)
    e["agent.crt"] = (tmp_path / "other" / "agent.crt").read_bytes()
    data = tar_gz([regular(n, d) for n, d in e.items()])
    with pytest.raises(ArchiveError, match="does not belong"):
        import_archive(data, PASS, tmp_path / "b" / "config.json")
    assert other  # both identities were real


def cli(config, *args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_cli_export_and_import(tmp_path):
    make_state(tmp_path / "a")
    out = tmp_path / "a.export"
    done = cli(tmp_path / "a" / "config.json", "export", str(out), "--passphrase-stdin", stdin=PASS)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    target = tmp_path / "b" / "config.json"
    dry = cli(target, "import", str(out), "--passphrase-stdin", "--dry-run", stdin=PASS)
    assert dry.returncode == 0, dry.stderr
    assert "+ LDAP_BIND_CREDENTIALS = (secret)" in dry.stdout and "dry run" in dry.stdout
    assert not target.exists()
    wrong = cli(target, "import", str(out), "--passphrase-stdin", stdin="nope-nope-nope")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    real = cli(target, "import", str(out), "--passphrase-stdin", stdin=PASS)
    assert real.returncode == 0, real.stderr
    assert "systemctl reload connector" in real.stdout
    assert load_settings(target, environ={}).ldap_bind_password == "Bind-Secret-42"
    for text in (done.stdout, done.stderr, real.stdout, real.stderr):
        assert "Bind-Secret-42" not in text and PASS not in text
