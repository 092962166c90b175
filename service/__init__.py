"""Server-side glue: config, connections, auth, access log, metrics, workers."""
