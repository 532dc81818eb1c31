"""Slurm backend against a real one-node Slurm: outputs, failures, kill, limits, re-attach,
secrets kept out of scripts and logs; the sbatch script and Slurm's answers as text."""

from __future__ import annotations

import json
import stat
import sys
import time

import pytest
from jobs import TRAIN, cpu_site_copy, make_spec, project_command_spec, wait_done, wait_running

from xnat_ml.containers.backends import BackendState, JobStatus, get_backend
from xnat_ml.containers.backends.slurm import (
    SlurmBackend,
    parse_sacct,
    parse_sbatch_id,
    parse_scontrol,
    parse_squeue,
    sbatch_script,
)
from xnat_ml.errors import XnatMlError


@pytest.fixture
def backend(slurm, tmp_path) -> SlurmBackend:
    return get_backend("slurm", tmp_path / "work", **slurm.backend_options)


def test_job_writes_output_and_exits_zero(backend, tmp_path):
    spec = make_spec(
        tmp_path,
        'cat /input/in.txt > /output/out.txt && echo "user=$XNAT_USER" && echo note >&2',
    )
    job = backend.launch(spec)
    assert job.isdigit()
    assert wait_done(backend, job) == BackendState(JobStatus.EXITED, exit_code=0)
    assert (tmp_path / "out" / "out.txt").read_text() == "payload\n"
    assert backend.logs(job) == ("user=alias\n", "note\n")
    backend.cleanup(job)
    assert spec.stdout_path.read_text() == "user=alias\n"
    assert not list((tmp_path / "work" / "slurm").glob("test-*"))  # script + env file gone
    backend.cleanup(job)  # idempotent


def test_failure_keeps_logs_after_cleanup(backend, tmp_path):
    spec = make_spec(tmp_path, "echo started; echo 'no such input' >&2; exit 3")
    job = backend.launch(spec)
    assert wait_done(backend, job) == BackendState(JobStatus.EXITED, exit_code=3)
    backend.cleanup(job)
    assert spec.stdout_path.read_text() == "started\n"
    assert spec.stderr_path.read_text() == "no such input\n"


def test_working_directory_is_the_staged_mount_and_xnat_ml_is_on_path(backend, tmp_path):
    spec = make_spec(tmp_path, "pwd > here; command -v xnat-ml > which", working_dir="/output")
    job = backend.launch(spec)
    assert wait_done(backend, job).exit_code == 0
    assert (tmp_path / "out" / "here").read_text().strip() == str(tmp_path / "out")
    assert (tmp_path / "out" / "which").read_text().strip() == f"{sys.prefix}/bin/xnat-ml"


def test_the_alias_token_stays_out_of_scripts_logs_and_slurm(backend, slurm, tmp_path):
    spec = make_spec(tmp_path, 'test -n "$XNAT_PASS" && echo token-ok; sleep 3')
    job = backend.launch(spec)
    wait_running(backend, job)
    shown = slurm.run("scontrol", "show", "job", "-o", job)
    [job_dir] = (tmp_path / "work" / "slurm").glob("test-*")
    script = (job_dir / "job.sh").read_text()
    assert stat.S_IMODE((job_dir / "env.sh").stat().st_mode) == 0o600
    assert "XNAT_PASS=secret" in (job_dir / "env.sh").read_text()
    assert wait_done(backend, job).exit_code == 0
    out, err = backend.logs(job)
    assert out == "token-ok\n"
    for text in (shown, script, out, err):
        assert "secret" not in text


def test_kill_stops_a_running_job(backend, slurm, tmp_path):
    job = backend.launch(make_spec(tmp_path, "sleep 120"))
    wait_running(backend, job)
    backend.kill(job)
    assert wait_done(backend, job, timeout=30).status == JobStatus.KILLED
    assert "JobState=CANCELLED" in slurm.run("scontrol", "show", "job", "-o", job)
    backend.kill(job)  # no-op once finished
    backend.cleanup(job)


def test_kill_a_pending_job(slurm, tmp_path):
    later = get_backend(
        "slurm", tmp_path / "work", slurm_sbatch_args=["--begin=now+600"], **slurm.backend_options
    )
    job = later.launch(make_spec(tmp_path, "true"))
    assert later.state(job).status == JobStatus.PENDING
    later.kill(job)
    assert wait_done(later, job, timeout=30).status == JobStatus.KILLED


