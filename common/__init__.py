"""What the server and the gateway both need and that does no I/O: the error table, the families'
renderings of a Run, option parsing and shared limits. Imports only gen/, the standard library and
light libraries (protobuf, grpcio's status types); never `server` or `gateway`."""
