"""Docker backend against a real dockerd: outputs, failures, kill, limits, OOM, re-attach."""

from __future__ import annotations

import json
import os
import sys
import time

import docker.errors
import pytest
from docker.models.containers import ContainerCollection
from jobs import TRAIN, cpu_site_copy, make_spec, project_command_spec, wait_done, wait_running

from xnat_ml.containers.backends import BackendState, JobStatus, get_backend
from xnat_ml.containers.backends.docker import LABEL_JOB, DockerBackend, container_options
from xnat_ml.errors import XnatMlError


@pytest.fixture
def backend(dockerd, tmp_path) -> DockerBackend:
    return get_backend("docker", tmp_path / "work", **dockerd.backend_options)


def test_job_writes_output_and_exits_zero(backend, dockerd, tmp_path):
    spec = make_spec(
        tmp_path,
        'cat /input/in.txt > /output/out.txt && echo "user=$XNAT_USER" && echo note >&2',
        image=dockerd.image,
    )
    job = backend.launch(spec)
    assert wait_done(backend, job) == BackendState(JobStatus.EXITED, exit_code=0)
    assert (tmp_path / "out" / "out.txt").read_text() == "payload\n"
    assert backend.logs(job) == ("user=alias\n", "note\n")
    backend.cleanup(job)
    assert spec.stdout_path.read_text() == "user=alias\n"
    assert spec.stderr_path.read_text() == "note\n"
    with pytest.raises(docker.errors.NotFound):
        dockerd.client().containers.get(job)
    backend.cleanup(job)  # idempotent


def test_xnat_ml_runs_inside_the_test_image(backend, dockerd, tmp_path):
    """The image plus the read-only binds run this checkout's `xnat-ml` (on PATH), as jobs do."""
    spec = make_spec(tmp_path, "xnat-ml --version > /output/version", image=dockerd.image)
    job = backend.launch(spec)
    assert wait_done(backend, job).exit_code == 0, backend.logs(job)
    assert (tmp_path / "out" / "version").read_text().startswith("xnat-ml ")
    backend.cleanup(job)


def test_jobs_run_as_the_server_user_unless_told(backend, dockerd, tmp_path):
    """By default the job writes into the staged folders as the server's uid, so the server owns
    what it uploads and deletes; `docker_user` picks another uid or keeps the image's USER."""
    spec = make_spec(tmp_path, "id -u > /output/uid; id -u", image=dockerd.image)
    job = backend.launch(spec)
    assert wait_done(backend, job).exit_code == 0, backend.logs(job)
    written = tmp_path / "out" / "uid"
    assert written.read_text().strip() == str(os.getuid()) and written.stat().st_uid == os.getuid()
    backend.cleanup(job)
    # The test image's USER is root.
    for name, user, expected in (("uid", "4321:4321", "4321"), ("image", "image", "0")):
        other = get_backend("docker", tmp_path / name, **dockerd.backend_options, docker_user=user)
        job = other.launch(make_spec(tmp_path / name, "id -u", image=dockerd.image))
        wait_done(other, job)
        assert other.logs(job)[0].strip() == expected
        other.cleanup(job)


def test_failure_keeps_logs_after_cleanup(backend, dockerd, tmp_path):
    spec = make_spec(
        tmp_path, "echo started; echo 'no such input' >&2; exit 3", image=dockerd.image
    )
    job = backend.launch(spec)
    assert wait_done(backend, job) == BackendState(JobStatus.EXITED, exit_code=3)
    backend.cleanup(job)
    assert spec.stdout_path.read_text() == "started\n"
    assert spec.stderr_path.read_text() == "no such input\n"


def test_read_only_input_mount(backend, dockerd, tmp_path):
    spec = make_spec(tmp_path, "echo x > /input/new.txt", image=dockerd.image)
    job = backend.launch(spec)
    assert wait_done(backend, job).exit_code != 0
    assert "Read-only file system" in backend.logs(job)[1]
    assert not (tmp_path / "in" / "new.txt").exists()
    backend.cleanup(job)


def test_working_directory_and_labels(backend, dockerd, tmp_path):
    spec = make_spec(
        tmp_path,
        "pwd > here",
        image=dockerd.image,
        working_dir="/output",
        labels={"org.example.project": "P1"},
    )
    job = backend.launch(spec)
    labels = dockerd.client().containers.get(job).labels
    assert labels[LABEL_JOB] == spec.job_name and labels["org.example.project"] == "P1"
    assert wait_done(backend, job).exit_code == 0
    assert (tmp_path / "out" / "here").read_text() == "/output\n"
    backend.cleanup(job)


