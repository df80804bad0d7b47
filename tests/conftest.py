"""Suite-wide defaults."""

from __future__ import annotations

import os

# Servers started by the tests serve gRPC only where a test asks for it on a free port: the
# default port (8001) is one machine-wide port, and the suite starts many servers.
os.environ.setdefault("IMAGEGEN_GRPC_PORT", "0")
