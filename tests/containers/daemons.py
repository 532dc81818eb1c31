"""A private dockerd and a one-node Slurm for the backend tests, started from Debian packages.

Both run as root in a fresh temporary directory with their own sockets, ports and state, so they
need no system service and leave none behind. The Docker test image is built without a registry
(none is reachable at test time): a `debootstrap --variant=minbase` root file system from Debian's
package mirror, cached as a tarball between runs and `docker import`ed. It holds only the shared
libraries Python needs; the interpreter, the venv and the repository are bind-mounted read-only at
their host paths, so `xnat-ml` runs inside the container exactly as it does outside.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("XNAT_ML_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Python built on the host (pyenv, python.org, Debian) links against, besides libc; and
# Debian's own python3 with venv, the base the image test builds container_images/xnat-ml on.
ROOTFS_PACKAGES = [
    "ca-certificates",
    "python3",
    "python3-venv",
    "libbz2-1.0",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libuuid1",
    "zlib1g",
]
TEST_IMAGE = "xnat-ml-test:bookworm"


class Unavailable(Exception):
    """A package, binary or privilege the daemons need is missing on this machine."""


def require(executables: list[str], package: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(
            f"{package}: the test daemons must run as root (running as uid {os.geteuid()})"
        )
    missing = [exe for exe in executables if shutil.which(exe) is None]
    if missing:
        raise Unavailable(
            f"{package}: {', '.join(missing)} not installed "
            f"(`apt-get install {package}`; .ci/run does this)"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    ready: Callable[[], bool], timeout: float, what: str, procs: list[subprocess.Popen], log: Path
) -> float:
    """Poll `ready` until true; return the seconds it took. Fail early if a daemon died."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if ready():
            return time.monotonic() - start
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(
                f"{what}: {dead[0].args[0]} exited with {dead[0].returncode}; "
                f"log {log}:\n{_tail(log)}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s; log {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(procs: list[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM in reverse start order, SIGKILL whoever does not leave in time."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _unmount_below(root: Path) -> None:
    """Lazy-unmount whatever a killed dockerd left mounted under `root` (overlays, netns)."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@dataclass
class DockerDaemon:
    root: Path
    url: str
    image: str = TEST_IMAGE
    binds: list[str] = field(default_factory=list)
    startup_s: float = 0.0
    image_s: float = 0.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def backend_options(self) -> dict[str, object]:
        """Options for DockerBackend: host network so jobs reach the loopback test server."""
        return {"docker_url": self.url, "docker_network": "host", "docker_binds": self.binds}

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.url, timeout=60)

    def import_rootfs(self, image: str, changes: list[str] = ()) -> None:
        """`docker import` the cached Debian root file system as `image` (repository:tag)."""
        repository, tag = image.split(":")
        self.client().api.import_image(
            src=str(rootfs_tarball()), repository=repository, tag=tag, changes=list(changes)
        )

    def stop(self) -> None:
        try:
            client = self.client()
            for container in client.containers.list(all=True):
                container.remove(force=True)
        except Exception:  # the daemon may already be gone; teardown goes on regardless
            pass
        _stop(self.procs)
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd() -> DockerDaemon:
    require(["dockerd", "containerd", "runc"], "docker.io")
    import docker

    root = Path(tempfile.mkdtemp(prefix="xnat-ml-dockerd-"))
    # Images and containers on a tmpfs: removing them at the end is an unmount.
    (root / "data").mkdir()
    _tmpfs(root / "data", "12g")  # the image test's build peaks at 5.6 GB
    url = f"unix://{root}/docker.sock"
    log = root / "dockerd.log"
    daemon = DockerDaemon(root=root, url=url, binds=_runtime_binds())
    with open(log, "wb") as out:
        daemon.procs.append(
            subprocess.Popen(
                [
                    "dockerd",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-masq=false",
                    "-H",
                    url,
                    "--data-root",
                    str(root / "data"),
                    "--exec-root",
                    str(root / "exec"),
                    "--pidfile",
                    str(root / "docker.pid"),
                    "--containerd-namespace",
                    "xnat-ml-test",
                    "--containerd-plugins-namespace",
                    "xnat-ml-test-plugins",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def pings() -> bool:
        try:
            return docker.DockerClient(base_url=url, timeout=5).ping()
        except Exception:  # not listening yet
            return False

    try:
        daemon.startup_s = wait_for(pings, 60, "dockerd", daemon.procs, log)
        start = time.monotonic()
        path = f"{sys.prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        daemon.import_rootfs(TEST_IMAGE, [f"ENV PATH={path}"])
        daemon.image_s = time.monotonic() - start
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _runtime_binds() -> list[str]:
    """Read-only binds that let the bare rootfs run this checkout's `xnat-ml`."""
    paths = {REPO, Path(sys.prefix).resolve()}
    base = Path(sys.base_prefix).resolve()
    if base != Path("/usr"):  # a Debian /usr python comes from the rootfs instead
        paths.add(base)
    kept = [p for p in sorted(paths) if not any(q != p and q in p.parents for q in paths)]
    return [f"{p}:{p}:ro" for p in kept]


def rootfs_tarball() -> Path:
    """A minimal Debian root file system as a tarball, built once and cached between runs."""
    packages = list(ROOTFS_PACKAGES)
    key = hashlib.sha256(" ".join(["trimmed", DEBIAN_SUITE, DEBIAN_MIRROR, *packages]).encode())
    cache = Path(os.environ.get("XNAT_ML_TEST_CACHE", Path.home() / ".cache" / "xnat-ml-tests"))
    tarball = cache / f"rootfs-{DEBIAN_SUITE}-{key.hexdigest()[:12]}.tar"
    if tarball.exists():
        return tarball
    require(["debootstrap"], "debootstrap")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        _tmpfs(rootfs, "4g")
        try:
            done = _debootstrap(packages, rootfs)
            if done.returncode != 0:
                raise Unavailable(
                    f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR} failed "
                    f"(mirror unreachable?):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            partial = Path(tmp) / "rootfs.tar"
            # Package lists, downloaded .debs and documentation: half the size, no use in a job.
            skipped = ["var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc",
                       "usr/share/man", "usr/share/locale", "usr/share/info"]  # fmt: skip
            excludes = [f"--exclude=./{folder}/*" for folder in skipped]
            subprocess.run(
                ["tar", "-C", str(rootfs), *excludes, "-cf", str(partial), "."], check=True
            )
            os.replace(partial, tarball)
        finally:
            _unmount_below(Path(tmp))
    return tarball


def _tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs on `folder` if possible: creating and deleting thousands of files there is
    an order of magnitude quicker than on a disk mounted with `discard` (28 s to delete here)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                   check=False, capture_output=True)  # fmt: skip


