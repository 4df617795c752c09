"""The transaction journal (app/storage/journal.py): a process killed inside a transaction
leaves its locks on what it read; the next process with the same journal rolls it back.

The kill is real (a child process, SIGKILL) and so are the locks: Google's Firestore-mode
emulator refuses a second transaction's commit to a locked entity ("Transaction lock
timeout") for a minute, as Cloud Datastore does. The legacy emulator locks nothing, so
there the test checks the journal's bookkeeping only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions as core_exceptions
from google.cloud import ndb

from app import background, create_app, datastore
from app.models import AlertLease, root_key, utcnow
from app.models.webhook import DELIVERED, MESSAGE_KIND, PENDING, WebhookEndpoint
from app.services.webhooks import dispatch
from app.storage import journal, rpc
from tests.support.receiver import Receiver
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent

#: A process that begins a transaction, reads (locks) one entity in it, says so, and
#: waits to be killed.
LOCKER = textwrap.dedent(
    """
    import sys, time
    from google.cloud import ndb
    from app import create_app
    from app.config import Config
    from app.storage import rpc

    app = create_app(Config.from_env())
    with app.extensions["ndb"].context():
        key = ndb.Key("JournalProbe", "locked")._key.to_protobuf()
        key = type(key).pb(key)  # the raw protobuf app.storage.rpc sends
        transaction = rpc.begin_transaction()
        rpc.lookup([key], transaction)
        print("locked", flush=True)
        time.sleep(600)
    """
)


class Probe(ndb.Model):
    value = ndb.IntegerProperty()

    @classmethod
    def _get_kind(cls):
        return "JournalProbe"


@pytest.fixture(autouse=True)
def _no_journal_after():
    """A test that gives an app a journal leaves none to the rest of the suite."""
    yield
    journal._journal = None


def _start_locker(config, directory: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": config.emulator_host,
        "METERING_PROJECT": config.project,
        "METERING_TRANSACTION_JOURNAL_DIR": str(directory),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", LOCKER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def _write_once(ndb_client, value: int) -> None:
    """One transaction that reads and writes the probe, not retried."""
    with ndb_client.context():
        ndb.transaction(lambda: Probe(key=ndb.Key(Probe, "locked"), value=value).put(), retries=0)


def test_a_killed_processs_transaction_is_rolled_back_by_the_next_process(
    config, ndb_client, tmp_path, emulator_kind
):
    directory = tmp_path / "journal"
    _write_once(ndb_client, 1)
    child = _start_locker(config, directory)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    [left] = list(directory.glob("*" + journal.SUFFIX))
    [transaction] = journal.left_open(left.read_text())
    if emulator_kind == "firestore":  # the lock is there: a write is refused
        with pytest.raises(core_exceptions.GoogleAPICallError, match="lock"):
            _write_once(ndb_client, 2)
    # The next process with the same journal: create_app recovers before anything else.
    create_app(config.replace(transaction_journal_dir=str(directory)))
    assert not left.exists()
    _write_once(ndb_client, 3)  # not refused: the lock is gone
    with ndb_client.context():
        assert ndb.Key(Probe, "locked").get().value == 3
    assert transaction


def test_a_running_processs_journal_is_left_alone(config, tmp_path):
    directory = tmp_path / "journal"
    child = _start_locker(config, directory)
    try:
        [mine] = list(directory.glob("*" + journal.SUFFIX))
        asked: list[bytes] = []
        assert journal.recover(directory, asked.append) == 0
        assert asked == [] and mine.exists()
    finally:
        child.kill()
        child.wait(timeout=10)
    asked = []
    assert journal.recover(directory, asked.append) == 1
    assert len(asked) == 1 and not mine.exists()


def test_the_file_lists_only_what_is_open_and_is_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "COMPACT_BYTES", 200)
    written = journal.Journal(tmp_path)
    for number in range(20):
        written.opened(bytes([number]) * 8)
        if number != 7:
            written.closed(bytes([number]) * 8)
    path = tmp_path / journal._file_name(os.getpid())
    assert journal.left_open(path.read_text()) == [bytes([7]) * 8]
    assert path.stat().st_size < 200  # rewritten with the open one only
    written.closed(bytes([7]) * 8)
    assert journal.left_open(path.read_text()) == []


def test_a_line_cut_short_by_the_kill_is_skipped():
    assert journal.left_open("+00ff\n+abc\n+0102\n-00ff\n+12") == [b"\x01\x02", b"\x12"]


def test_commits_and_rollbacks_through_the_apps_client_end_their_lines(config, tmp_path):
    """Every transaction of the app's client is listed while open, NDB's and ours alike."""
    directory = tmp_path / "journal"
    app = create_app(config.replace(transaction_journal_dir=str(directory)))
    with app.extensions["ndb"].context():
        ndb.transaction(lambda: Probe(key=ndb.Key(Probe, "n"), value=1).put())
        with pytest.raises(ZeroDivisionError):
            ndb.transaction(lambda: Probe(key=ndb.Key(Probe, "n")).key.get() and 1 / 0)
        transaction = rpc.begin_transaction()
        path = directory / journal._file_name(os.getpid())
        assert journal.left_open(path.read_text()) == [transaction]
        rpc.rollback(transaction)
    assert journal.left_open(path.read_text()) == []


def test_a_killed_process_not_yet_reaped_counts_as_stopped(tmp_path):
    """A worker killed with its master stays a zombie until someone reaps it: its
    journal is recovered all the same."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        name = journal._file_name(child.pid)
        child.kill()
        eventually_zombie = journal._stat(child.pid)
        for _ in range(100):
            if eventually_zombie and eventually_zombie[0] == "Z":
                break
            time.sleep(0.05)
            eventually_zombie = journal._stat(child.pid)
        assert eventually_zombie[0] == "Z"  # not reaped yet: we have not waited for it
        (tmp_path / name).write_text("+0a0b\n")
        asked: list[bytes] = []
        assert journal.recover(tmp_path, asked.append) == 1
        assert asked == [b"\x0a\x0b"]
    finally:
        child.wait(timeout=10)


