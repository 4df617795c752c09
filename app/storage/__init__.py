"""Raw Datastore access for the hot paths.

NDB's model-to-protobuf conversion costs a few hundred microseconds per entity,
more than the whole per-event CPU budget of ingestion. The ingestion and summary
paths therefore build the protobufs themselves (`entities`, `rollups`) and send
them through the NDB client's own gRPC channel (`rpc`), inside the request's NDB
context (same project, database and namespace). A test proves the protobufs are
exactly what the NDB models store. `metrics` counts every RPC and entity.
"""
