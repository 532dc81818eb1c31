"""Run a job on a Slurm cluster: an sbatch script generated from the LaunchSpec.

The backend job id is Slurm's job id. Everything else the backend needs to answer about a job
later (after a server restart too) sits in a job folder under `work_dir`: the script, a 0600 file
with the job's environment (XNAT_PASS is an alias token: it never appears in the script, its
logs, or on a command line), and the exit code the script writes when the command ends. That file
is the answer of last resort: Slurm forgets finished jobs after MinJobAge, and `sacct` only works
where accounting is configured. Hence `work_dir` and the log directory must be on a file system
the compute nodes share with the server (as home or scratch directories usually are).

By default the command runs on the node as it would locally: container paths in the command line
are replaced by the staging directories (shared file system again). With `slurm_runtime` set to
`apptainer` or `singularity`, it runs in the command's image instead, the mounts bound at their
container paths.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

from xnat_ml.containers.backends.base import (
    BASE_ENV,
    BackendState,
    JobStatus,
    LaunchSpec,
    read_logs,
)
from xnat_ml.errors import XnatMlError

RUNTIMES = ("apptainer", "singularity")
JOB_ID = r"\d+(_\d+)?"  # a job, or one task of an array job
QUEUE_TTL_S = 1.0
# What Slurm sets on the node for the job itself, kept in the job's environment.
SLURM_KEPT = "SLURM_[A-Za-z0-9_]*|CUDA_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL|ROCR_VISIBLE_DEVICES"
# Slurm job states (squeue/scontrol JobState, sacct State) by what they mean for us.
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING"}
ACTIVE = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
BACKEND_FAILURES = {
    "TIMEOUT": "reached its Slurm time limit",
    "OUT_OF_MEMORY": "killed for running out of memory",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "missed its Slurm deadline",
    "PREEMPTED": "was preempted",
    "REVOKED": "was revoked by a federated cluster",
    "SPECIAL_EXIT": "ended in Slurm's SPECIAL_EXIT state",
}


def sbatch_script(
    spec: LaunchSpec,
    job_dir: Path,
    partition: str | None = None,
    account: str | None = None,
    time_limit: str | None = None,
    runtime: str | None = None,
) -> str:
    """The batch script for `spec`. Slurm exports none of the submitter's environment into it
    (--export=NONE), and the command runs under `env -i` with only what `job_dir/env.sh` holds
    (`LaunchSpec.host_env()`) plus the variables Slurm sets for the job (SLURM_*, the GPUs it
    granted): nothing of the server's environment reaches the job."""
    directives = [
        f"--job-name={_safe_name(spec.job_name)}",
        "--export=NONE",
        f"--output={spec.stdout_path}",
        f"--error={spec.stderr_path}",
        f"--chdir={spec.host_working_dir() if runtime is None else spec.log_dir}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={max(1, math.ceil(spec.limit_cpu or 1))}",
    ]
    memory = spec.limit_memory_mb or spec.reserve_memory_mb
    if memory:
        directives.append(f"--mem={memory}M")
    if gres := _gres(spec):
        directives.append(f"--gres={gres}")
    for flag, value in (("partition", partition), ("account", account), ("time", time_limit)):
        if value:
            directives.append(f"--{flag}={value}")
    if runtime is None:  # on the node as locally (host_env puts this installation's xnat-ml first)
        argv = ["/bin/sh", "-c", spec.host_command_line()]
    else:
        argv = _in_image(spec, runtime)
    for directive in directives:  # a line break would end the comment and start a command
        if "\n" in directive or "\r" in directive:
            raise XnatMlError(
                f"job {spec.job_name}: sbatch option {directive!r} holds a line break"
            )
    env_file = shlex.quote(str(job_dir / "env.sh"))
    exit_file = shlex.quote(str(job_dir / "exit_code"))
    return "\n".join(
        ["#!/bin/sh"]
        + [f"#SBATCH {directive}" for directive in directives]
        + [
            "# Written by xnat-ml for one Container Service job. Its environment (XNAT_HOST,",
            "# XNAT_USER, XNAT_PASS among it) comes from a file only the job's owner can read;",
            "# of the node's, only what Slurm set for this job is kept.",
            "PATH=/usr/bin:/bin",
            "trap : TERM  # scancel signals us too: outlive the command, which may record its end",
            "set --",
            f"for name in $(env | grep -oE '^({SLURM_KEPT})='); do",
            '    name="${name%=}"',
            r'    eval "set -- \"\$@\" \"$name=\${$name}\""',
            "done",
            f'env -i "$@" /bin/sh -c \'set -a && . "$0" && set +a && exec "$@"\' {env_file} '
            + shlex.join(argv),
            "code=$?",
            f"printf '%s\\n' \"$code\" > {exit_file}.partial && mv {exit_file}.partial {exit_file}",
            'exit "$code"',
            "",
        ]
    )


