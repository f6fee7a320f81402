"""UpdateRun over gRPC against a real server: it replaces a run's metadata, in any state, and
nothing else; what a mask may name, the implied mask, the limits metadata is held to, and run refs.
Tenancy and roles are covered with every other RPC in tests/test_auth.py."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format

from tests.conftest import Harness
from tests.test_bad_input_grpc import refusal, struct

Code = grpc.StatusCode
S = run_pb2.RunState


def update(ref: str, metadata: dict[str, Any] | None = None, *paths: str, **run: Any) -> pb.UpdateRunRequest:
    request = pb.UpdateRunRequest(run=run_pb2.Run(id=ref, **run), update_mask={"paths": list(paths)})
    if metadata is not None:
        request.run.metadata.update(metadata)
    return request


def metadata_of(run: run_pb2.Run) -> dict[str, Any]:
    return json_format.MessageToDict(run.metadata)


async def test_metadata_is_replaced_whole_and_nothing_else_changes(h: Harness) -> None:
    run = await h.run("echo", "hello", wait=True, metadata=struct({"family": "C", "old": 1}))
    updated = (await h.stub.UpdateRun(update(run.id, {"task": {"prompt": "new"}}, "metadata"))).run
    assert metadata_of(updated) == {"task": {"prompt": "new"}}
    assert updated.update_time.ToNanoseconds() >= run.update_time.ToNanoseconds()
    unchanged = ("id", "number", "state", "output", "last_seq", "create_time", "complete_time", "input")
    for field in unchanged:
        assert getattr(updated, field) == getattr(run, field), field
    assert metadata_of(await h.get(str(run.number))) == {"task": {"prompt": "new"}}
    # By number too; an empty metadata clears it.
    cleared = (await h.stub.UpdateRun(update(str(run.number), {}, "metadata"))).run
    assert cleared.id == run.id and not cleared.HasField("metadata")


async def test_runs_in_every_state_take_new_metadata(h: Harness) -> None:
    paused = await h.run("approval", "send the report", wait=True)
    queued_or_running = await h.run("slow", "tokens=200 delay_ms=20")
    noted = (await h.stub.UpdateRun(update(paused.id, {"n": 1}, "metadata"))).run
    assert (noted.state, metadata_of(noted)) == (S.RUN_STATE_PAUSED, {"n": 1})
    noted = (await h.stub.UpdateRun(update(queued_or_running.id, {"n": 1}, "metadata"))).run
    assert noted.state in (S.RUN_STATE_QUEUED, S.RUN_STATE_RUNNING) and metadata_of(noted) == {"n": 1}
    await h.stub.CancelRun(pb.CancelRunRequest(run_id=queued_or_running.id))
    cancelled = await h.get(queued_or_running.id)
    assert cancelled.state == S.RUN_STATE_CANCELLED and metadata_of(cancelled) == {"n": 1}  # kept


async def test_without_a_mask_the_fields_set_are_meant(h: Harness) -> None:
    run = await h.run("echo", "hi", wait=True, metadata=struct({"a": "b"}))
    same = (await h.stub.UpdateRun(update(run.id))).run  # nothing set: nothing changes
    assert metadata_of(same) == {"a": "b"}
    changed = (await h.stub.UpdateRun(update(run.id, {"c": "d"}))).run
    assert metadata_of(changed) == {"c": "d"}
    code, _, fields, _ = await refusal(h.stub.UpdateRun(update(run.id, {"e": 1}, agent_id="tools")))
    assert (code, fields) == (Code.INVALID_ARGUMENT, ["run.agent_id"])
    assert metadata_of(await h.get(run.id)) == {"c": "d"}


@pytest.mark.parametrize("paths", [["agent_id"], ["metadata", "state"], ["*"], ["metadata.key"], ["input"]])
async def test_a_mask_naming_another_field_is_invalid_argument(h: Harness, paths: list[str]) -> None:
    run = await h.run("echo", "hi", wait=True)
    code, reason, fields, message = await refusal(h.stub.UpdateRun(update(run.id, {"x": 1}, *paths)))
    assert (code, reason) == (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert fields == ["update_mask"] * (len(paths) - paths.count("metadata"))
    assert next(p for p in paths if p != "metadata") in message
    assert not (await h.get(run.id)).metadata


async def test_metadata_is_held_to_the_limits_of_a_submission(h: Harness) -> None:
    run = await h.run("echo", "hi", wait=True)
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(25):
        deep = {"d": deep}
    for bad in ({"big": "x" * 70_000}, deep, {"nul": "a\x00b"}, {"n": float("nan")}):
        code, _, fields, _ = await refusal(h.stub.UpdateRun(update(run.id, bad, "metadata")))
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["run.metadata"]), bad
    assert not (await h.get(run.id)).metadata
    largest = {"big": "x" * 60_000}
    assert metadata_of((await h.stub.UpdateRun(update(run.id, largest, "metadata"))).run) == largest


async def test_run_refs(h: Harness) -> None:
    for ref in ("", "r" * 65):
        code, _, fields, _ = await refusal(h.stub.UpdateRun(update(ref, {"x": 1}, "metadata")))
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["run.id"]), ref
    for ref in ("00000000-0000-0000-0000-000000000000", "99999", str(2**40)):
        code, reason, _, _ = await refusal(h.stub.UpdateRun(update(ref, {"x": 1}, "metadata")))
        assert (code, reason) == (Code.NOT_FOUND, "RUN_NOT_FOUND"), ref
