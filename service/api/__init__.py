"""HTTP transport: thin routes over the data plane, wire schemas, dependencies, middleware."""