def _debootstrap(packages: list[str], rootfs: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            DEBIAN_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    cpus: int
    memory_mb: int
    startup_s: float = 0.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @property
    def backend_options(self) -> dict[str, object]:
        return {"slurm_conf": str(self.conf)}

    def run(self, *args: str) -> str:
        """Run a Slurm client command against this cluster; return its stdout."""
        done = subprocess.run(
            list(args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        _stop(self.procs)
        shutil.rmtree(self.root, ignore_errors=True)


SLURM_CONF = """\
ClusterName=xnatmltest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MpiDefault=none
DefMemPerCPU={def_mem}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm() -> SlurmCluster:
    require(
        ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"],
        "slurm-wlm munge",
    )
    root = Path(tempfile.mkdtemp(prefix="xnat-ml-slurm-"))
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    # The node claims at least 8 CPUs (config_overrides lets slurmd accept that) so the tests'
    # short jobs run side by side; batch_sched_delay=0 starts them about 1 s sooner each.
    cpus = max(8, os.cpu_count() or 1)
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    memory = int(total_kb / 1024 * 0.8)  # slurmd refuses a node that claims more than it has
    cluster = SlurmCluster(root=root, conf=root / "slurm.conf", cpus=cpus, memory_mb=memory)
    cluster.conf.write_text(
        SLURM_CONF.format(
            root=root,
            ctld_port=free_port(),
            d_port=free_port(),
            cpus=cpus,
            memory=memory,
            def_mem=min(1024, memory // cpus),
        )
    )
    env = {**os.environ, **cluster.env}
    log = root / "log" / "daemons.log"
    start = time.monotonic()
    try:
        with open(log, "wb") as out:
            for argv in (
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={root}/munge/munge.socket",
                    f"--key-file={key}",
                    f"--pid-file={root}/munge/munged.pid",
                    f"--log-file={root}/log/munged.log",
                    f"--seed-file={root}/munge/munged.seed",
                ],
                ["slurmctld", "-D", "-f", str(cluster.conf)],
                ["slurmd", "-D", "-N", "localhost", "-f", str(cluster.conf)],
            ):
                cluster.procs.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                if argv[0] == "munged":
                    wait_for(
                        (root / "munge" / "munge.socket").exists,
                        30,
                        "munged",
                        cluster.procs,
                        root / "log" / "munged.log",
                    )

        def node_idle() -> bool:
            try:
                return cluster.run("sinfo", "-h", "-n", "localhost", "-o", "%t").strip() == "idle"
            except RuntimeError:  # slurmctld not answering yet
                return False

        wait_for(node_idle, 90, "slurm node", cluster.procs, root / "log" / "slurmctld.log")
        cluster.startup_s = time.monotonic() - start
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":
    # .ci/run builds the test root file system at install time, while Debian's mirror is one of
    # the package registries it may reach; the tests then find it in the cache.
    print(rootfs_tarball())