def test_kill_stops_a_running_job(backend, dockerd, tmp_path):
    job = backend.launch(make_spec(tmp_path, "sleep 120", image=dockerd.image))
    wait_running(backend, job)
    started = time.monotonic()
    backend.kill(job)
    state = wait_done(backend, job, timeout=15)
    assert state.status == JobStatus.KILLED
    assert time.monotonic() - started < 10
    backend.kill(job)  # a second kill of a finished job is a no-op
    backend.cleanup(job)


def test_cpu_and_memory_limits_reach_the_kernel(backend, dockerd, tmp_path):
    spec = make_spec(
        tmp_path,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null "
        "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        image=dockerd.image,
        limit_cpu=0.5,
        limit_memory_mb=64,
        reserve_memory_mb=32,
    )
    job = backend.launch(spec)
    host_config = dockerd.client().containers.get(job).attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 2**20
    assert host_config["MemoryReservation"] == 32 * 2**20
    assert wait_done(backend, job).exit_code == 0
    assert backend.logs(job)[0].strip() == str(64 * 2**20)
    backend.cleanup(job)


def test_out_of_memory_is_a_failure_with_a_reason(backend, dockerd, tmp_path):
    spec = make_spec(
        tmp_path,
        f"{sys.executable} -c 'b = bytearray(400 * 2**20); b[::4096]'",
        image=dockerd.image,
        limit_memory_mb=32,
    )
    job = backend.launch(spec)
    state = wait_done(backend, job)
    assert state.status == JobStatus.FAILED
    assert "out of memory (limit 32 MB)" in state.reason
    backend.cleanup(job)


def test_many_running_jobs_cost_one_listing(backend, dockerd, tmp_path, monkeypatch):
    jobs = [
        backend.launch(make_spec(tmp_path / f"j{n}", "sleep 30", image=dockerd.image))
        for n in range(5)
    ]
    for job in jobs:
        wait_running(backend, job)
    calls = []
    for method in ("get", "list"):
        original = getattr(ContainerCollection, method)

        def counted(self, *args, _method=method, _original=original, **kwargs):
            calls.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ContainerCollection, method, counted)
    time.sleep(1.1)  # let the cached listing expire
    assert {backend.state(job).status for job in jobs} == {JobStatus.RUNNING}
    assert calls == ["list"]
    for job in jobs:
        backend.kill(job)
        backend.cleanup(job)


def test_a_new_backend_instance_reattaches(dockerd, tmp_path):
    """What a server restart does: the job id alone finds the container, its state and kill."""
    work = tmp_path / "work"
    first = get_backend("docker", work, **dockerd.backend_options)
    spec = make_spec(tmp_path, "sleep 1; echo late > /output/late.txt", image=dockerd.image)
    job = first.launch(spec)
    second = get_backend("docker", work, **dockerd.backend_options)
    assert wait_done(second, job).exit_code == 0
    assert (tmp_path / "out" / "late.txt").read_text() == "late\n"
    second.cleanup(job)

    sleeper = first.launch(make_spec(tmp_path / "b", "sleep 120", image=dockerd.image))
    wait_running(first, sleeper)
    get_backend("docker", work, **dockerd.backend_options).kill(sleeper)
    third = get_backend("docker", work, **dockerd.backend_options)
    assert wait_done(third, sleeper, timeout=15).status == JobStatus.KILLED
    third.cleanup(sleeper)


@pytest.mark.parametrize("job_id", ["0" * 64, "../../../etc/passwd", "", "nope", "0" * 65])
def test_unknown_or_hostile_job_ids(backend, job_id, tmp_path):
    assert backend.state(job_id).status == JobStatus.UNKNOWN
    assert backend.logs(job_id) == ("", "")
    backend.kill(job_id)
    backend.cleanup(job_id)


def test_missing_image_is_a_clear_error(backend, tmp_path):
    with pytest.raises(XnatMlError, match="image xnatml/absent:9 is not on the Docker host"):
        backend.launch(make_spec(tmp_path, "true", image="xnatml/absent:9"))


def test_gpu_request_on_a_host_without_gpus_fails_cleanly(backend, dockerd, tmp_path):
    before = {c.id for c in dockerd.client().containers.list(all=True)}
    with pytest.raises(XnatMlError, match="could not start the container"):
        backend.launch(make_spec(tmp_path, "true", image=dockerd.image, gpus=1))
    assert {c.id for c in dockerd.client().containers.list(all=True)} == before