def test_cpu_and_memory_requests_reach_slurm(backend, slurm, tmp_path):
    cpus = min(2, slurm.cpus)
    spec = make_spec(
        tmp_path,
        'echo "$SLURM_CPUS_PER_TASK $SLURM_MEM_PER_NODE"',
        limit_cpu=cpus - 0.5,
        limit_memory_mb=100,
    )
    job = backend.launch(spec)
    shown = slurm.run("scontrol", "show", "job", "-o", job)
    assert f"NumCPUs={cpus} " in shown and "MinMemoryNode=100M" in shown
    assert wait_done(backend, job).exit_code == 0
    assert backend.logs(job)[0] == f"{cpus} 100\n"


def test_many_running_jobs_cost_one_squeue(backend, tmp_path, monkeypatch):
    jobs = [backend.launch(make_spec(tmp_path / f"j{n}", "sleep 30")) for n in range(6)]
    for job in jobs:
        wait_running(backend, job)
    calls = []
    run = backend._run
    monkeypatch.setattr(backend, "_run", lambda *argv: calls.append(argv[0]) or run(*argv))
    time.sleep(1.1)  # let the cached snapshot expire
    assert {backend.state(job).status for job in jobs} == {JobStatus.RUNNING}
    assert calls == ["squeue"]
    for job in jobs:
        backend.kill(job)


def test_a_new_backend_instance_reattaches(slurm, tmp_path):
    """What a server restart does: the Slurm job id and the work dir are all it needs."""
    work = tmp_path / "work"
    first = get_backend("slurm", work, **slurm.backend_options)
    job = first.launch(make_spec(tmp_path, "sleep 1; echo late > /output/late.txt"))
    second = get_backend("slurm", work, **slurm.backend_options)
    assert wait_done(second, job) == BackendState(JobStatus.EXITED, exit_code=0)
    assert (tmp_path / "out" / "late.txt").read_text() == "late\n"

    sleeper = first.launch(make_spec(tmp_path / "b", "sleep 120"))
    wait_running(first, sleeper)
    get_backend("slurm", work, **slurm.backend_options).kill(sleeper)
    third = get_backend("slurm", work, **slurm.backend_options)
    assert wait_done(third, sleeper, timeout=30).status == JobStatus.KILLED


def test_a_job_slurm_has_forgotten_answers_from_its_exit_code_file(backend, tmp_path):
    """After MinJobAge scontrol says "Invalid job id" and sacct is off: the script's file rules."""
    job_dir = tmp_path / "work" / "slurm" / "gone"
    job_dir.mkdir(parents=True)
    record = tmp_path / "work" / "slurm" / "jobs" / "999999.json"
    record.parent.mkdir()
    record.write_text(f'{{"dir": "{job_dir}", "log_dir": "{tmp_path}", "name": "gone"}}')
    state = backend.state("999999")
    assert state.status == JobStatus.UNKNOWN and "no longer knows job 999999" in state.reason
    (job_dir / "exit_code").write_text("7\n")
    assert backend.state("999999") == BackendState(JobStatus.EXITED, exit_code=7)


@pytest.mark.parametrize("job_id", ["0", "../../etc/passwd", "12;rm", ""])
def test_unknown_or_hostile_job_ids(backend, job_id):
    assert backend.state(job_id).status == JobStatus.UNKNOWN
    assert backend.logs(job_id) == ("", "")
    backend.kill(job_id)
    backend.cleanup(job_id)


def test_sbatch_refusal_is_a_clear_error(backend, tmp_path):
    """This cluster has no GPUs configured: Slurm rejects --gres=gpu at submission."""
    with pytest.raises(XnatMlError, match=r"job test-\S+: sbatch refused it \(.*gres"):
        backend.launch(make_spec(tmp_path, "true", gpus=1))
    assert not list((tmp_path / "work" / "slurm").glob("test-*"))


def test_fifty_jobs_submitted_at_once_all_finish(backend, tmp_path):
    specs = [
        make_spec(tmp_path / f"j{n}", f"echo {n} > /output/n; exit {n % 3}") for n in range(50)
    ]
    jobs = [backend.launch(spec) for spec in specs]
    assert len(set(jobs)) == 50
    states = [wait_done(backend, job, timeout=180) for job in jobs]
    assert [s.exit_code for s in states] == [n % 3 for n in range(50)]
    assert all((tmp_path / f"j{n}" / "out" / "n").read_text() == f"{n}\n" for n in range(50))


