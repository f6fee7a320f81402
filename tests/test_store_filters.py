"""ListRuns' metadata filter and its one-run-per-session view, on every backend (the families scope
their lists with them: family B's jobs, family A's sessions, family C's tasks)."""

from __future__ import annotations

from server.store.contract import Store
from server.store.records import RunFilter
from tests.test_store_contract import ORG, published, queued, store

__all__ = ["published", "store"]


async def test_runs_filter_by_top_level_metadata(store: Store) -> None:
    b1 = await queued(store, extras={"family": "B", "framework": "praisonai"})
    await queued(store, extras={"family": "A"})
    await queued(store)  # no metadata at all
    b2 = await queued(store, extras={"family": "B", "n": 1})
    await queued(store, org_id="org-b", extras={"family": "B"})

    runs, total = await store.list_runs(
        RunFilter(org_id=ORG, metadata={"family": "B"}), before_number=None, limit=10
    )
    assert ([r.id for r in runs], total) == ([b2.id, b1.id], 2)
    both = RunFilter(org_id=ORG, metadata={"family": "B", "framework": "praisonai"})
    assert [r.id for r in (await store.list_runs(both, before_number=None, limit=10))[0]] == [b1.id]


async def test_latest_run_of_each_session(store: Store) -> None:
    a1 = await queued(store, session_id="s1", extras={"family": "A"})
    await queued(store, session_id="s2", extras={"family": "A"})
    a3 = await queued(store, session_id="s1", extras={"family": "A"})
    await queued(store, session_id="s3", extras={"family": "B"})
    s2 = await queued(store, session_id="s2", agent_id="tools", extras={"family": "A"})

    latest = RunFilter(org_id=ORG, metadata={"family": "A"}, latest_per_session=True)
    runs, total = await store.list_runs(latest, before_number=None, limit=10)
    assert ([r.id for r in runs], total) == ([s2.id, a3.id], 2)
    page, _ = await store.list_runs(latest, before_number=None, limit=1, offset=1)
    assert [r.id for r in page] == [a3.id]
    echo = RunFilter(org_id=ORG, agent_id="echo", metadata={"family": "A"}, latest_per_session=True)
    runs, total = await store.list_runs(echo, before_number=None, limit=10)
    assert total == 2 and a1.id not in {r.id for r in runs}  # s2's newest echo run, and a3
