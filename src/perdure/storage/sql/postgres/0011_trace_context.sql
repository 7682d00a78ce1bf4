-- perdure schema version 11: trace context (OpenTelemetry). Depends only on version 1: it
-- adds nullable columns.

-- The W3C trace context (JSON: {"traceparent": ..., "tracestate": ...}) of the code that
-- started the workflow: every execution of it, on any executor, after any crash or
-- takeover, continues that trace. NULL when the starter traced nothing.
ALTER TABLE perdure_workflows ADD COLUMN trace_context TEXT;
-- The trace context of the code that sent a message: the receiver's span links to it.
ALTER TABLE perdure_messages ADD COLUMN trace_context TEXT;
