"""The serving process never imports TensorFlow, even with the training commands registered."""

from __future__ import annotations

import subprocess
import sys


def test_serving_imports_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import service.app, service.cli, service.dataplane\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "create_app(Settings())\n"
        "heavy = {'tensorflow', 'keras', 'tf2onnx'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