def test_a_stopped_processs_alert_lease_is_released_by_the_next_process(
    config, ndb_client, tmp_path, org
):
    """The evaluator keeps its lease between rounds: after a kill, the next process
    deletes it at once (if the dead one still holds it) instead of waiting for it to
    expire; a lease another process took since is left alone."""
    from app.models import AlertLease, root_key, utcnow

    with ndb_client.context(namespace=org["namespace"]):
        keys = [ndb.Key(AlertLease, meter, parent=root_key()) for meter in ("m1", "m2")]
        until = utcnow() + timedelta(minutes=1)
        AlertLease(key=keys[0], holder="dead-1", until=until).put()
        AlertLease(key=keys[1], holder="alive-2", until=until).put()
        lines = [json.dumps([key.urlsafe().decode(), "dead-1"]) for key in keys]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)  # a process id that is no longer running
    (tmp_path / f"{child.pid}-0{journal.SUFFIX}").write_text(
        "".join("L" + line + "\n" for line in lines)
    )
    create_app(config.replace(transaction_journal_dir=str(tmp_path)))
    with ndb_client.context(namespace=org["namespace"]):
        assert keys[0].get() is None
        assert keys[1].get().holder == "alive-2"


def test_a_let_go_lease_is_not_listed():
    text = 'L["k1", "h"]\nL["k2", "h"]\nl["k1", "h"]\nL["k3"'
    assert journal.left_held(text) == [("k2", "h")]


def test_a_stopped_processs_leased_message_is_due_again_at_once(
    config, ndb_client, tmp_path, api, org
):
    """A webhook message a killed process had leased (and maybe sent) is due again as
    soon as the next process starts, not when its lease would have run out; one whose
    lease another dispatcher took since is left alone."""
    from app.services.webhooks import dispatch

    endpoint = api.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
    assert endpoint.status_code == 201, endpoint.text
    for _ in range(2):
        sent = api.post(f"/v1/webhooks/endpoints/{endpoint.json()['id']}/test")
        assert sent.status_code in (200, 201, 202), sent.text
    with ndb_client.context(namespace=org["namespace"]):
        keys = dispatch.due_keys(utcnow() + timedelta(seconds=1), 10)
        endpoints = {e.key.id(): e for e in dispatch.WebhookEndpoint.query().fetch()}
        leased = dispatch.lease_many(keys, utcnow(), dispatch.Settings(), endpoints)
        assert len(leased) == 2 and not dispatch.due_keys(utcnow(), 10)
        dead, taken_over = leased
        lines = [
            json.dumps([dead.message.key.urlsafe().decode(), dead.message.lease]),
            json.dumps([taken_over.message.key.urlsafe().decode(), "an older lease"]),
        ]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    (tmp_path / f"{child.pid}-0{journal.SUFFIX}").write_text(
        "".join("L" + line + "\n" for line in lines)
    )
    create_app(config.replace(transaction_journal_dir=str(tmp_path)))
    with ndb_client.context(namespace=org["namespace"]):
        assert dispatch.due_keys(utcnow(), 10) == [dead.message.key]
        assert taken_over.message.key.get().lease == taken_over.message.lease