def test_unknown_runtime_is_refused(tmp_path):
    with pytest.raises(XnatMlError, match="runtime 'docker' unknown"):
        SlurmBackend(tmp_path, slurm_runtime="docker")


def test_missing_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(XnatMlError, match="sbatch not found"):
        SlurmBackend(tmp_path).launch(make_spec(tmp_path, "true"))


def test_script_carries_resources_and_no_secrets(tmp_path):
    spec = make_spec(
        tmp_path,
        "train --data /input --out /output",
        gpus=2,
        limit_cpu=1.5,
        limit_memory_mb=8000,
        reserve_memory_mb=4000,
        job_name="a b/c",
    )
    script = sbatch_script(
        spec, tmp_path / "job", partition="gpu", account="lab", time_limit="2:00:00"
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    for directive in (
        "--job-name=a_b_c",
        "--gres=gpu:2",
        "--cpus-per-task=2",
        "--mem=8000M",
        "--partition=gpu",
        "--account=lab",
        "--time=2:00:00",
        f"--output={tmp_path}/logs/stdout.log",
        f"--error={tmp_path}/logs/stderr.log",
    ):
        assert f"#SBATCH {directive}" in lines
    assert f"train --data {tmp_path}/in --out {tmp_path}/out" in script
    assert "secret" not in script and "XNAT_PASS=" not in script


@pytest.mark.parametrize(
    ("resources", "gpus", "directive"),
    [
        ({"gpu": "2"}, 2, "--gres=gpu:2"),
        ({"GPU": "1", "fpga": "2"}, 1, "--gres=fpga:2,gpu:1"),
        ({"gpu": "lots", "bad name;rm": "1", "zero": "0"}, 0, None),
    ],
)
def test_generic_resources_become_gres(tmp_path, resources, gpus, directive):
    spec = make_spec(tmp_path, "true", generic_resources=resources, gpus=gpus)
    gres = [line for line in sbatch_script(spec, tmp_path).splitlines() if "--gres" in line]
    assert gres == ([f"#SBATCH {directive}"] if directive else [])


def test_shipped_train_command_asks_slurm_for_one_gpu(tmp_path):
    """train.json's GPU count (`"gpus": "1"`, `"generic-resources": {"gpu": "1"}`) becomes
    --gres=gpu:1 (and --nv under Apptainer); the copy a site without GPUs installs asks for no
    GRES."""
    shipped = json.loads(TRAIN.read_text())
    spec = project_command_spec(shipped, {"CONFIG": "tiny"}, tmp_path / "gpu")
    lines = sbatch_script(spec, tmp_path / "gpu").splitlines()
    for directive in ("--gres=gpu:1", "--cpus-per-task=8", "--mem=32768M"):
        assert f"#SBATCH {directive}" in lines
    work = tmp_path / "gpu" / "mounts" / "work"
    assert f"--work-dir {work} --cache {work}/cache" in lines[-4]
    assert "apptainer exec --nv --bind" in sbatch_script(spec, tmp_path, runtime="apptainer")
    cpu = project_command_spec(cpu_site_copy(shipped), {"CONFIG": "tiny"}, tmp_path / "cpu")
    assert "--gres" not in sbatch_script(cpu, tmp_path / "cpu")
    assert "NVIDIA_VISIBLE_DEVICES" not in cpu.env and cpu.runtime is None


def test_script_in_an_apptainer_image(tmp_path):
    spec = make_spec(
        tmp_path, "run /input", image="xnatml/xnat-ml:1", gpus=1, working_dir="/output"
    )
    script = sbatch_script(spec, tmp_path / "job", runtime="apptainer")
    assert (
        f"apptainer exec --nv --bind {tmp_path}/in:/input:ro --bind {tmp_path}/out:/output:rw "
        "--pwd /output docker://xnatml/xnat-ml:1 /bin/sh -c 'run /input'"
    ) in script


@pytest.mark.parametrize("text", ["", "garbage", "Submitted batch job 12", "12a", ";12", "-1"])
def test_sbatch_answer_without_a_job_id(text):
    with pytest.raises(XnatMlError, match="sbatch: unexpected answer"):
        parse_sbatch_id(text)


def test_sbatch_answers():
    assert parse_sbatch_id("123\n") == "123"
    assert parse_sbatch_id("77;cluster2\n") == "77"


def test_scontrol_answers():
    line = (
        "JobId=5 JobName=x UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
        "Dependency=(null) ExitCode=3:0 RunTime=00:00:01 Command=/w/a JobState=b.sh"
    )
    assert parse_scontrol(line) == ("FAILED", 3, "NonZeroExitCode")
    assert parse_scontrol("JobState=CANCELLED Reason=None ExitCode=0:15") == (
        "CANCELLED",
        143,
        None,
    )
    assert parse_scontrol("JobState=RUNNING") == ("RUNNING", None, None)
    for hostile in ("", "slurm_load_jobs error: Invalid job id specified", "JobState=", "\x00" * 9):
        assert parse_scontrol(hostile) is None


def test_squeue_answers():
    text = "12|RUNNING|None\n13_2|PENDING|Resources\n14|COMPLETED|\n"
    assert parse_squeue(text) == {
        "12": ("RUNNING", None),
        "13_2": ("PENDING", "Resources"),
        "14": ("COMPLETED", None),
    }
    for hostile in (
        "",
        "JOBID|STATE|REASON",
        "x|RUNNING|None",
        "12|running|x",
        "12|RUNNING",
        "\x00|",
    ):
        assert parse_squeue(hostile) == {}


def test_sacct_answers():
    assert parse_sacct("COMPLETED|0:0\n") == ("COMPLETED", 0, None)
    assert parse_sacct("CANCELLED by 0|0:15\n") == ("CANCELLED", 143, None)
    for hostile in ("", "Slurm accounting storage is disabled", "|", "RUNNING", "lower|0:0"):
        assert parse_sacct(hostile) is None


def test_sbatch_args_given_as_one_string(tmp_path):
    backend = SlurmBackend(tmp_path, slurm_sbatch_args="--qos=long --comment='two words'")
    assert backend.sbatch_args == ["--qos=long", "--comment=two words"]


@pytest.mark.parametrize("name", ["A;touch /tmp/pwned", "MY-VAR", "1ST", "", "A B"])
def test_environment_names_a_shell_cannot_take_are_refused(tmp_path, name):
    spec = make_spec(tmp_path, "true")
    spec.env[name] = "x"
    with pytest.raises(XnatMlError, match="is not valid in a shell"):
        SlurmBackend(tmp_path).launch(spec)
    assert not (tmp_path / "slurm").exists()


def test_a_line_break_in_an_option_cannot_become_a_command(tmp_path):
    spec = make_spec(tmp_path, "true")
    with pytest.raises(XnatMlError, match="holds a line break"):
        sbatch_script(spec, tmp_path, partition="debug\ntouch /tmp/pwned")


@pytest.mark.parametrize(
    ("fields", "directive"),
    [
        ({"gpus": "2"}, "--gres=gpu:2"),
        ({"generic-resources": {"nvidia.com/gpu": "3"}}, "--gres=gpu:3"),
        ({"gpus": "2", "generic-resources": {"nvidia.com/gpu": "2", "fpga": "1"}},
         "--gres=fpga:1,gpu:2"),
    ],
)
def test_gpu_count_becomes_gres(tmp_path, fields, directive):
    command = {k: v for k, v in json.loads(TRAIN.read_text()).items()
               if k not in ("gpus", "generic-resources")}  # fmt: skip
    spec = project_command_spec({**command, **fields}, {"CONFIG": "c"}, tmp_path / "job")
    gres = [line for line in sbatch_script(spec, tmp_path).splitlines() if "--gres" in line]
    assert gres == [f"#SBATCH {directive}"]


def test_all_gpus_is_refused_on_slurm(tmp_path):
    """Slurm reserves counts: `"gpus": "all"` fails the launch in one line."""
    command = {**json.loads(TRAIN.read_text()), "gpus": "all"}
    spec = project_command_spec(command, {"CONFIG": "c"}, tmp_path / "job")
    with pytest.raises(XnatMlError, match="asks for all GPUs .* give it a count"):
        sbatch_script(spec, tmp_path)
