"""`imagegen loadtest`: a lean async HTTP load generator for the image endpoints.

Closed-loop (a concurrency sweep) and open-loop (a fixed arrival rate) load models, latency
percentiles, errors by status, the server's own batching figures from `/metrics`, and the
tool's ceiling on this machine. Reporting (rich, matplotlib) is imported only when used.
"""
