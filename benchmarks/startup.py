"""Start-to-ready time and resident memory of `imagegen serve` on a models folder.

Starts the real server as a subprocess (the way users do), polls /readyz until it says
200, then reads the process's resident memory (VmRSS, and its peak VmHWM) from /proc and
checks that no TensorFlow library is mapped into it. Repeats, prints a table, and writes
it into docs/benchmarks.md between the `startup` markers (the rest of the file is kept).

    python -m benchmarks.startup [--models-dir models] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.run import cpu_model, running_server, write_section

BEGIN, END = "<!-- startup:begin -->", "<!-- startup:end -->"


def proc_status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def one_run(models_dir: Path, log_dir: Path) -> dict[str, float | bool]:
    started = time.monotonic()
    # A fine poll, so the figure is the server's start-up and not the polling interval.
    with running_server(models_dir, [], log_dir, "startup", poll_s=0.02) as server:
        ready_s = time.monotonic() - started
        pid = server.process.pid
        return {
            "ready_s": ready_s,
            "rss_mib": proc_status_kib(pid, "VmRSS") / 1024,
            "peak_rss_mib": proc_status_kib(pid, "VmHWM") / 1024,
            "tensorflow_mapped": "tensorflow" in Path(f"/proc/{pid}/maps").read_text(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args()
    models = sorted(p.parent.name for p in args.models_dir.glob("*/model.json"))
    with tempfile.TemporaryDirectory(prefix="imagegen-startup-") as log_dir:
        runs = [one_run(args.models_dir, Path(log_dir)) for _ in range(args.runs)]
    ready = [float(r["ready_s"]) for r in runs]
    rss = [float(r["rss_mib"]) for r in runs]
    peak = [float(r["peak_rss_mib"]) for r in runs]
    tf_mapped = any(bool(r["tensorflow_mapped"]) for r in runs)
    text = "\n".join(
        [
            "## Start-up time and memory",
            "",
            f"`imagegen serve` on `{args.models_dir}` ({len(models)} models: {', '.join(models)}), "
            f"{args.runs} cold starts, from process spawn to the first 200 from `/readyz` "
            "(every model verified, loaded and warmed up).",
            "",
            "| start-to-ready s (median, min-max) | resident MiB (median) "
            "| peak resident MiB (median) | TensorFlow in process |",
            "|---|---|---|---|",
            f"| {statistics.median(ready):.2f} ({min(ready):.2f}-{max(ready):.2f}) | "
            f"{statistics.median(rss):.0f} | {statistics.median(peak):.0f} | "
            f"{'**yes**' if tf_mapped else 'no (no TensorFlow library mapped)'} |",
            "",
            f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}. "
            "Rerun: `python -m benchmarks.startup`.",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(args.doc, text, BEGIN, END)


if __name__ == "__main__":
    main()
