"""The `agentrun` command: the one layer above both the server and the gateway. `agentrun serve`
runs the gRPC server and, in the same process, the HTTP gateway in front of it."""
