"""The local backend keeps a job in its box (docs/backends.md, Local): nothing it starts outlives
it, its CPU and memory limits hold, and as `local_user` it sees neither the server's database nor
another job's folder or environment.

Each way of holding a job (cgroup v2, PID namespace, both, the marker sweep) is tested on its
own by hiding the others from the backend, as on a host that lacks them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from e2e import install_enabled, job_logs, wait_job
from servers import XnatServer

from xnat_ml.containers.backends import (
    JobStatus,
    LaunchSpec,
    MountSpec,
    cgroup,
    containment,
    get_backend,
)
from xnat_ml.errors import XnatMlError

JOB_USER = "xnatmljob"
MODES = ("native", "cgroup", "namespace", "sweep")


def _spec(root: Path, line: str, name: str = "job", **limits) -> LaunchSpec:
    """A job laid out as the server lays it out: DATA/containers/<name>/{mounts/out,logs}."""
    job = root / "data" / "containers" / name
    out = job / "mounts" / "out"
    out.mkdir(parents=True, exist_ok=True)
    return LaunchSpec(image="unused", command_line=line, env={"XNAT_PASS": f"token-of-{name}"},
                      mounts=[MountSpec("out", "/output", out, writable=True)],
                      job_name=f"{name}-{time.monotonic_ns()}", log_dir=job / "logs",
                      **limits)  # fmt: skip


def _backend(root: Path, monkeypatch, mode: str = "native", **options):
    """A local backend that may use only what `mode` names ("native": all the host allows)."""
    probe = get_backend("local", root / "work")
    has_cgroup, has_ns = probe.containment.cgroup_root is not None, probe.containment.pidns
    wanted = {"cgroup": (True, False), "namespace": (False, True), "sweep": (False, False)}
    if mode in wanted:
        use_cgroup, use_ns = wanted[mode]
        if (use_cgroup and not has_cgroup) or (use_ns and not has_ns):
            pytest.skip(f"this host has no {mode} for jobs (root and util-linux's unshare, or a "
                        "writable cgroup v2 with cgroup.kill)")  # fmt: skip
        if not use_cgroup:
            monkeypatch.setattr(containment.cgroup, "jobs_root", lambda: None)
        if not use_ns:
            monkeypatch.setattr(containment, "_namespaces_work", lambda: False)
    (root / "data").mkdir(exist_ok=True)
    return get_backend("local", root / "work", local_hide=[str(root / "data")], **options)


def _wait(backend, job_id: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (state := backend.state(job_id)).finished:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
    return state


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _cgroups_of(backend, spec: LaunchSpec) -> list[Path]:
    root = backend.containment.cgroup_root
    return [] if root is None else list(root.glob(f"{spec.job_name}-*"))


# A job that leaves two children behind that would write a marker a second later: one in a
# session of its own (setsid), one double-forked (re-parented to init).
_LEAVERS = ("setsid sh -c 'sleep 1; echo late > /output/setsid' & "
            "( sh -c 'sleep 1; echo late > /output/forked' & ) ; "
            "sleep 0.2; echo started > /output/started; ")  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_leftover_children_die_at_normal_end(tmp_path: Path, monkeypatch, mode: str):
    backend = _backend(tmp_path, monkeypatch, mode)
    spec = _spec(tmp_path, _LEAVERS + "exit 0")
    job = backend.launch(spec)
    state = _wait(backend, job)
    assert (state.status, state.exit_code) == (JobStatus.EXITED, 0)
    assert containment._marked_pids(spec.job_name) == []  # no process of the job is left
    assert _cgroups_of(backend, spec) == []
    time.sleep(1.5)
    out = spec.mounts[0].host_path
    assert sorted(p.name for p in out.iterdir()) == ["started"]


@pytest.mark.parametrize("mode", MODES)
def test_kill_takes_every_descendant(tmp_path: Path, monkeypatch, mode: str):
    backend = _backend(tmp_path, monkeypatch, mode)
    spec = _spec(tmp_path, _LEAVERS + "sleep 30; echo never > /output/never")
    out = spec.mounts[0].host_path
    job = backend.launch(spec)
    _wait_for(out / "started")
    backend.kill(job)
    assert backend.state(job).status == JobStatus.KILLED
    assert containment._marked_pids(spec.job_name) == []
    assert _cgroups_of(backend, spec) == []
    time.sleep(1.5)
    assert sorted(p.name for p in out.iterdir()) == ["started"]
    backend.cleanup(job)


def test_kill_gives_the_job_its_grace_period(tmp_path: Path, monkeypatch):
    """SIGTERM reaches the job's own process first (a training job may record where it stopped),
    even where the job runs as a PID namespace's init."""
    backend = _backend(tmp_path, monkeypatch)
    line = ("trap 'echo saved > /output/saved; exit 3' TERM; echo started > /output/started; "
            "while :; do sleep 0.1; done")  # fmt: skip
    spec = _spec(tmp_path, line)
    job = backend.launch(spec)
    _wait_for(spec.mounts[0].host_path / "started")
    backend.kill(job)
    assert backend.state(job).status == JobStatus.KILLED
    assert (spec.mounts[0].host_path / "saved").read_text() == "saved\n"


