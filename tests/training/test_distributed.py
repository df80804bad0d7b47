"""MultiWorkerMirroredStrategy for real: two worker processes on 127.0.0.1 train one GAN."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.train
tf = pytest.importorskip("tensorflow")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def checkpoint_values(ckpt_dir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(ckpt_dir))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def test_two_workers_end_with_identical_weights(tiny_idx_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
        }
        processes.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "training.cli", "train", "gan",
                    "--data-dir", str(tiny_idx_dir), "--run-dir", str(run_dir),
                    "--epochs", "1", "--batch-size", "32", "--steps-per-epoch", "3",
                    "--eval-every", "0", "--no-progress",
                ],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        # MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy.
        assert "CollectiveAllReduceStrategy over 2 replica(s)" in stderr, stderr[-3000:]

    # The chief (worker 0) writes the run folder, worker 1 its own sub-folder.
    chief = checkpoint_values(run_dir / "ckpt")
    other = checkpoint_values(run_dir / "worker-1" / "ckpt")
    assert chief.keys() == other.keys()
    weights = [name for name in chief if "generator" in name or "discriminator" in name]
    assert len(weights) > 20
    for name in chief:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    iterations = [v for k, v in chief.items() if "iteration" in k]
    assert iterations and all(int(v) == 3 for v in iterations)
    history = json.loads((run_dir / "history.json").read_text())
    assert history[0]["steps"] == 3 and np.isfinite(history[0]["g_loss"])
