"""Request guards: CSRF cookies (minted here, expiring, ``__Host-`` over https), no framing,
and login throttling shared between processes (gunicorn workers) through the run directory."""

import ipaddress
import json
import multiprocessing
import os
import random
import re
import shutil

import pytest

from connector import consolepw, errors
from connector.settings import load_settings
from connector.web import create_app
from connector.web.guards import (
    Attempt,
    Csrf,
    SharedThrottle,
    Throttle,
    address_key,
    user_key,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _fail_in_child(path, key, times):
    throttle = SharedThrottle(path, 3, 60.0)
    for _ in range(times):
        throttle.failure(key)
    os._exit(0)


def _run(target, *args):
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=target, args=args)
    child.start()
    child.join(30)
    assert child.exitcode == 0


def test_failures_in_other_processes_count(tmp_path):
    path = tmp_path / "throttle.bin"
    here = SharedThrottle(path, 3, 60.0)
    here.failure("bob")
    _run(_fail_in_child, path, "bob", 1)
    assert here.blocked("bob") == 0.0  # two so far
    _run(_fail_in_child, path, "bob", 1)
    # the third, counted in another process (a window of 60 s, give or take a bucket)
    assert 59.0 < here.blocked("bob") <= 60.0 + 60.0 / SharedThrottle.BUCKETS
    assert here.blocked("alice") == 0.0
    # a process opening the table later sees the same counts
    assert SharedThrottle(path, 3, 60.0).blocked("bob") > 59.0


def test_a_forked_child_shares_its_parents_table(tmp_path):
    path = tmp_path / "throttle.bin"
    parent = SharedThrottle(path, 2, 60.0)

    def child():
        parent.failure("carol")  # the parent's object, used after the fork
        os._exit(0)

    _run(child)
    parent.failure("carol")
    assert parent.blocked("carol") > 0


def test_window_slides_and_reset_forgets(tmp_path):
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 3, 60.0, clock=clock)
    width = 60.0 / SharedThrottle.BUCKETS
    for step in (0, 10, 20):
        clock.now += step
        t.failure("dave")
    # the first failure leaves the window 60 s after it, at most one bucket later
    assert 30.0 <= t.blocked("dave") <= 30.0 + width
    clock.now += 30.0 + width
    assert t.blocked("dave") == 0.0
    t.failure("dave")
    assert t.blocked("dave") > 0
    t.reset("dave")
    assert t.blocked("dave") == 0.0
    t.failure("dave")
    assert t.blocked("dave") == 0.0  # counting starts again after a success


def test_large_limits_cost_no_more_space(tmp_path):
    """The bench and the soak set limits of 10**6 to stay out of the way: the table stays
    small and counting stays exact."""
    clock = Clock()
    path = tmp_path / "t.bin"
    t = SharedThrottle(path, 1_000_000, 300.0, clock=clock)
    assert path.stat().st_size < 2_000_000
    for _ in range(1000):
        t.failure("10.0.0.1")
    assert t.blocked("10.0.0.1") == 0.0
    small = SharedThrottle(path, 1000, 300.0, clock=clock)  # same layout: counts carry over
    assert small.blocked("10.0.0.1") > 0


def test_no_key_is_written_to_disk(tmp_path):
    path = tmp_path / "t.bin"
    t = SharedThrottle(path, 3, 60.0)
    for key in ("frank.secret-user", "203.0.113.77"):
        t.failure(key)
    data = path.read_bytes()
    assert b"frank" not in data and b"203.0.113" not in data
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_full_neighbourhood_gives_up_its_stalest_unblocked_key(tmp_path):
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 2, 600.0, slots=1, clock=clock)
    keys = [f"user{i}" for i in range(SharedThrottle.PROBE + 1)]
    for key in keys[:-1]:
        clock.now += 600.0 / SharedThrottle.BUCKETS + 1  # each in a later bucket
        t.failure(key)
    t.failure(keys[1])  # blocked: it keeps its record
    clock.now += 600.0 / SharedThrottle.BUCKETS + 1
    t.failure(keys[-1])
    t.failure(keys[-1])
    # PROBE records: the stalest key that was not blocked (keys[0]) made room for the last
    assert t.blocked(keys[-1]) > 0 and t.blocked(keys[1]) > 0
    t.failure(keys[0])
    assert t.blocked(keys[0]) == 0.0  # its earlier failure was forgotten