@pytest.mark.parametrize("mode", ("native", "sweep"))
def test_a_memory_hog_fails_with_the_reason(tmp_path: Path, monkeypatch, mode: str):
    backend = _backend(tmp_path, monkeypatch, mode)
    hog = ("python3 -c 'import time; b = bytearray(b\"x\") * (400 * 2**20); time.sleep(20)'; "
           "echo survived > /output/survived")  # fmt: skip
    spec = _spec(tmp_path, hog, limit_memory_mb=100)
    started = time.monotonic()
    state = _wait(backend, backend.launch(spec))
    assert state.status == JobStatus.FAILED
    assert state.reason == "killed for running out of memory (limit 100 MB)"
    assert time.monotonic() - started < 20  # the hog is stopped, not left to its 20 s sleep
    assert not (spec.mounts[0].host_path / "survived").exists()


def test_within_its_memory_limit_a_job_completes(tmp_path: Path, monkeypatch):
    backend = _backend(tmp_path, monkeypatch)
    spec = _spec(tmp_path, "python3 -c 'b = bytearray(b\"x\") * (20 * 2**20)'",
                 limit_memory_mb=200)  # fmt: skip
    assert _wait(backend, backend.launch(spec)).status == JobStatus.EXITED


def test_cpu_limit_is_applied(tmp_path: Path, monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a limit of one CPU changes nothing to read back")
    backend = _backend(tmp_path, monkeypatch)
    line = ("grep Cpus_allowed_list /proc/self/status > /output/affinity; "
            "cat /sys/fs/cgroup/cpu.max > /output/cpu.max 2>/dev/null || true")  # fmt: skip
    spec = _spec(tmp_path, line, limit_cpu=0.5)
    assert _wait(backend, backend.launch(spec)).exit_code == 0
    out = spec.mounts[0].host_path
    if "cpu" in backend.containment.cgroup_limits:
        cgroup_file = next(backend.containment.cgroup_root.glob("*/cpu.max"), None)
        assert cgroup_file is None  # removed with its job; the job read its own
        assert (out / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        allowed = (out / "affinity").read_text().split(":")[1].strip()
        assert allowed.isdigit(), f"one CPU expected, the job had {allowed}"


def test_the_server_names_where_jobs_run(tmp_path: Path, monkeypatch):
    backend = _backend(tmp_path, monkeypatch)
    line = backend.describe()
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert line.startswith(f"local backend: jobs run code on this host as user {user}")
    if user == "root":
        assert "(the server's own: --backend-option local_user=USER runs them as USER);" in line
    assert "--backend docker or --backend slurm" in line


# ----------------------------------------------------------------------------- as another user


@pytest.fixture(scope="module")
def job_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("running jobs as another user needs root (CI runs as root)")
    try:
        pwd.getpwnam(JOB_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        JOB_USER], check=True)  # fmt: skip
    return JOB_USER


@pytest.fixture
def open_root():
    """A folder the job user can pass through (pytest's own temporary root is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="xnat-ml-local-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root)


def test_a_job_user_sees_neither_the_database_nor_other_jobs(open_root, monkeypatch, job_user):
    tmp_path = open_root
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "xnat-ml.sqlite").write_text("password hashes")
    data.chmod(0o700)
    backend = _backend(tmp_path, monkeypatch, local_user=job_user)
    other = _spec(tmp_path, "echo secret > /output/secret; sleep 30", name="other")
    other_job = backend.launch(other)
    _wait_for(other.mounts[0].host_path / "secret")
    probe = ("id -un > /output/user; cat DATA/xnat-ml.sqlite > /output/db 2>&1; "
             "cat DATA/containers/other/mounts/out/secret > /output/secret 2>&1; "
             "cat /proc/[0-9]*/environ 2>/dev/null | grep -ao 'token-of-[a-z]*' | sort -u > "
             "/output/tokens; echo written > /output/mine").replace("DATA", str(data))  # fmt: skip
    spec = _spec(tmp_path, probe, name="probe")
    assert _wait(backend, backend.launch(spec)).exit_code == 0
    out = spec.mounts[0].host_path
    assert (out / "user").read_text() == f"{job_user}\n"
    assert "No such file" in (out / "db").read_text()
    assert "No such file" in (out / "secret").read_text()
    assert (out / "tokens").read_text() == "token-of-probe\n"  # no other job's environment
    mine = out / "mine"
    assert mine.read_text() == "written\n" and mine.stat().st_uid == pwd.getpwnam(job_user).pw_uid
    assert (data / "xnat-ml.sqlite").read_text() == "password hashes"  # the server's view
    backend.kill(other_job)


def test_a_job_user_needs_a_way_to_its_folders(open_root: Path, monkeypatch, job_user):
    base = open_root / "closed"
    base.mkdir(mode=0o700)
    backend = _backend(base, monkeypatch, local_user=job_user)
    spec = _spec(base, "true")
    with pytest.raises(XnatMlError, match=rf"{base} is closed to local_user '{job_user}' \(it"):
        backend.launch(spec)
    assert _cgroups_of(backend, spec) == []  # its cgroup went too
    os.chown(base, 0, pwd.getpwnam(job_user).pw_gid)
    base.chmod(0o750)  # passable by the job user's group
    assert _wait(backend, backend.launch(spec)).exit_code == 0


def test_job_user_settings_are_checked(tmp_path: Path, monkeypatch, job_user):
    with pytest.raises(XnatMlError, match=r"local_user 'no-such-user': no such user here"):
        get_backend("local", tmp_path, local_user="no-such-user")
    with pytest.raises(XnatMlError, match=r"local_user 'root': must not be root"):
        get_backend("local", tmp_path, local_user="root")
    with pytest.raises(XnatMlError, match=r"local_hide '/no/such': not a folder"):
        get_backend("local", tmp_path, local_hide="/no/such")
    monkeypatch.setattr(containment, "_namespaces_work", lambda: False)
    with pytest.raises(XnatMlError, match=rf"local_user '{job_user}' needs the server to run as "
                       r"root with PID and mount namespaces \(`unshare`\)"):  # fmt: skip
        get_backend("local", tmp_path, local_user=job_user)


def test_serve_refuses_to_start_with_a_bad_local_user(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "serve", "--data", str(tmp_path / "data"), "--port",
         "1", "--backend-option", "local_user=no-such-user"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "xnat-ml: error: backend local: local_user 'no-such-user': no such user here"
    )


def test_serve_runs_jobs_as_the_local_user(open_root: Path, job_user: str):
    """Through the launch API of a real server: the job runs as `local_user`, its server's
    database is not there for it, its own folder is the only one in DATA/containers."""
    data = open_root / "data"
    server = XnatServer(data, ["--backend-option", f"local_user={job_user}"])
    server.start()
    try:
        log = (open_root / "server.log").read_text()
        assert f"local backend: jobs run code on this host as user {job_user};" in log
        assert f"hidden from jobs: {data.resolve()}" in log
        project = "LOCALUSER"
        server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
        line = ("id -un; ls DATA/containers; head -c 15 DATA/xnat-ml.sqlite || echo no database"
                ).replace("DATA", str(data))  # fmt: skip
        wrapper = install_enabled(server, project, _project_command("probe", line))
        launched = server.session().post(
            f"{server.url}/xapi/projects/{project}/wrappers/{wrapper['probe-project']}"
            "/root/project/launch", json={"project": f"/data/projects/{project}"})  # fmt: skip
        assert launched.status_code == 200, launched.text
        job_id = int(launched.json()["id"])
        job = wait_job(server, job_id, timeout=60)
        stdout = server.session().get(f"{server.url}/xapi/containers/{job_id}/logs/stdout").text
        assert job["status"] == "Complete", (job["message"], job_logs(server, job_id))
        assert stdout == f"{job_user}\n{job_id}\nno database\n"
        assert (data / "xnat-ml.sqlite").read_bytes().startswith(b"SQLite format 3")
    finally:
        server.stop()


def _project_command(name: str, line: str) -> dict:
    return {
        "name": name, "version": "1", "schema-version": "1.0", "type": "docker",
        "image": "xnat-ml/xnat-ml:0.1.0", "command-line": line,
        "mounts": [{"name": "out", "writable": True, "path": "/output"}],
        "inputs": [], "outputs": [],
        "xnat": [{
            "name": f"{name}-project", "contexts": ["xnat:projectData"],
            "external-inputs": [{"name": "project", "type": "Project", "required": True}],
            "derived-inputs": [], "output-handlers": [],
        }],
    }  # fmt: skip


def test_cgroup_limits_go_where_the_controllers_are(tmp_path: Path):
    """The cgroup files written when a host delegates `cpu` and `memory` (this test host's v2
    hierarchy has neither: the files are laid out as the kernel shows them)."""
    group = cgroup.JobCgroup(tmp_path, "job")
    for name in ("cpu.max", "memory.max", "memory.swap.max", "memory.oom.group"):
        (group.path / name).write_text("max\n")
    group.limit(1.5, 300)
    written = {p.name: p.read_text() for p in group.path.iterdir()}
    assert written == {"cpu.max": "150000 100000", "memory.max": str(300 * 2**20),
                       "memory.swap.max": "0", "memory.oom.group": "1"}  # fmt: skip
    assert not group.oom_killed()
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert group.oom_killed()


def test_a_working_directory_in_the_hidden_folder_is_not_a_way_in(tmp_path: Path, monkeypatch):
    """A working directory held open from outside would outlast the covering: the job starts in
    its log folder instead."""
    backend = _backend(tmp_path, monkeypatch)
    if not backend.containment.hide:
        pytest.skip("no mount namespace here (root and unshare): nothing is hidden")
    spec = replace(_spec(tmp_path, "pwd; ls"), working_dir=str(tmp_path / "data"))
    (tmp_path / "data" / "xnat-ml.sqlite").write_text("password hashes")
    job = backend.launch(spec)
    assert _wait(backend, job).exit_code == 0
    assert backend.logs(job) == (f"{spec.log_dir}\nstderr.log\nstdout.log\n", "")


def test_cgroups_left_by_a_killed_server_are_removed_later(tmp_path: Path):
    """A job that ended while no server watched it (the server was killed outright) leaves an
    empty cgroup: the next backend made on the host removes it, and only old ones."""
    old, fresh = cgroup.JobCgroup(tmp_path, "old"), cgroup.JobCgroup(tmp_path, "fresh")
    os.utime(old.path, (time.time() - 3600, time.time() - 3600))
    cgroup._remove_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [fresh.path.name]
