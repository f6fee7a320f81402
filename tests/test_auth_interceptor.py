"""Auth is one server interceptor in front of every call: every RunService method, enumerated from the
descriptor (so a new RPC is covered the day it is added), refuses a caller without credentials; so
does a method no service has; health and reflection stay open; with auth off every handler is still
reached, as the unscoped caller."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.auth.interceptor import current_identity
from tests.conftest import Harness, Launcher
from tests.test_auth import Tenants, bearer, h, tenants  # noqa: F401 - the fixtures: a server with auth on
from tests.test_runs import details

Code = grpc.StatusCode
RUN_SERVICE = pb.DESCRIPTOR.services_by_name["RunService"]


async def call(stub: Any, method: MethodDescriptor, metadata: Any = ()) -> Any:
    """`method` with an empty request of its input type; a stream's first response."""
    request = message_factory.GetMessageClass(method.input_type)()
    rpc = getattr(stub, method.name)
    sent = rpc(iter([request]) if method.client_streaming else request, metadata=metadata)
    if method.server_streaming:
        async for response in sent:
            return response
        return None
    return await sent


async def outcome(stub: Any, method: MethodDescriptor, metadata: Any = ()) -> tuple[Code, str]:
    try:
        await call(stub, method, metadata)
    except grpc.aio.AioRpcError as error:
        return error.code(), details(error)[0].reason
    return Code.OK, ""


async def test_every_method_refuses_a_caller_without_credentials(h: Harness) -> None:  # noqa: F811
    assert len(RUN_SERVICE.methods) >= 13
    got = {m.name: await outcome(h.stub, m) for m in RUN_SERVICE.methods}
    assert got == {m.name: (Code.UNAUTHENTICATED, "UNAUTHENTICATED") for m in RUN_SERVICE.methods}


async def test_a_method_no_service_has_needs_credentials_too(h: Harness, tenants: Tenants) -> None:  # noqa: F811
    def raw(path: str) -> Any:
        return h.channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)

    for path in (f"/{RUN_SERVICE.full_name}/NoSuchMethod", "/agentrun.v1.Hidden/Probe"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(path)(b"")
        assert caught.value.code() == Code.UNAUTHENTICATED, path
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(path)(b"", metadata=bearer(tenants.a_user))
        assert caught.value.code() == Code.UNIMPLEMENTED, path  # only an authenticated caller learns it
    streams = h.channel.stream_stream("/agentrun.v1.Hidden/Stream", bytes, bytes)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in streams(iter([b""])):
            pass
    assert caught.value.code() == Code.UNAUTHENTICATED


async def test_health_and_reflection_stay_open(h: Harness) -> None:  # noqa: F811
    health = health_pb2_grpc.HealthStub(h.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=RUN_SERVICE.full_name))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(h.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=RUN_SERVICE.full_name),
    ]
    replies = [r async for r in reflect.ServerReflectionInfo(iter(requests))]
    assert RUN_SERVICE.full_name in {s.name for s in replies[0].list_services_response.service}
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_with_auth_off_every_handler_runs_as_the_unscoped_caller(launch: Launcher) -> None:
    off = await launch()
    for method in RUN_SERVICE.methods:
        # Empty requests are mostly invalid; what matters is that each handler ran and had a caller.
        code, reason = await outcome(off.stub, method)
        assert code not in (Code.UNAUTHENTICATED, Code.INTERNAL, Code.UNKNOWN), (method.name, code, reason)


def test_a_handler_reached_without_the_interceptor_has_no_caller() -> None:
    with pytest.raises(RuntimeError, match="AuthInterceptor"):
        current_identity()