def test_unreachable_daemon_is_a_clear_error(tmp_path):
    backend = DockerBackend(tmp_path, docker_url=f"unix://{tmp_path}/absent.sock")
    with pytest.raises(XnatMlError, match="cannot reach dockerd at unix://"):
        backend.launch(make_spec(tmp_path, "true"))


def test_container_options_translate_the_spec(tmp_path):
    spec = make_spec(
        tmp_path,
        "run --in /input",
        image="img:1",
        gpus=2,
        limit_cpu=1.5,
        shm_size=2**26,
        override_entrypoint=False,
    )
    options = container_options(spec, network="host", extra_binds=["/opt/venv:/opt/venv:ro"])
    assert options["command"] == ["/bin/sh", "-c", "run --in /input"]
    assert "entrypoint" not in options
    assert options["volumes"] == [
        f"{tmp_path}/in:/input:ro",
        f"{tmp_path}/out:/output:rw",
        "/opt/venv:/opt/venv:ro",
    ]
    assert options["nano_cpus"] == 1_500_000_000 and options["shm_size"] == 2**26
    assert options["network_mode"] == "host"
    [request] = options["device_requests"]
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]
    assert "mem_limit" not in options and "working_dir" not in options and "user" not in options
    assert container_options(spec, user="1000:1000")["user"] == "1000:1000"

    own_network = make_spec(tmp_path, "true", image="img:1", network="xnat")
    assert container_options(own_network, network="host")["network_mode"] == "xnat"
    assert container_options(own_network)["entrypoint"] == ["/bin/sh", "-c"]


def test_shipped_train_command_asks_docker_for_one_gpu(tmp_path):
    """train.json's `"gpus": "1"` (beside `"generic-resources": {"gpu": "1"}` for Swarm and
    Kubernetes, and the nvidia runtime a real XNAT's Docker needs) reaches Docker as a request
    for one GPU; the copy a site without GPUs installs asks for none."""
    shipped = json.loads(TRAIN.read_text())
    values = {"CONFIG": "tiny", "RUN_ID": "r1"}
    options = container_options(project_command_spec(shipped, values, tmp_path / "gpu"))
    [request] = options["device_requests"]
    assert request["Count"] == 1 and request["Capabilities"] == [["gpu"]]
    assert options["runtime"] == "nvidia"
    assert options["environment"]["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert options["mem_limit"] == "32768m" and options["nano_cpus"] == 8 * 10**9
    assert options["shm_size"] == 4 * 2**30  # loader workers and NCCL live in /dev/shm
    assert options["command"][-1] == (  # the empty DATASET leaves nothing, its flag included
        "exec xnat-ml train --project P --config 'tiny'  --run-id r1"
        " --work-dir /work --cache /work/cache"
    )
    cpu = container_options(project_command_spec(cpu_site_copy(shipped), values, tmp_path / "cpu"))
    assert "device_requests" not in cpu


def test_binds_given_as_one_string(tmp_path):
    backend = DockerBackend(tmp_path, docker_binds="/a:/a:ro,/b:/c")
    assert backend.binds == ["/a:/a:ro", "/b:/c"]


@pytest.mark.parametrize(
    ("fields", "count"),
    [
        ({"gpus": "all"}, -1),  # Docker's "every GPU"
        ({"gpus": 2}, 2),
        ({"generic-resources": {"nvidia.com/gpu": "3"}}, 3),  # no gpus: the generic resource
        ({"generic-resources": {"gpu": "1"}}, 1),  # what the commands carried before
        ({"gpus": "0", "generic-resources": {"nvidia.com/gpu": "1"}}, None),  # gpus decides
    ],
)
def test_gpu_fields_become_a_device_request(tmp_path, fields, count):
    """What a command's `gpus` and GPU `generic-resources` ask Docker for (no GPU needed)."""
    command = {k: v for k, v in json.loads(TRAIN.read_text()).items()
               if k not in ("gpus", "generic-resources")}  # fmt: skip
    spec = project_command_spec({**command, **fields}, {"CONFIG": "c"}, tmp_path)
    requests = container_options(spec).get("device_requests")
    if count is None:
        assert requests is None
    else:
        [request] = requests
        assert request["Count"] == count and request["Capabilities"] == [["gpu"]]
