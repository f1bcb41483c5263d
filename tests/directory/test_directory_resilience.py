"""Failover, reconnection and timeouts against real slapd processes that die and come back."""

import socket
import threading
import time

import pytest
from servers import free_port

from connector import errors


def dead_url():
    """An ldap:// URL on a loopback port where nothing listens."""
    return f"ldap://127.0.0.1:{free_port()}"


class SilentServer:
    """A TCP listener that accepts connections and never answers (a hung LDAP server)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"ldap://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self):
        self._stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def test_restarted_server_is_used_again_without_restart(slapd_factory, ldap_with):
    server = slapd_factory()
    directory = ldap_with(LDAP_URL=server.uri, LDAP_CA_FILE=server.ca_file)
    assert directory.authenticate("alice", "alicepw")["id"] == "alice"
    server.restart()
    # the pooled connections are dead now; the next login reconnects by itself
    assert directory.authenticate("alice", "alicepw")["id"] == "alice"
    assert directory.get_profile("dave")["groups"]


def test_server_down_then_back(slapd_factory, ldap_with):
    server = slapd_factory()
    directory = ldap_with(
        LDAP_URL=server.uri, LDAP_CA_FILE=server.ca_file, LDAP_SERVER_RETRY_SECONDS=0
    )
    assert directory.authenticate("bob", "bobpw")["id"] == "bob"
    server.stop()
    with pytest.raises(errors.DirectoryUnavailable) as info:
        directory.authenticate("bob", "bobpw")
    assert info.value.wire_name == "Unavailable"
    server.start()
    assert directory.authenticate("bob", "bobpw")["id"] == "bob"


def test_first_of_two_servers_dead_logins_succeed(slapd, ldap_with):
    first = dead_url()
    directory = ldap_with(LDAP_URLS=[first, slapd.uri])
    for _ in range(3):
        assert directory.authenticate("alice", "alicepw")["id"] == "alice"
    health = directory.servers.health()
    assert health[first]["up"] is False
    assert health[slapd.uri]["up"] is True


def test_failover_when_the_first_server_dies_mid_run(slapd_factory, slapd, ldap_with, tmp_path):
    primary = slapd_factory()
    # each test server has its own CA: trust both
    bundle = tmp_path / "cas.pem"
    bundle.write_text(open(primary.ca_file).read() + open(slapd.ca_file).read())
    directory = ldap_with(LDAP_URLS=[primary.uri, slapd.uri], LDAP_CA_FILE=str(bundle))
    assert directory.authenticate("carol", "carolpw")["id"] == "carol"
    with directory.search_pool.connection() as conn:
        assert conn.url == primary.uri
    primary.kill()
    assert directory.authenticate("carol", "carolpw")["id"] == "carol"
    with directory.search_pool.connection() as conn:
        assert conn.url == slapd.uri


def test_all_servers_dead_is_unavailable_quickly(ldap_with):
    directory = ldap_with(LDAP_URLS=[dead_url(), dead_url()], LDAP_CONNECT_TIMEOUT=1)
    started = time.monotonic()
    with pytest.raises(errors.DirectoryUnavailable) as info:
        directory.authenticate("alice", "alicepw")
    assert time.monotonic() - started < 2
    assert "no LDAP server could be used" in str(info.value)


def test_hung_server_is_unavailable_within_the_timeout(silent_server, ldap_with):
    directory = ldap_with(
        LDAP_URL=silent_server.url,
        LDAP_STARTTLS=False,
        LDAP_ALLOW_CLEARTEXT=True,  # the silent server must be reached to time out
        LDAP_CONNECT_TIMEOUT=1,
        LDAP_OPERATION_TIMEOUT=1,
    )
    started = time.monotonic()
    with pytest.raises(errors.DirectoryUnavailable):
        directory.authenticate("alice", "alicepw")
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed


def test_pool_is_bounded_under_concurrency(ldap_with):
    directory = ldap_with(LDAP_POOL_SIZE=2, LDAP_BIND_POOL_SIZE=2)
    failures = []

    def login(i):
        try:
            name = ["alice", "bob", "dave"][i % 3]
            directory.authenticate(name, name + "pw")
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert directory.search_pool.opened <= 2
    assert directory.bind_pool.opened <= 2


def test_a_pool_with_every_connection_lent_says_so_after_its_timeout(ldap_with):
    directory = ldap_with(LDAP_POOL_SIZE=1, LDAP_CONNECT_TIMEOUT=0.2, LDAP_OPERATION_TIMEOUT=0.3)
    pool = directory.search_pool
    with pool.connection():
        started = time.monotonic()
        with pytest.raises(
            errors.DirectoryUnavailable, match="all 1 search connections stayed busy"
        ):
            with pool.connection():
                pass
        assert time.monotonic() - started >= 0.5  # the acquire timeout: 0.2 s x 1 URL + 0.3 s
    with pool.connection() as conn:  # given back: lent again, the same one
        assert conn.ldap.whoami_s()
    assert pool.opened == 1


def test_run_gives_back_after_an_outcome_closes_after_anything_else_and_frees_its_place(
    ldap_with,
):
    import ldap

    directory = ldap_with(LDAP_POOL_SIZE=1)
    pool = directory.search_pool
    first = pool.run(lambda conn: conn)
    assert pool.opened == 1

    def outcome(conn):
        raise errors.WrongUsername("no such user")

    with pytest.raises(errors.WrongUsername):
        pool.run(outcome)
    assert pool.run(lambda conn: conn) is first  # an outcome leaves the connection lent again

    def broken(conn):
        raise RuntimeError("a bug in an operation")

    with pytest.raises(RuntimeError):
        pool.run(broken)
    second = pool.run(lambda conn: conn)
    assert second is not first and pool.opened == 2  # closed, not given back
    lost = []

    def drops_once(conn):
        if not lost:
            lost.append(conn)
            raise ldap.SERVER_DOWN({"desc": "Can't contact LDAP server"})
        return conn

    third = pool.run(drops_once)  # retried once, on a new connection
    assert lost == [second] and third is not second and pool.opened == 3
    # one place (LDAP_POOL_SIZE=1) and it is free after each of these: lent again at once
    with pool.connection() as conn:
        assert conn is third and conn.ldap.whoami_s()
