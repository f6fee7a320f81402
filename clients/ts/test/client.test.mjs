// The generated client against a real server: gRPC over HTTP/2 (prior knowledge) via Connect.
//   AGENTRUN_SERVER=127.0.0.1:50051 node --test clients/ts/test/
// tests/test_ts_client.py starts a server and runs this file.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { Decision, EventType, RunState } from "../gen/agentrun/v1/run_pb.js";
import { RunService } from "../gen/agentrun/v1/run_service_pb.js";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

const server = process.env.AGENTRUN_SERVER;
if (!server) {
  throw new Error("set AGENTRUN_SERVER=HOST:PORT to the gRPC address of a running agentrun server");
}
const baseUrl = `http://${server}`;
// One HTTP/2 connection (prior knowledge: plain http), closed when the tests are done so node exits.
const sessionManager = new Http2SessionManager(baseUrl);
after(() => sessionManager.abort());
const client = createClient(RunService, createGrpcTransport({ baseUrl, sessionManager }));
const callOptions = { timeoutMs: 20_000 };
const testOptions = { timeout: 30_000 };

test("Run(wait) of echo completes with the message as output", testOptions, async () => {
  const { run } = await client.run(
    { agentId: "echo", input: { message: "hello from connect" }, wait: true },
    callOptions,
  );
  assert.equal(run?.state, RunState.COMPLETED);
  assert.match(run.output, /hello from connect/);
  assert.ok(run.id.length > 0);
  assert.equal(typeof run.lastSeq, "bigint");
});

test("StreamRun: leave mid-run, re-attach after the last seq, no gap or repeat, ends with STOP", testOptions, async () => {
  const seen = [];
  let runId = "";
  const leave = new AbortController();
  const first = client.streamRun(
    { run: { agentId: "slow", input: { message: "tokens=20 delay_ms=10" } } },
    // Not timeoutMs: connect keeps that timer running after a hang-up, and node would wait for it.
    { signal: AbortSignal.any([leave.signal, AbortSignal.timeout(20_000)]) },
  );
  for await (const { event } of first) {
    seen.push(event);
    runId = event.runId;
    if (seen.length === 4) {
      leave.abort(); // hang up mid-run, as a client that goes away does; the run goes on
      break;
    }
  }
  assert.equal(seen.length, 4);
  assert.equal(seen[0].type, EventType.START);
  const afterSeq = seen.at(-1).seq;

  for await (const { event } of client.streamRun({ runId, afterSeq }, callOptions)) {
    assert.equal(event.runId, runId);
    seen.push(event);
  }
  assert.deepEqual(
    seen.map((e) => e.seq),
    seen.map((_, i) => BigInt(i + 1)),
    "seqs continue 1, 2, 3 … across the re-attach",
  );
  const last = seen.at(-1);
  assert.equal(last.type, EventType.STOP);
  assert.equal(last.payload.case, "stop");
  assert.equal(last.payload.value.state, RunState.COMPLETED);
  const tokens = seen.filter((e) => e.type === EventType.CONTENT_DELTA);
  assert.ok(tokens.length >= 20, `expected ≥ 20 content deltas, got ${tokens.length}`);

  const { run } = await client.getRun({ runId }, callOptions);
  assert.equal(run?.state, RunState.COMPLETED);
  assert.equal(run.lastSeq, last.seq);
});

test("BatchGetRuns lists the ids that do not exist", testOptions, async () => {
  const { run } = await client.run({ agentId: "echo", input: { message: "batch" }, wait: true }, callOptions);
  const missing = "no-such-run-for-batch";
  const reply = await client.batchGetRuns({ runIds: [run.id, missing] }, callOptions);
  assert.deepEqual(
    reply.runs.map((r) => r.id),
    [run.id],
  );
  assert.deepEqual(reply.missingRunIds, [missing]);
});

test("Continue(APPROVE) of a paused approval run completes it", testOptions, async () => {
  const { run: paused } = await client.run(
    { agentId: "approval", input: { message: "send the report" }, wait: true },
    callOptions,
  );
  assert.equal(paused?.state, RunState.PAUSED);
  assert.ok(paused.pendingAction?.toolCallId, "a paused run names its pending tool call");
  const { run } = await client.continue(
    {
      runId: paused.id,
      toolCallId: paused.pendingAction.toolCallId,
      decision: Decision.APPROVE,
      wait: true,
    },
    callOptions,
  );
  assert.equal(run?.state, RunState.COMPLETED);
  assert.equal(run.decisions.at(-1)?.decision, Decision.APPROVE);
});

test("GetRun of an unknown id is NOT_FOUND with ErrorInfo reason RUN_NOT_FOUND", testOptions, async () => {
  const err = await client.getRun({ runId: "no-such-run" }, callOptions).then(
    () => assert.fail("GetRun of an unknown id succeeded"),
    (e) => ConnectError.from(e),
  );
  assert.equal(err.code, Code.NotFound, String(err));
  const infos = err.findDetails(ErrorInfoSchema);
  assert.equal(infos.length, 1, `details: ${JSON.stringify(err.details.map((d) => d.type))}`);
  assert.equal(infos[0].reason, "RUN_NOT_FOUND");
  assert.equal(infos[0].metadata.run_id, "no-such-run");
});
