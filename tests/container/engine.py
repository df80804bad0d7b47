"""A private Docker daemon for the container tier, and the stand-in base images it builds on.

The daemon runs in a temporary folder (`dockerd --data-root DIR --exec-root DIR -H
unix://DIR/docker.sock --iptables=false --bridge=none`), touches no other daemon, and is
torn down with everything it holds (containers, images, volumes, mounts, its containerd).

No registry is reachable here, so `python:3.11-slim-bookworm` is replaced by a stand-in made
with mmdebstrap from Debian's packages and `docker import` (cached as a tarball, keyed by a
hash of its recipe). HTTPS to the package index is re-signed by a local authority on such
machines: the host's CA bundle goes into the stand-in base only, never into the project's
image or repository. nginx is pulled when it can be, else it is a stand-in from Debian's nginx.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"
# The stand-ins: mmdebstrap arguments (the suite last), and what `docker import` sets.
PYTHON_RECIPE = [
    "--variant=minbase",
    "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,curl",
]
PYTHON_CHANGES = ['CMD ["python3"]']
NGINX_RECIPE = ["--variant=minbase", "--include=nginx-light,wget"]
NGINX_CHANGES = ['CMD ["nginx", "-g", "daemon off;"]', "EXPOSE 8080"]
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    build_s: float


class CannotRun(Exception):
    """dockerd cannot run on this machine (the reason is the message)."""


def docker_cli() -> str:
    """Debian's docker.io client (same release as its daemon), else whatever `docker` is."""
    found = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    if found is None:
        raise CannotRun("the docker client is not installed (make system-deps)")
    return found


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(os.environ.get("IMAGEGEN_CONTAINER_CACHE", Path(base) / "imagegen-container"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unmount_under(root: Path) -> None:
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    ]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False, timeout=30)


def run_checked(
    command: list[str],
    env: dict[str, str],
    *,
    what: str,
    timeout: float,
    check: bool,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command`, output captured; with `check`, a failure is an AssertionError that shows
    the ends of its output."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{what} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@dataclass
class Engine:
    """One running dockerd and the client settings that reach it."""

    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    docker: str = field(default_factory=docker_cli)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env |= {
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "client"),
            # The classic builder: the one docker.io's client and docker-compose v1 (docker-py)
            # share, with no BuildKit frontend image to fetch.
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }
        return {k: v for k, v in env.items() if not k.startswith("IMAGEGEN_")}

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_checked(
            [self.docker, *args],
            self.env,
            what=f"docker {' '.join(args)}",
            timeout=timeout,
            check=check,
        )

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        (found,) = json.loads(self.run(kind, "inspect", name).stdout)
        result: dict[str, object] = found
        return result

    def daemon_log(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def import_standin(
        self, name: str, recipe: list[str], changes: list[str], tag: str, *, ca: bool = False
    ) -> str:
        """Import the stand-in `name` (built once per recipe, then cached) as `tag`."""
        tarball = standin_tarball(name, recipe, ca=ca)
        command = ["import"]
        for change in changes:
            command += ["--change", change]
        self.run(*command, str(tarball), tag, timeout=600)
        return tag

    def stop(self) -> None:
        """Remove every container, image, volume and network, stop the daemon and its
        containerd, unmount what is left under the folder, and delete it."""
        try:
            if self.process.poll() is None:
                ids = self.run("ps", "-aq", check=False, timeout=60).stdout.split()
                if ids:
                    self.run("rm", "-f", "-v", *ids, check=False, timeout=120)
                self.run("system", "prune", "-af", "--volumes", check=False, timeout=300)
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=30)
        finally:
            # containerd and shims that outlived their daemon: only ours (they name our folder).
            for process in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if str(self.root) in cmdline and process.pid != os.getpid():
                    with contextlib.suppress(psutil.Error):
                        process.kill()
            _unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    """Start a private dockerd; raise CannotRun (with its reason) where it cannot run."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise CannotRun("dockerd is not installed (Debian's docker.io: make system-deps)")
    if os.geteuid() != 0:
        raise CannotRun(f"dockerd needs root and this is uid {os.geteuid()}")
    docker_cli()
    # Short: the daemon's and containerd's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="igd-", dir="/tmp"))
    log = root / "dockerd.log"
    # Each private daemon takes its networks from its own range, so two test runs at once
    # do not give their bridges the same subnet.
    pool = f"base=10.{200 + os.getpid() % 50}.0.0/16,size=24"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "docker.pid"),
                "-H",
                f"unix://{root / 'docker.sock'}",
                "--iptables=false",
                "--bridge=none",
                "--default-address-pool",
                pool,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = Engine(root=root, process=process, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                lines = engine.daemon_log().strip().splitlines() or ["(no output)"]
                raise CannotRun(f"dockerd exited {process.returncode}: {lines[-1][:300]}")
            if engine.socket.exists() and engine.run("version", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not answer:\n{engine.daemon_log()}")
            time.sleep(0.2)
        yield engine
    finally:
        engine.stop()


def standin_tarball(name: str, recipe: list[str], *, ca: bool) -> Path:
    """The mmdebstrap tarball for `recipe`, built on first use and kept in the cache folder
    under a hash of everything that goes into it."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise AssertionError("the stand-in base images need mmdebstrap (make system-deps)")
    hooks = []
    key_parts = [*recipe, SUITE]
    if ca:
        # pip in a build reaches the index through the same authority as the host.
        hooks = [f"--customize-hook=copy-in {HOST_CA_BUNDLE} /etc/ssl/certs"]
        key_parts.append(hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest())
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    folder = cache_dir()
    tarball = folder / f"{name}-{key}.tar"
    if tarball.exists():
        return tarball
    partial = folder / f".{name}-{key}.{os.getpid()}.tar"
    try:
        subprocess.run(
            [mmdebstrap, "--quiet", "--format=tar", *recipe, *hooks, SUITE, str(partial)],
            capture_output=True,
            check=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as error:
        partial.unlink(missing_ok=True)
        raise AssertionError(f"mmdebstrap failed:\n{error.stderr.decode()[-4000:]}") from error
    os.replace(partial, tarball)
    for old in folder.glob(f"{name}-*.tar"):
        if old != tarball:
            old.unlink(missing_ok=True)  # an older recipe's tarball
    return tarball
