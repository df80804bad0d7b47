"""Peer servers for the throughput benchmark: what a team might run instead of this service.

They answer the same request as the service's single-image route (POST
`/v1/models/{model}/generate` with `{"seed": n}` -> PNG) on the same ONNX file, so one load
generator measures them all. They live here, never in the serving install.
"""
