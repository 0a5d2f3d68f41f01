"""Both stores honour every seam, member by member: the names, async or not, and parameters
a consumer may pass (a backend may take more, but only with defaults)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from agent.store import seams
from agent.store.postgres import PostgresStore
from agent.store.sqlite import SqliteStore

SEAMS = [seams.Lifecycle, seams.CallLog, seams.Outbox, seams.Suppressions, seams.Engagement,
         seams.DispatchStore, seams.ReplyStore, seams.Store, seams.CallReads, seams.MessageLog,
         seams.ListAdmin, seams.ReplyReads, seams.CallsView]
DATA_SEAMS = [seams.Lifecycle, seams.CallLog, seams.Outbox, seams.Suppressions, seams.Engagement]
BACKENDS = [SqliteStore, PostgresStore]


def members(protocol: type) -> dict[str, Any]:
    """What ``protocol`` itself declares and what its bases (seams) declare."""
    out: dict[str, Any] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                out[name] = value
    return out


def test_the_data_seams_split_the_store_without_overlap() -> None:
    seen: dict[str, str] = {}
    for seam in DATA_SEAMS:
        for name in members(seam):
            assert name not in seen, f"{name} is in {seen[name]} and {seam.__name__}"
            seen[name] = seam.__name__
    assert set(seen) == set(members(seams.Store))


@pytest.mark.parametrize("impl", BACKENDS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("seam", SEAMS, ids=lambda s: s.__name__)
def test_each_store_implements_each_seam(impl: type, seam: type) -> None:
    for name, wanted in members(seam).items():
        have = inspect.getattr_static(impl, name, None)
        assert have is not None, f"{impl.__name__} lacks {seam.__name__}.{name}"
        if isinstance(wanted, property):
            assert isinstance(have, property), f"{impl.__name__}.{name} is not a property"
            continue
        assert inspect.iscoroutinefunction(have) == inspect.iscoroutinefunction(wanted) or (
            inspect.isasyncgenfunction(have)), f"{impl.__name__}.{name}: async differs"
        _compatible(f"{impl.__name__}.{name}", inspect.signature(wanted),
                    inspect.signature(have))


def _compatible(where: str, wanted: inspect.Signature, have: inspect.Signature) -> None:
    params = dict(have.parameters)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name, p in wanted.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            assert any(q.kind is p.kind for q in params.values()), f"{where}: no {p}"
            continue
        q = params.pop(name, None)
        if q is None:
            assert takes_kwargs and p.kind is p.KEYWORD_ONLY, f"{where}: no parameter {name}"
            continue
        if p.kind is p.KEYWORD_ONLY:
            assert q.kind in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD), f"{where}: {name} kind"
        else:
            assert q.kind in (q.POSITIONAL_OR_KEYWORD, q.POSITIONAL_ONLY), f"{where}: {name} kind"
        if p.default is not p.empty:
            assert q.default is not q.empty, f"{where}: {name} must have a default"
    extra = [q for q in params.values()
             if q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD) and q.default is q.empty]
    assert not extra, f"{where}: required parameters the seam does not pass: {extra}"


def test_consumers_take_their_seam_not_the_whole_store() -> None:
    from agent.dispatch.dispatcher import Dispatcher
    from agent.dispatch.intake import Intake
    from agent.dispatch.sender import Sender
    from agent.dispatch.verdicts import give_verdict
    from agent.loop.pipeline import RecordPipeline
    from agent.loop.recovery import Recovery
    from agent.loop.replies import ReplyHandler
    from agent.loop.wrapups import WrapupWaits

    expected = {Dispatcher.__init__: "DispatchStore", Intake.__init__: "DispatchStore",
                Sender.__init__: "DispatchStore", give_verdict: "Outbox",
                RecordPipeline.__init__: "CallLog", Recovery.__init__: "CallLog",
                ReplyHandler.__init__: "ReplyStore", WrapupWaits.__init__: "CallLog"}
    for fn, seam in expected.items():
        assert inspect.signature(fn).parameters["store"].annotation == seam, fn.__qualname__


def test_web_routes_read_the_store_as_their_seam() -> None:
    from agent.web import calls, hooks, manage

    expected = {hooks._store: "Engagement", calls._store: "CallsView", manage._lists: "ListAdmin",
                manage._log: "MessageLog", manage._outbox: "Outbox"}
    for fn, seam in expected.items():
        assert inspect.signature(fn).return_annotation == seam, fn.__qualname__
    for module in (calls, hooks, manage):  # no route reaches past its accessors
        source = inspect.getsource(module)
        accessors = [fn for fn in expected if fn.__module__ == module.__name__]
        reaches = re.findall(r"(?<!agent)\.store\b", source)
        assert len(reaches) == len(accessors), module.__name__