def _in_image(spec: LaunchSpec, runtime: str) -> list[str]:
    """`apptainer exec` of the command line in the command's image, mounts bound in place."""
    image = spec.image if re.match(r"^[a-z]+://|^/", spec.image) else f"docker://{spec.image}"
    argv = [runtime, "exec"]
    if spec.gpus:
        argv.append("--nv")
    for mount in spec.mounts:
        mode = "rw" if mount.writable else "ro"
        argv += ["--bind", f"{mount.host_path}:{mount.container_path}:{mode}"]
    if spec.working_dir:
        argv += ["--pwd", spec.working_dir]
    return [*argv, image, "/bin/sh", "-c", spec.command_line]


def _gres(spec: LaunchSpec) -> str:
    """Slurm GRES from the generic-resources ({"gpu": "2"} -> gpu:2; whole counts, plain
    names) and the GPU count (`gpus`, or `nvidia.com/gpu`) as gpu:N."""
    if spec.gpus < 0:
        raise XnatMlError(
            "slurm backend: the command asks for all GPUs (gpus 'all'), which Slurm cannot "
            "reserve; give it a count"
        )
    counts = {
        name.lower(): int(count)
        for name, count in spec.generic_resources.items()
        if re.fullmatch(r"[A-Za-z][\w-]*", name) and str(count).isdigit() and int(count) > 0
    }
    if spec.gpus:
        counts["gpu"] = spec.gpus
    return ",".join(f"{name}:{count}" for name, count in sorted(counts.items()))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "xnat-ml"


def parse_sbatch_id(output: str) -> str:
    """Job id from `sbatch --parsable` ("123" or "123;cluster")."""
    first = output.strip().split(";")[0]
    if not re.fullmatch(JOB_ID, first):
        raise XnatMlError(f"sbatch: unexpected answer {output.strip()[:200]!r} (no job id)")
    return first


def parse_squeue(output: str) -> dict[str, tuple[str, str | None]]:
    """Job id -> (state, reason) from `squeue -h -o "%i|%T|%r"`; other lines are left out."""
    table = {}
    for line in output.splitlines():
        fields = line.strip().split("|")
        if (
            len(fields) == 3
            and re.fullmatch(JOB_ID, fields[0])
            and re.fullmatch(r"[A-Z_]+", fields[1])
        ):
            table[fields[0]] = (fields[1], None if fields[2] in ("", "None") else fields[2])
    return table


def parse_scontrol(output: str) -> tuple[str, int | None, str | None] | None:
    """(JobState, exit code, Reason) from `scontrol show job -o ID`; None if not understood."""
    state = re.search(r"(?:^|\s)JobState=([A-Z_]+)", output)
    if state is None:
        return None
    code = re.search(r"(?:^|\s)ExitCode=(\d+):(\d+)", output)
    reason = re.search(r"(?:^|\s)Reason=(\S+)", output)
    return (
        state.group(1),
        _exit_code(code.group(1), code.group(2)) if code else None,
        reason.group(1) if reason and reason.group(1) != "None" else None,
    )


def parse_sacct(output: str) -> tuple[str, int | None, str | None] | None:
    """(State, exit code, None) from `sacct -n -X -P -o State,ExitCode`; None if not understood."""
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 2 and re.fullmatch(r"[A-Z_]+(?: by \d+)?", fields[0]):
            code = re.fullmatch(r"(\d+):(\d+)", fields[1])
            return fields[0].split()[0], _exit_code(*code.groups()) if code else None, None
    return None


def _exit_code(status: str, signal: str) -> int:
    """Slurm's "exit:signal" pair as a shell would report it."""
    return 128 + int(signal) if int(signal) else int(status)