def test_messages_leased_by_a_dispatcher_are_journaled_before_their_lease_commits(
    ndb_client, tmp_path, api, org
):
    """A process killed after its lease transaction committed, before it queued the
    messages for sending, has them in its journal: the next start makes them due at
    once, instead of after their lease."""
    journal.start(tmp_path)
    leased = _leased_test_messages(api, ndb_client, org, "http://127.0.0.1:9/hook", 3)
    assert journal._journal is not None
    assert {key: token for key, token in journal._journal.leases.items()} == {
        item.message.key.urlsafe().decode(): item.message.lease for item in leased
    }


def _dead_journal(directory: Path, held: list[tuple[str, str]]) -> None:
    """A journal file of a process that is no longer running, holding these leases."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    (directory / f"{child.pid}-0{journal.SUFFIX}").write_text(
        "".join("L" + json.dumps([key, holder]) + "\n" for key, holder in held)
    )


def _leased_test_messages(api, ndb_client, org, url: str, count: int) -> list:
    """`count` webhook.test messages to an endpoint at `url`, leased by a dispatcher."""
    endpoint = api.post("/v1/webhooks/endpoints", json={"url": url})
    assert endpoint.status_code == 201, endpoint.text
    for _ in range(count):
        sent = api.post(f"/v1/webhooks/endpoints/{endpoint.json()['id']}/test")
        assert sent.status_code in (200, 201, 202), sent.text
    with ndb_client.context(namespace=org["namespace"]):
        keys = dispatch.due_keys(utcnow() + timedelta(seconds=1), 100)
        endpoints = {e.key.id(): e for e in WebhookEndpoint.query().fetch()}
        leased = dispatch.lease_many(keys, utcnow(), dispatch.Settings(), endpoints)
        assert len(leased) == count and not dispatch.due_keys(utcnow(), 100)
    return leased


def test_many_leases_of_stopped_processes_are_released_in_batches(
    config, ndb_client, tmp_path, api, org, monkeypatch
):
    """(Session 12) Every lease of every stopped process is released in transactions of
    RELEASE_BATCH keys (one each took a restarted worker seconds), an alert lease among
    them, and the org is listed for the background loops to look at at once."""
    monkeypatch.setattr(datastore, "RELEASE_BATCH", 2)
    leased = _leased_test_messages(api, ndb_client, org, "http://127.0.0.1:9/hook", 5)
    with ndb_client.context(namespace=org["namespace"]):
        lease_key = ndb.Key(AlertLease, "m1", parent=root_key())
        AlertLease(key=lease_key, holder="dead-1", until=utcnow() + timedelta(minutes=1)).put()
    held = [(item.message.key.urlsafe().decode(), item.message.lease) for item in leased]
    _dead_journal(tmp_path, held[:3] + [(lease_key.urlsafe().decode(), "dead-1")])
    _dead_journal(tmp_path, held[3:])
    datastore.recovered = datastore.Recovered()
    create_app(config.replace(transaction_journal_dir=str(tmp_path)))
    with ndb_client.context(namespace=org["namespace"]):
        due = dispatch.due_keys(utcnow() + timedelta(seconds=1), 100)
        assert sorted(due) == sorted(item.message.key for item in leased)
        assert lease_key.get() is None
    assert datastore.recovered.due_orgs == {org["namespace"]}
    assert datastore.recovered.taken == 0  # no background loop here to send them
    datastore.recovered = datastore.Recovered()
    left = [path.name for path in tmp_path.glob("*" + journal.SUFFIX + "*")]
    assert left in ([], [journal.identity(os.getpid()) + journal.SUFFIX])  # only ours


def test_a_restarted_service_takes_over_a_stopped_ones_messages_and_sends_them_at_once(
    config, ndb_client, tmp_path, api, org, monkeypatch
):
    """(Session 15) With background loops, the start leases a stopped process's messages
    anew for itself, in the transaction that releases them, noted in its own journal
    before the commit, and its senders send them at once: no round of the loops (their
    first timed pass is 60 s away here) and no lease transaction of a dispatcher."""
    receiver = Receiver().start()
    try:
        leased = _leased_test_messages(api, ndb_client, org, receiver.url, 3)
        dead = {item.message.key: item.message.lease for item in leased}
        _dead_journal(tmp_path, [(key.urlsafe().decode(), token) for key, token in dead.items()])
        leases_taken = []
        original = dispatch.lease_many
        monkeypatch.setattr(
            dispatch,
            "lease_many",
            lambda *args, **kwargs: leases_taken.append(1) or original(*args, **kwargs),
        )
        app = create_app(
            config.replace(transaction_journal_dir=str(tmp_path), background_delivery_seconds=60)
        )
        try:
            eventually(lambda: len(receiver.received) >= 3, 20, "the taken messages sent")
        finally:
            background.stop(app)
        assert leases_taken == []  # no dispatcher's round leased them
        assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(
            item.message.message_id for item in leased
        )
        with ndb_client.context(namespace=org["namespace"]):
            for key in dead:
                message = eventually(
                    lambda key=key: (m := key.get()).status != PENDING and m, 20, "recorded"
                )
                assert message.status == DELIVERED and message.lease is None
                assert message.attempt_count == 1
    finally:
        receiver.stop()


def test_a_disabled_endpoints_messages_are_made_due_not_taken_over(
    config, ndb_client, tmp_path, api, org
):
    """A stopped process's message to an endpoint disabled since is not leased anew: it
    is made due for a dispatcher's round, which settles it as for any other message."""
    leased = _leased_test_messages(api, ndb_client, org, "http://127.0.0.1:9/hook", 2)
    with ndb_client.context(namespace=org["namespace"]):
        endpoint = leased[0].endpoint.key.get()
        endpoint.enabled = False
        endpoint.put()
    _dead_journal(
        tmp_path, [(item.message.key.urlsafe().decode(), item.message.lease) for item in leased]
    )
    sends = dispatch.Settings()
    held = [(item.message.key, item.message.lease) for item in leased]
    with ndb_client.context(namespace=org["namespace"]):
        done = dispatch.release_stopped(held, sends, dispatch.endpoints_by_id())
        assert done.taken == [] and done.due
        assert sorted(dispatch.due_keys(utcnow() + timedelta(seconds=1), 10)) == sorted(
            key for key, _ in held
        )
        assert all(key.get().lease is None for key, _ in held)


