"""The study storage, waited for through outages.

A search on a cluster runs for hours, and managed databases restart for maintenance. Every storage
call of a search goes through :class:`Patience`: an error that says the database cannot be reached
is retried with exponential backoff until the storage is back or ``--storage-patience`` seconds
have passed since it went away; any other error (a bad query, bad data) is raised at once. While
it waits the search holds still, so the trials it finished stay in memory (the mirror ``Search.live``
and the write in hand) and are written when the storage answers again.

:class:`PatientStorage` wraps an Optuna storage so that every call a study makes goes through one
:class:`Patience`, whoever makes it (the loop, the sampler's reads, the export).

>>> import optuna
>>> from zeustune.search.storage import Patience, PatientStorage
>>> storage = PatientStorage(optuna.storages.InMemoryStorage(), Patience(60, where="memory"))
>>> study = optuna.create_study(storage=storage)
>>> study.add_trial(optuna.trial.create_trial(value=1.0))
>>> len(study.trials)
1
"""

from __future__ import annotations

import abc
import json
import sys
import time

import optuna
from optuna.storages import BaseStorage

#: Seconds a search waits for its storage to come back before it gives up (--storage-patience).
DEFAULT_PATIENCE = 600.0
#: The first wait after a failure, doubling up to the longest: a short restart costs seconds, and
#: a long outage is polled every 15 s at most, so the search resumes soon after the storage.
FIRST_DELAY, LONGEST_DELAY = 0.5, 15.0


class StorageUnavailable(RuntimeError):
    """The storage stayed unreachable for longer than the search's patience."""


def transient(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached (worth waiting for), rather than
    that a query or its data was wrong (a bug, which waiting does not fix)."""
    from sqlalchemy import exc

    # Optuna wraps every SQLAlchemy error of a session in StorageInternalError: judge the cause.
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else error
    if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
        return True
    return isinstance(cause, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError))


def reason(error: BaseException) -> str:
    """The first line of what the database driver said."""
    cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else error
    text = str(getattr(cause, "orig", None) or cause or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def redacted(url: str) -> str:
    """A storage URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: it failed to open long before any message
        return url


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Patience:
    """Calls into a storage, waiting out its outages.

    A call that fails with a :func:`transient` error is retried after 0.5 s, then 1, 2, 4 ... up to
    15 s between tries, until ``seconds`` after the outage began (the first failed call; the calls
    made while it lasts share that deadline); then :class:`StorageUnavailable` is raised. One line
    goes to ``log`` when an outage begins and one when it ends, however many calls wait in it."""

    def __init__(self, seconds: float = DEFAULT_PATIENCE, where: str = "", log=_stderr, sleep=time.sleep,
                 clock=time.monotonic):
        self.seconds, self.where = float(seconds), redacted(where)
        self.log, self.sleep, self.clock = log or _stderr, sleep, clock
        self.down_since: float | None = None  # clock() at the first failure of the current outage
        self.outages = 0

    def call(self, fn, *args, **kwargs):
        delay = FIRST_DELAY
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                if not transient(e):
                    raise
                self._wait(e, delay)
                delay = min(2 * delay, LONGEST_DELAY)
                continue
            if self.down_since is not None:
                self.log(f"storage {self.where}: back after {self.clock() - self.down_since:.0f} s; the search goes on")
                self.down_since = None
            return out

    def _wait(self, error: BaseException, delay: float) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since, self.outages = now, self.outages + 1
            if self.seconds > 0:
                self.log(f"storage {self.where}: unreachable ({reason(error)}); waiting up to {self.seconds:g} s "
                         "(--storage-patience) for it to come back, with the finished trials kept in memory")
        waited = now - self.down_since
        if waited >= self.seconds:
            raise StorageUnavailable(
                f"--storage {self.where}: unreachable for {waited:.0f} s, expected back within --storage-patience "
                f"{self.seconds:g} s (last error: {reason(error)}); the trials stored before the outage are kept: run "
                "the same command again to resume the study") from None
        self.sleep(min(delay, self.seconds - waited))


class PatientStorage(BaseStorage):
    """An Optuna storage whose every call goes through :class:`Patience`.

    A write can reach the database and its acknowledgement be lost with the connection; retried
    blindly, a finished trial would be stored twice. So a trial write that failed looks for its
    trial (same start and end times, same attributes) before it writes again."""

    def __init__(self, inner: BaseStorage, patience: Patience):
        self.inner, self.patience = inner, patience

    def create_new_trial(self, study_id: int, template_trial=None) -> int:
        tries = 0

        def write() -> int:
            nonlocal tries
            tries += 1
            if tries > 1 and template_trial is not None and template_trial.datetime_start is not None:
                for t in self.inner.get_all_trials(study_id, deepcopy=False):
                    if _same_trial(t, template_trial):
                        return t._trial_id  # noqa: SLF001 - the id create_new_trial returns
            return self.inner.create_new_trial(study_id, template_trial)

        return self.patience.call(write)

    def claim(self, study_id: int, name: str, holder: str) -> str:
        """Claim ``name`` in the study for ``holder`` (insert-only, see :func:`claim`), through
        :class:`Patience`."""
        return self.patience.call(claim, self.inner, study_id, name, holder)


def claim(storage: BaseStorage, study_id: int, name: str, holder: str) -> str:
    """Claim ``name`` (a study system attribute) for ``holder``, never overwriting: the holder
    that stands, ``holder`` when no one claimed it first. Several drivers on one study claim a plan
    before they score it, so each plan is scored once (:meth:`Search.claimed_elsewhere`).

    On an SQL storage the claim is a plain INSERT that meets the table's unique (study, key)
    constraint, so of two drivers racing for one name exactly one wins; optuna's own setter
    updates an existing row, which would let a late driver overwrite an early one."""
    from optuna.storages import RDBStorage

    rdb = getattr(storage, "_backend", storage)  # optuna wraps SQL storages in a trial cache
    if isinstance(storage, PatientStorage):
        return storage.claim(study_id, name, holder)
    if isinstance(rdb, RDBStorage):
        from optuna.storages._rdb import models  # noqa: PLC2701 - the table the insert targets
        from sqlalchemy.exc import IntegrityError

        session = rdb.scoped_session()
        try:
            session.add(models.StudySystemAttributeModel(study_id=study_id, key=name, value_json=json.dumps(holder)))
            session.commit()
            return holder
        except IntegrityError:
            session.rollback()
        finally:
            session.close()
    else:  # one process (the in-memory storage): nothing races between the read and the write
        held = storage.get_study_system_attrs(study_id).get(name)
        if held is not None:
            return held
        storage.set_study_system_attr(study_id, name, holder)
        return holder
    return rdb.get_study_system_attrs(study_id)[name]


def _same_trial(a, b) -> bool:
    def attrs(t):
        return json.dumps(t.user_attrs, sort_keys=True, default=str)  # as stored: tuples come back as lists

    return (a.state == b.state and a.datetime_start == b.datetime_start and a.datetime_complete == b.datetime_complete
            and attrs(a) == attrs(b))


def _through_patience(name: str):
    def method(self, *args, **kwargs):
        return self.patience.call(getattr(self.inner, name), *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The wrapped storage's ``{name}``, through :class:`Patience`."
    return method


# Every other public method of the storage interface, generated: a call missed here would be the
# one that kills a long search.
for _name, _value in vars(BaseStorage).items():
    if callable(_value) and not _name.startswith("_") and _name not in vars(PatientStorage):
        setattr(PatientStorage, _name, _through_patience(_name))
del _name, _value
abc.update_abstractmethods(PatientStorage)
