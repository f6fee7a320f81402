// The generated TypeScript client (clients/ts/gen, protobuf-es + Connect) from plain Node.js 20+.
//
//   (cd clients/ts && npm ci)                                      # once: installs node_modules/
//   scripts/dev serve                                              # in another terminal
//   AGENTRUN_SERVER=127.0.0.1:50051 node examples/node_client.mjs
//
// Runs `echo` and prints its output, then streams `slow` and prints the content as it arrives.
// The packages live in clients/ts/node_modules, which Node does not search from examples/, so they
// are loaded with a require() rooted in clients/ts; the generated code is imported by path.
// tests/test_examples.py runs this file against a real server.
import { createRequire } from "node:module";

import { EventType, RunState } from "../clients/ts/gen/agentrun/v1/run_pb.js";
import { RunService } from "../clients/ts/gen/agentrun/v1/run_service_pb.js";

const require = createRequire(new URL("../clients/ts/package.json", import.meta.url));
const { createClient } = require("@connectrpc/connect");
const { Http2SessionManager, createGrpcTransport } = require("@connectrpc/connect-node");

const baseUrl = `http://${process.env.AGENTRUN_SERVER ?? "127.0.0.1:50051"}`;
// One HTTP/2 connection, closed at the end so that node exits.
const sessionManager = new Http2SessionManager(baseUrl);
const client = createClient(RunService, createGrpcTransport({ baseUrl, sessionManager }));

try {
  // 1. a synchronous run
  const { run } = await client.run({ agentId: "echo", input: { message: "hello from node" }, wait: true });
  console.log(`echo: ${RunState[run.state]} ${JSON.stringify(run.output)}`);

  // 2. a stream: content deltas as they arrive, until STOP (or ERROR)
  let content = "";
  for await (const { event } of client.streamRun({
    run: { agentId: "slow", input: { message: "tokens=5 delay_ms=10" } },
  })) {
    if (event.type === EventType.CONTENT_DELTA) {
      content += event.payload.value;
      console.log(`  ${event.seq} content ${JSON.stringify(event.payload.value)}`);
    } else {
      console.log(`  ${event.seq} ${EventType[event.type]}`);
    }
  }
  console.log(`slow: ${JSON.stringify(content)}`);
} finally {
  sessionManager.abort();
}
