"""Waiting for the study storage (zeustune/search/storage.py), with a fake storage and a fake clock:
an unreachable database is retried with backoff and said once, a bug is raised at once, a long
outage ends in one clear error, and a write whose reply was lost is not stored twice."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import exc

from zeustune.search.storage import Patience, PatientStorage, StorageUnavailable, transient


def unreachable() -> optuna.exceptions.StorageInternalError:
    """What Optuna raises when PostgreSQL is down: its wrapper around SQLAlchemy's error."""
    cause = exc.OperationalError("SELECT 1", {}, Exception("connection to server failed: Connection refused"))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause
    except optuna.exceptions.StorageInternalError as e:
        return e


def bad_query() -> optuna.exceptions.StorageInternalError:
    cause = exc.ProgrammingError("SELECT nope", {}, Exception('column "nope" does not exist'))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause
    except optuna.exceptions.StorageInternalError as e:
        return e


class Clock:
    """Fake time: sleeping advances it."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


class Flaky:
    """A storage call that fails ``n`` times, then answers."""

    def __init__(self, n, error=unreachable):
        self.n, self.error, self.calls = n, error, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.n:
            raise self.error()
        return "trials"


def patience(seconds=600):
    clock, lines = Clock(), []
    p = Patience(seconds, where="postgresql://zeustune:secret@db/zeustune", log=lines.append, sleep=clock.sleep,
                 clock=lambda: clock.now)
    return p, clock, lines


def test_an_unreachable_storage_is_retried_with_backoff_and_said_once():
    p, clock, lines = patience()
    call = Flaky(6)
    assert p.call(call) == "trials" and call.calls == 7
    assert clock.slept == [0.5, 1, 2, 4, 8, 15]
    assert len(lines) == 2
    assert lines[0].startswith("storage postgresql://zeustune:***@db/zeustune: unreachable (connection to server failed")
    assert "waiting up to 600 s (--storage-patience)" in lines[0] and "secret" not in lines[0]
    assert lines[1] == "storage postgresql://zeustune:***@db/zeustune: back after 30 s; the search goes on"
    assert p.call(Flaky(0)) == "trials" and len(lines) == 2  # nothing more to say while it answers


def test_calls_during_one_outage_share_its_deadline_and_its_line():
    p, clock, lines = patience(10)
    with pytest.raises(StorageUnavailable):
        p.call(Flaky(100))
    assert sum(clock.slept) == 10  # never past the deadline
    with pytest.raises(StorageUnavailable):  # still the same outage: no new line, no new 10 s
        p.call(Flaky(100))
    assert sum(clock.slept) == 10 and len(lines) == 1 and p.outages == 1


def test_a_long_outage_ends_in_one_clear_error_naming_the_flag():
    p, clock, lines = patience(60)
    with pytest.raises(StorageUnavailable) as e:
        p.call(Flaky(100))
    msg = str(e.value)
    assert msg.startswith("--storage postgresql://zeustune:***@db/zeustune: unreachable for 60 s, expected back within "
                          "--storage-patience 60 s (last error: connection to server failed: Connection refused)")
    assert "run the same command again to resume" in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback to print


def test_no_patience_gives_up_at_once():
    p, clock, lines = patience(0)
    with pytest.raises(StorageUnavailable):
        p.call(Flaky(1))
    assert clock.slept == [] and lines == []


@pytest.mark.parametrize("error", [bad_query, lambda: ValueError("a bug"),
                                   lambda: exc.IntegrityError("INSERT", {}, Exception("duplicate key"))])
def test_errors_that_waiting_does_not_fix_are_raised_at_once(error):
    p, clock, lines = patience()
    call = Flaky(1, error)
    with pytest.raises(type(error())):
        p.call(call)
    assert call.calls == 1 and clock.slept == [] and lines == []


def test_what_counts_as_unreachable():
    assert transient(unreachable())
    assert transient(exc.OperationalError("SELECT 1", {}, Exception("database is locked")))  # SQLite, busy
    assert transient(exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")))
    assert transient(exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True))
    assert not transient(bad_query())
    assert not transient(optuna.exceptions.StorageInternalError("no cause"))
    assert not transient(RuntimeError("Trial#3 has already finished and can not be updated."))


class LostReply:
    """A storage whose trial writes reach the database but whose replies are lost ``n`` times."""

    def __init__(self, n):
        self.inner, self.n = optuna.storages.InMemoryStorage(), n

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create_new_trial(self, study_id, template_trial=None):
        self.inner.create_new_trial(study_id, template_trial)
        if self.n:
            self.n -= 1
            raise unreachable()
        return self.inner.get_all_trials(study_id, deepcopy=False)[-1]._trial_id


def test_a_trial_write_whose_reply_was_lost_is_stored_once():
    clock = Clock()
    storage = PatientStorage(LostReply(2), Patience(60, log=lambda _: None, sleep=clock.sleep, clock=lambda: clock.now))
    study = optuna.create_study(storage=storage, directions=["minimize", "minimize"])
    trial = optuna.trial.create_trial(values=[0.1, 0.2], user_attrs={"key": "FFEF", "gates": ("E", "R")})
    trial_id = storage.create_new_trial(study._study_id, template_trial=trial)
    assert len(study.trials) == 1 and study.trials[0]._trial_id == trial_id and clock.slept == [0.5]
    other = optuna.trial.create_trial(values=[0.1, 0.2], user_attrs={"key": "FFFE"})
    storage.create_new_trial(study._study_id, template_trial=other)  # lost, then found: a different trial is written
    assert [t.user_attrs["key"] for t in study.trials] == ["FFEF", "FFFE"]


def test_every_storage_method_goes_through_patience():
    clock, lines = Clock(), []
    down = Flaky(2)

    class Down:
        def __getattr__(self, name):
            return lambda *a, **k: down()

    storage = PatientStorage(Down(), Patience(60, log=lines.append, sleep=clock.sleep, clock=lambda: clock.now))
    assert storage.get_all_trials(0) == "trials" and len(lines) == 2  # a read
    down.calls = 0
    assert storage.set_study_user_attr(0, "k", 1) == "trials"  # a write
    assert not PatientStorage.__abstractmethods__
    for name in ("get_trial", "set_trial_state_values", "get_n_trials", "get_trial_id_from_study_id_trial_number"):
        assert getattr(PatientStorage, name).__doc__.startswith("The wrapped storage's")


def test_the_cli_gives_up_with_one_line_and_status_2(monkeypatch, capsys):
    from zeustune import cli
    from zeustune.search import driver

    seen = {}

    def run(cfg):
        seen["patience"] = cfg.storage_patience
        p, _, _ = patience(cfg.storage_patience)
        return p.call(Flaky(100))

    monkeypatch.setattr(driver, "run", run)
    assert cli.main(["search", "--model", "tiny-flux", "--storage-patience", "30"]) == 2
    err = capsys.readouterr().err
    assert seen["patience"] == 30.0
    gave_up = [line for line in err.splitlines() if "unreachable for" in line]
    assert len(gave_up) == 1 and "Traceback" not in err
    assert gave_up[0].startswith("zeustune: --storage postgresql://zeustune:***@db/zeustune: unreachable for 30 s")
    assert cli.main(["search", "--model", "tiny-flux", "--storage-patience", "-1"]) == 2
    assert "--storage-patience: got -1.0, expected a number of seconds >= 0" in capsys.readouterr().err