def test_blocked_keys_are_never_evicted_a_new_key_is_refused_instead(tmp_path):
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 1, 600.0, slots=1, clock=clock)
    keys = [f"user{i}" for i in range(SharedThrottle.PROBE)]
    for key in keys:
        assert t.acquire(key) == 0.0
    assert t.acquire("newcomer") > 0  # no record it may take: refused, not tracked blindly
    assert all(t.blocked(k) > 0 for k in keys)
    clock.now += 600.0 + 600.0 / SharedThrottle.BUCKETS + 1  # the windows end: records free
    assert t.acquire("newcomer") == 0.0


def test_a_settle_whose_record_another_key_took_finds_its_own(tmp_path):
    """A reservation's record is settled where it was counted, unless another key took that
    record meanwhile: then the key's own (or none) is looked up, the other left as it is."""
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 3, 600.0, slots=1, clock=clock)
    width = 600.0 / SharedThrottle.BUCKETS
    wait, hint = t.reserve("ivan")
    assert wait == 0.0 and hint is not None
    others = [f"other{i}" for i in range(SharedThrottle.PROBE)]
    for key in others:  # each later: ivan's record is the stalest and gives way
        clock.now += width + 1
        t.failure(key)
        t.failure(key)
    assert t.blocked("ivan") == 0.0 and all(t.blocked(k) == 0.0 for k in others)
    t.settle_held([("ivan", True, hint)])  # forget: the record's new key keeps its count
    t.settle_held([("ivan", False, hint)])  # give back: the same
    for key in others:
        t.failure(key)
        assert t.blocked(key) > 0, key  # its two failures still counted, and this third
    # its own record, where it was counted: settled there
    fresh = SharedThrottle(tmp_path / "u.bin", 2, 600.0, clock=clock)
    fresh.failure("judy")
    wait, hint = fresh.reserve("judy")
    assert wait == 0.0 and fresh.blocked("judy") > 0
    fresh.settle_held([("judy", False, hint)])
    assert fresh.blocked("judy") == 0.0  # back to one failure
    wait, hint = fresh.reserve("judy")
    fresh.settle_held([("judy", True, hint)])
    fresh.failure("judy")
    assert fresh.blocked("judy") == 0.0  # forgotten: one failure, not three


class _General(SharedThrottle):
    """The table without its few-bytes ways: every attempt counted and given back whole."""

    def _count_now(self, *args):
        return None

    def _give_back_now(self, *args):
        return False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_few_bytes_ways_write_what_the_general_way_writes(tmp_path, seed):
    """Attempts counted in place (a key of this bucket, a new key in an empty record) and
    given back in place leave the table byte for byte as the general way does, through
    reservations, failures, settles, blocked keys and evictions in a crowded table."""
    rng = random.Random(seed)
    clock = Clock()
    width = 60.0 / SharedThrottle.BUCKETS
    fast = SharedThrottle(tmp_path / "fast.bin", 3, 60.0, slots=4, clock=clock)
    shutil.copyfile(tmp_path / "fast.bin", tmp_path / "general.bin")  # the same salt
    general = _General(tmp_path / "general.bin", 3, 60.0, slots=4, clock=clock)
    keys = [f"name:user{i}" for i in range(14)]  # more than 4 slots' neighbourhoods hold
    used = {"counted in place": 0, "given back in place": 0}
    count_now, give_back_now = fast._count_now, fast._give_back_now

    def counted(*args):
        at = count_now(*args)
        used["counted in place"] += at is not None
        return at

    def given_back(*args):
        done = give_back_now(*args)
        used["given back in place"] += done
        return done

    fast._count_now, fast._give_back_now = counted, given_back  # type: ignore[method-assign]
    held: list[tuple[str, bool, object, object]] = []
    for step in range(3000):
        roll = rng.random()
        if roll < 0.05:
            clock.now += rng.choice((0.1, width, 5 * width, 70.0))
        elif roll < 0.45:
            key = rng.choice(keys)
            (wait_f, hint_f), (wait_g, hint_g) = fast.reserve(key), general.reserve(key)
            assert wait_f == wait_g, step
            if hint_f is not None:
                held.append((key, rng.random() < 0.5, hint_f, hint_g))
        elif roll < 0.65 and held:
            key, forget, hint_f, hint_g = held.pop(rng.randrange(len(held)))
            fast.settle_held([(key, forget, hint_f)])
            general.settle_held([(key, forget, hint_g)])
        elif roll < 0.8:
            key = rng.choice(keys)
            fast.failure(key)
            general.failure(key)
        else:
            key = rng.choice(keys)
            assert fast.blocked(key) == general.blocked(key), step
        assert (tmp_path / "fast.bin").read_bytes() == (tmp_path / "general.bin").read_bytes(), step
    assert used["counted in place"] > 300 and used["given back in place"] > 30, used