class SlurmBackend:
    """Options: `slurm_conf` (SLURM_CONF for the client commands), `slurm_partition`,
    `slurm_account`, `slurm_time` (sbatch --time), `slurm_runtime` (apptainer|singularity to run
    in the image), `slurm_sbatch_args` (extra sbatch arguments, e.g. ["--qos=long"])."""

    name = "slurm"
    can_reattach = True

    def __init__(
        self,
        work_dir: Path,
        slurm_conf: str | None = None,
        slurm_partition: str | None = None,
        slurm_account: str | None = None,
        slurm_time: str | None = None,
        slurm_runtime: str | None = None,
        slurm_sbatch_args: list[str] | tuple | str = (),
        **_options: object,
    ) -> None:
        if slurm_runtime is not None and slurm_runtime not in RUNTIMES:
            raise XnatMlError(
                f"slurm backend: runtime {slurm_runtime!r} unknown; use one of {RUNTIMES}"
            )
        self.work_dir = Path(work_dir) / "slurm"
        self.conf = slurm_conf
        self.partition = slurm_partition
        self.account = slurm_account
        self.time_limit = slurm_time
        self.runtime = slurm_runtime
        self.sbatch_args = (  # from the command line a single string: split as a shell would
            shlex.split(slurm_sbatch_args)
            if isinstance(slurm_sbatch_args, str)
            else list(slurm_sbatch_args)
        )
        self._lock = threading.Lock()
        self._snapshot: tuple[float, dict[str, tuple[str, str | None]]] = (-QUEUE_TTL_S, {})

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        """A Slurm client command, with the base environment and SLURM_* only: sbatch stores
        the environment it was given with the job, and the server's is not Slurm's business."""
        env = {key: os.environ[key] for key in BASE_ENV if key in os.environ}
        env.update((k, v) for k, v in os.environ.items() if k.startswith("SLURM_"))
        if self.conf:
            env["SLURM_CONF"] = self.conf
        try:
            return subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise XnatMlError(f"slurm backend: {argv[0]} not found (install slurm-client)") from exc
        except subprocess.TimeoutExpired as exc:
            raise XnatMlError(f"slurm backend: {argv[0]} did not answer in 60 s") from exc

    def reaches_loopback(self) -> bool:
        """Only when every node of the cluster is this host (`scontrol show nodes`: each
        NodeAddr a loopback address or this host's name), as on a one-machine cluster."""
        try:
            done = self._run("scontrol", "show", "nodes", "-o")
        except XnatMlError:  # no Slurm client here: nothing says the nodes are this host
            return False
        addresses = re.findall(r"\bNodeAddr=(\S+)", done.stdout) if done.returncode == 0 else []
        return bool(addresses) and all(_is_this_host(a) for a in addresses)

    def launch(self, spec: LaunchSpec) -> str:
        bad = [key for key in spec.env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)]
        if bad:  # the env file is shell: a name like "A;rm -rf ~" would be a command
            raise XnatMlError(
                f"job {spec.job_name}: environment variable name {bad[0]!r} is not valid in a shell"
            )
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        job_dir = self.work_dir / f"{_safe_name(spec.job_name)}-{uuid.uuid4().hex[:8]}"
        job_dir.mkdir(parents=True, mode=0o700)
        env_fd = os.open(job_dir / "env.sh", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(env_fd, "w") as env_file:
            env_file.writelines(
                f"{key}={shlex.quote(value)}\n" for key, value in spec.host_env().items()
            )
        script = job_dir / "job.sh"
        script.write_text(
            sbatch_script(
                spec, job_dir, self.partition, self.account, self.time_limit, self.runtime
            )
        )
        done = self._run("sbatch", "--parsable", *self.sbatch_args, str(script))
        if done.returncode != 0:
            shutil.rmtree(job_dir, ignore_errors=True)
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise XnatMlError(f"job {spec.job_name}: sbatch refused it ({message})")
        job_id = parse_sbatch_id(done.stdout)
        record = {"dir": str(job_dir), "log_dir": str(spec.log_dir), "name": spec.job_name}
        partial = self._record_path(job_id).with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(record))
        os.replace(partial, self._record_path(job_id))
        return job_id

    def _record_path(self, job_id: str) -> Path:
        return self.work_dir / "jobs" / f"{job_id}.json"

    def _record(self, job_id: str) -> dict | None:
        if not re.fullmatch(JOB_ID, job_id):
            return None
        try:
            return json.loads(self._record_path(job_id).read_text())
        except (OSError, ValueError):
            return None

    def state(self, job_id: str) -> BackendState:
        record = self._record(job_id)
        if record is None:
            return BackendState(JobStatus.UNKNOWN, reason=f"no xnat-ml Slurm job {job_id}")
        job_dir = Path(record["dir"])
        killed = (job_dir / "killed").exists()
        written = _read_exit_code(job_dir / "exit_code")
        if written is not None and not killed:
            return BackendState(JobStatus.EXITED, exit_code=written)
        queued = self._queue().get(job_id)
        if queued is not None and queued[0] in WAITING:
            return BackendState(JobStatus.PENDING, reason=queued[1])
        if queued is not None and queued[0] in ACTIVE:
            return BackendState(JobStatus.RUNNING)
        slurm = self._ask_slurm(job_id)  # finished, or not in the queue snapshot yet
        if slurm is None:
            if killed:
                return BackendState(JobStatus.KILLED, reason="killed on request")
            return BackendState(
                JobStatus.UNKNOWN,
                reason=f"Slurm no longer knows job {job_id} and it left no exit code",
            )
        name, code, reason = slurm
        if name in WAITING:
            return BackendState(JobStatus.PENDING, reason=reason)
        if name in ACTIVE:
            return BackendState(JobStatus.RUNNING)
        if killed or name == "CANCELLED":
            why = "killed on request" if killed else "cancelled in Slurm (scancel)"
            return BackendState(JobStatus.KILLED, exit_code=code, reason=why)
        if name in BACKEND_FAILURES:
            return BackendState(JobStatus.FAILED, exit_code=code, reason=BACKEND_FAILURES[name])
        if name in ("COMPLETED", "FAILED") and code is not None:
            # The script ended before writing its exit code (e.g. env file or chdir failed).
            return BackendState(JobStatus.EXITED, exit_code=code, reason=reason)
        return BackendState(JobStatus.FAILED, exit_code=code, reason=f"Slurm state {name}")

    def _queue(self) -> dict[str, tuple[str, str | None]]:
        """All of this user's jobs in one `squeue`, reused for QUEUE_TTL_S: the server polls every
        running job twice a second, and a batch of 1000 must not mean 2000 Slurm RPCs a second."""
        with self._lock:
            taken, table = self._snapshot
            if time.monotonic() - taken < QUEUE_TTL_S:
                return table
            done = self._run("squeue", "--me", "-h", "-t", "all", "-o", "%i|%T|%r")
            table = parse_squeue(done.stdout) if done.returncode == 0 else {}
            self._snapshot = (time.monotonic(), table)
            return table

    def _ask_slurm(self, job_id: str) -> tuple[str, int | None, str | None] | None:
        """What scontrol (recent jobs), then sacct (if accounting is on) say; None if neither."""
        done = self._run("scontrol", "show", "job", "-o", job_id)
        if done.returncode == 0 and (parsed := parse_scontrol(done.stdout)):
            return parsed
        done = self._run("sacct", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job_id)
        return parse_sacct(done.stdout) if done.returncode == 0 else None

    def logs(self, job_id: str) -> tuple[str, str]:
        record = self._record(job_id)
        if record is None:
            return "", ""
        return read_logs(Path(record["log_dir"]))

    def kill(self, job_id: str) -> None:
        record = self._record(job_id)
        if record is None or self.state(job_id).finished:
            return
        (Path(record["dir"]) / "killed").touch()
        done = self._run("scancel", job_id)
        if done.returncode != 0 and not self.state(job_id).finished:
            raise XnatMlError(f"slurm job {job_id}: scancel failed ({done.stderr.strip()})")

    def cleanup(self, job_id: str) -> None:
        """Drop the script and the environment file; the logs stay in the job's log dir."""
        record = self._record(job_id)
        if record is None:
            return
        shutil.rmtree(record["dir"], ignore_errors=True)
        self._record_path(job_id).unlink(missing_ok=True)


def _is_this_host(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address in ("localhost", socket.gethostname(), socket.getfqdn())


def _read_exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