def test_messages_taken_over_are_leased_anew_and_journaled_before_the_commit(
    ndb_client, tmp_path, api, org
):
    """A stopped process's messages are leased anew (new tokens, due only past the new
    lease), and the new leases are in this process's journal: a kill right after the
    take-over leaves them to the next start, as any lease."""
    leased = _leased_test_messages(api, ndb_client, org, "http://127.0.0.1:9/hook", 3)
    journal.start(tmp_path)
    held = [(item.message.key, item.message.lease) for item in leased]
    with ndb_client.context(namespace=org["namespace"]):
        done = dispatch.release_stopped(
            held, dispatch.Settings(timeout_seconds=10), dispatch.endpoints_by_id()
        )
        assert not done.due and len(done.taken) == 3
        assert dispatch.due_keys(utcnow() + timedelta(seconds=15), 10) == []
        stored = {key: key.get().lease for key, _ in held}
    old = dict(held)
    assert all(stored[key] and stored[key] != old[key] for key in stored)
    assert {item.message.key: item.message.lease for item in done.taken} == stored
    assert journal._journal is not None
    assert journal._journal.leases == {
        key.urlsafe().decode(): token for key, token in stored.items()
    }


def test_alert_leases_are_released_first_and_alone(ndb_client, monkeypatch):
    """The evaluation leases of a stopped process go in the first transaction, apart from
    its webhook messages: the other worker's evaluator waits for them, not the sends."""
    monkeypatch.setattr(datastore, "RELEASE_BATCH", 2)
    with ndb_client.context():  # NDB keys take the context's project
        _check_release_order()


def _check_release_order() -> None:
    messages = [(ndb.Key(MESSAGE_KIND, f"msg_{n}.1", namespace="o"), "t") for n in range(3)]
    lease = (ndb.Key(AlertLease, "m1", namespace="o"), "dead-1")
    batches = datastore._release_batches([messages[0], lease, *messages[1:]])
    assert batches == [[lease], messages[:2], messages[2:]]