def test_acquire_counts_and_release_gives_back(tmp_path):
    for t in (SharedThrottle(tmp_path / "t.bin", 2, 60.0), Throttle(2, 60.0)):
        assert t.acquire("gina") == 0.0
        t.release("gina")
        assert t.acquire("gina") == 0.0
        assert t.acquire("gina") == 0.0
        assert t.acquire("gina") > 0  # two held: the third waits
        t.release("gina")
        assert t.blocked("gina") == 0.0


def test_an_attempt_settles_each_table_in_one_call(tmp_path):
    """A success gives the address's attempt back and forgets the name's and the entry's;
    a cancel gives every attempt back; each table is settled in one call (one lock)."""
    for make in (
        lambda n: SharedThrottle(tmp_path / f"{n}.bin", 3, 60.0),
        lambda n: Throttle(3, 60.0),
    ):
        addresses, users = make("address"), make("user")
        for t, key in ((addresses, "192.0.2.1"), (users, "name:hana"), (users, "dn:uid=hana")):
            t.failure(key)
            t.failure(key)
        calls: list[list[tuple[str, bool]]] = []
        for t in (addresses, users):
            settle = t.settle_held
            t.settle_held = lambda held, settle=settle, calls=calls: (
                calls.append([(key, forget) for key, forget, _hint in held]),
                settle(held),
            )[1]
        attempt = Attempt()
        attempt.reserve(addresses, "192.0.2.1", forget=False)
        attempt.reserve(users, "name:hana", forget=True)
        attempt.reserve(users, "dn:uid=hana", forget=True)
        assert users.blocked("name:hana") > 0 and addresses.blocked("192.0.2.1") > 0
        attempt.succeeded()
        assert calls == [[("192.0.2.1", False)], [("name:hana", True), ("dn:uid=hana", True)]]
        assert users.blocked("name:hana") == users.blocked("dn:uid=hana") == 0.0
        assert addresses.blocked("192.0.2.1") == 0.0  # back to its two failures
        assert addresses.acquire("192.0.2.1") == 0.0 and addresses.blocked("192.0.2.1") > 0
        # the name and the entry start afresh: three attempts before a wait
        cancelled = Attempt()
        for _ in range(3):
            cancelled.reserve(users, "name:hana", forget=True)
        with pytest.raises(errors.LoginThrottled):
            cancelled.reserve(users, "name:hana", forget=True)
        cancelled.cancel()
        assert users.blocked("name:hana") == 0.0


def _acquire_in_child(path, key, start, results):
    throttle = SharedThrottle(path, 5, 60.0)
    start.wait(10)
    results.put(sum(1 for _ in range(20) if throttle.acquire(key) == 0.0))
    results.close()
    results.join_thread()
    os._exit(0)


def test_parallel_acquires_in_processes_grant_exactly_the_limit(tmp_path):
    path = tmp_path / "t.bin"
    SharedThrottle(path, 5, 60.0)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_acquire_in_child, args=(path, "hank", start, results)) for _ in range(4)
    ]
    for child in children:
        child.start()
    start.set()
    granted = sum(results.get(timeout=30) for _ in children)
    for child in children:
        child.join(30)
    assert granted == 5


def test_in_process_throttle_keeps_blocked_keys():
    clock = Clock()
    t = Throttle(1, 60.0, max_keys=3, clock=clock)
    assert t.acquire("victim") == 0.0
    for i in range(10):
        t.acquire(f"junk{i}")
        t.release(f"junk{i}")
    assert t.blocked("victim") > 0


def test_keys_fold_names_and_group_ipv6():
    assert user_key("\uff41lice") == user_key("ALICE ") == user_key("alice")
    assert address_key(ipaddress.ip_address("2001:db8::1")) == "2001:db8::/64"
    assert address_key(ipaddress.ip_address("2001:db8::ffff:1")) == "2001:db8::/64"
    assert address_key(ipaddress.ip_address("2001:db8:0:1::1")) == "2001:db8:0:1::/64"
    assert address_key(ipaddress.ip_address("::ffff:192.0.2.7")) == "192.0.2.7"
    assert address_key(ipaddress.ip_address("192.0.2.7")) == "192.0.2.7"


def test_a_new_layout_replaces_the_table(tmp_path):
    path = tmp_path / "t.bin"
    SharedThrottle(path, 3, 60.0).failure("erin")
    other = SharedThrottle(path, 1, 120.0)  # another window: the file is laid out again
    assert other.blocked("erin") == 0.0
    other.failure("erin")
    assert other.blocked("erin") > 0


def test_in_process_throttle_still_available():
    clock = Clock()
    t = Throttle(2, 60.0, clock=clock)
    t.failure("x")
    t.failure("x")
    assert t.blocked("x") == pytest.approx(60.0)


# --- CSRF cookies and framing ---------------------------------------------------------------

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
AFTER = "https://app.example/after"
FORM = {"wtrealm": "urn:app", "wctx": "c", "wreply": AFTER}


def test_a_csrf_cookie_is_ours_or_refused_and_it_expires():
    clock = Clock()
    csrf = Csrf(b"k" * 32, max_age=3600, clock=clock)
    cookie = csrf.new_cookie()
    assert csrf.check(cookie, csrf.token(cookie)) and csrf.reuse(cookie) == cookie
    # a value the client chose, even with the right token for it, is neither used nor accepted
    for chosen in ("attacker-chosen-value", cookie + "x", cookie.replace(".", "-")):
        assert csrf.reuse(chosen) is None and not csrf.check(chosen, csrf.token(chosen))
    # another key's cookie (another connector) neither
    other = Csrf(b"o" * 32, clock=clock).new_cookie()
    assert not csrf.check(other, csrf.token(other))
    # half-way through its life a new form gets a new cookie; at the end the old one is refused
    clock.now += 1800
    assert csrf.reuse(cookie) is None and csrf.check(cookie, csrf.token(cookie))
    clock.now += 1800
    assert not csrf.check(cookie, csrf.token(cookie))


def signin_app(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"BIND": "127.0.0.1:4000", "WREPLY_ALLOWED": [AFTER]}))
    return create_app(load_settings(path, environ={}, require_directory=False), {"TESTING": True})


def set_cookies(resp):
    return resp.headers.getlist("Set-Cookie")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_sign_in_form_cookie_and_framing(tmp_path, scheme):
    app = signin_app(tmp_path)
    client = app.test_client()
    base = f"{scheme}://sso.example"
    page = client.get("/wsfed", base_url=base, query_string=FORM)
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    (cookie,) = set_cookies(page)
    attributes = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attributes and "Path=/" in attributes and "SameSite=Lax" in attributes
    assert any(a.startswith("Max-Age=") for a in attributes) and "Expires=" in cookie
    if scheme == "https":
        assert cookie.startswith("__Host-connector_csrf=") and "Secure" in attributes
        assert "Domain" not in cookie
    else:
        assert cookie.startswith("connector_csrf=") and "Secure" not in attributes
    # the same page again reuses the cookie (no new Set-Cookie)
    assert not set_cookies(client.get("/wsfed", base_url=base, query_string=FORM))


def test_a_client_chosen_csrf_cookie_is_replaced_not_adopted(tmp_path):
    app = signin_app(tmp_path)
    csrf = app.extensions["connector"].csrf
    client = app.test_client()
    client.set_cookie("__Host-connector_csrf", "attacker-chosen-value", domain="sso.example")
    page = client.get("/wsfed", base_url="https://sso.example", query_string=FORM)
    (cookie,) = set_cookies(page)
    assert "attacker-chosen-value" not in cookie
    assert TOKEN.search(page.text).group(1) != csrf.token("attacker-chosen-value")
    # the attacker's pair (their value, the token they would need) is refused
    attacker = app.test_client()
    attacker.set_cookie("__Host-connector_csrf", "attacker-chosen-value", domain="sso.example")
    data = {
        **FORM,
        "username": "u",
        "password": "p",
        "csrf_token": csrf.token("attacker-chosen-value"),
    }
    resp = attacker.post("/wsfed", base_url="https://sso.example", data=data)
    assert resp.status_code == 400 and "Your session expired" in resp.text
    # over https the unprefixed name is not read at all
    plain = app.test_client()
    value = csrf.new_cookie()
    plain.set_cookie("connector_csrf", value, domain="sso.example")
    data = {**FORM, "username": "u", "password": "p", "csrf_token": csrf.token(value)}
    assert plain.post("/wsfed", base_url="https://sso.example", data=data).status_code == 400


def test_the_console_csrf_cookie_and_framing(tmp_path):
    app = signin_app(tmp_path)
    consolepw.create(tmp_path)
    client = app.test_client()
    console = "http://127.0.0.1:4001"
    client.set_cookie("connector_console_csrf", "attacker-chosen-value", domain="127.0.0.1")
    page = client.get("/console/login", base_url=console)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    (cookie,) = set_cookies(page)
    attributes = [a.strip() for a in cookie.split(";")]
    assert cookie.startswith("connector_console_csrf=") and "attacker-chosen" not in cookie
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes
    assert "Max-Age=28800" in attributes
