"""The Slurm profile: which partition, GPUs, nodes and tasks each job asks for, and a real run on a local Slurm.

The dry-run tests need no cluster: they read the resources Snakemake gives each job and turn them into the sbatch
command line with the slurm executor plugin's own functions. The end-to-end test submits the demo workflow (tiny
training) to the single-node Slurm that `.ci/run` starts (`../shared/slurm/local-slurm start`), and asks Slurm
where each job ran.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from test_workflow import LOCAL_JOBS, REPO, make_workdir, planned_jobs, snakemake

SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def planned_resources(output: str) -> dict[str, list[dict]]:
    """rule -> the resources (and threads) of each of its jobs, from a dry run's output."""
    jobs: dict[str, list[dict]] = {}
    current = None
    for line in output.splitlines():
        match = JOB_HEADER.match(line.rstrip())
        if match:
            current = {"threads": 1}
            jobs.setdefault(match.group(1), []).append(current)
        elif current is not None and line.startswith("    threads:"):
            current["threads"] = int(line.split(":", 1)[1])
        elif current is not None and line.startswith("    resources:"):
            for item in line.split(":", 1)[1].split(", "):
                key, _, value = item.strip().partition("=")
                current[key] = int(value) if value.isdigit() else value
    return jobs


class Resources(dict):
    """The attribute-and-get access the plugin uses on `job.resources`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sbatch_line(resources: dict) -> str:
    """The sbatch command the slurm executor plugin builds for a job with these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    values = Resources({k: v for k, v in resources.items() if k != "threads"})
    job = SimpleNamespace(resources=values, threads=resources["threads"])
    params = {
        "run_uuid": "test",
        "slurm_logfile": "slurm.log",
        "comment_str": "rule_test",
        "account": f"-A {values['slurm_account']}" if "slurm_account" in values else "",
        "partition": f"-p {values['slurm_partition']}" if "slurm_partition" in values else "",
        "workdir": None,
    }
    return get_submit_command(job, params) + set_gres_string(job)


def slurm_dry_run(workdir: Path, *args: str) -> dict[str, list[dict]]:
    return planned_resources(snakemake(workdir, "--dry-run", *args, profile="slurm").stdout)


# --- dry runs: no cluster needed ---------------------------------------------------------------------------------


def test_train_goes_to_the_gpu_partition_and_the_rest_to_cpu(tmp_path):
    jobs = slurm_dry_run(make_workdir(tmp_path))
    assert sorted(set(jobs) - set(LOCAL_JOBS)) == ["all", "archive", "normalize", "render", "stats", "train"]
    (train,) = jobs["train"]
    assert train["slurm_partition"] == "gpu"
    assert (train["gpu"], train["nodes"], train["tasks_per_node"]) == (1, 1, 1)
    assert "mpi" not in train, "one device: one task, no srun launcher"
    for rule in ("normalize", "stats", "archive", "render"):
        for job in jobs[rule]:
            assert job["slurm_partition"] == "cpu", rule
            assert job["slurm_extra"] == "--no-requeue", rule
            assert "gpu" not in job, rule
            assert job["threads"] <= 2, "the local test node has 2 CPUs"
    line = sbatch_line(train)
    assert "-p gpu" in line and "--gpus=1" in line and "--cpus-per-task=2" in line
    assert "--signal=TERM@600" in line, "Slurm warns the training before its time limit"
    assert "--mem 32000" in line and "-t 720" in line
    line = sbatch_line(jobs["normalize"][0])
    assert "-p cpu" in line and "--no-requeue" in line and "--ntasks=1" in line and "--gpus" not in line


def test_account_and_partitions_are_set_from_the_command_line(tmp_path):
    jobs = slurm_dry_run(
        make_workdir(tmp_path),
        "--default-resources", "slurm_account=lab42", "slurm_partition=short", "mem_mb=2000", "runtime=60",
        "disk_mb=10000", "slurm_extra='--no-requeue'",
        "--set-resources", "train:slurm_partition=a100", "train:gpu_model=a100", "train:runtime=1440",
        "train:mem_mb=32000",
    )
    (train,) = jobs["train"]
    line = sbatch_line(train)
    assert "-A lab42" in line and "-p a100" in line and "--gpus=a100:1" in line and "-t 1440" in line
    for rule in ("normalize", "stats", "archive", "render"):
        line = sbatch_line(jobs[rule][0])
        assert "-A lab42" in line and "-p short" in line and "--no-requeue" in line


def test_multi_gpu_multi_node_training_requests_matching_gpus_nodes_and_tasks(tmp_path):
    workdir = make_workdir(tmp_path, {"train": {"devices": 4, "num_nodes": 2, "num_workers": 7}})
    result = snakemake(workdir, "--dry-run", profile="slurm")
    (train,) = planned_resources(result.stdout)["train"]
    assert train["gpu"] == 8, "--gpus is the job's total: devices x num_nodes"
    assert train["nodes"] == 2
    assert train["tasks_per_node"] == 4, "Lightning expects ntasks-per-node == devices"
    assert train["cpus_per_task"] >= 8, "DataLoader workers + the main process"
    assert train["mpi"] == "srun"
    launcher = "${SLURM_JOB_ID:+srun --nodes=2 --ntasks-per-node=4 --cpus-per-task=8 --gpus-per-node=4}"
    assert re.search(r"Shell command: " + re.escape(launcher) + r" \S+ -m sign_vq\.cli train ", result.stdout), (
        result.stdout
    )
    line = sbatch_line(train)
    for option in ("-p gpu", "--gpus=8", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=8"):
        assert option in line, (option, line)
    assert "--ntasks=" not in line and "--ntasks-per-gpu" not in line


# --- a real run on the local Slurm -------------------------------------------------------------------------------


def local_cluster_profile(path: Path) -> Path:
    """profiles/slurm plus what a cluster without accounting needs, and memory/time the test node has."""
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    profile["slurm-status-command"] = "squeue"  # no slurmdbd: sacct never answers
    # the plugin checks about 1, 12, 33, 64 s after a submission (each wait 10 s longer while nothing finished; the
    # default starts at 40 s); must stay <= MinJobAge / 3
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["set-resources"]["train"].update(mem_mb=2000, runtime=30)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(profile))
    return path


def slurm_jobs_in(workdir: Path) -> list[dict]:
    """The Slurm jobs (finished ones too) whose working directory is ``workdir``."""
    output = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%P|%k|%T|%Z"],
        capture_output=True, text=True, check=True,
    ).stdout
    jobs = []
    for line in output.splitlines():
        job_id, partition, comment, state, directory = line.strip().split("|", 4)
        if os.path.realpath(directory) == os.path.realpath(workdir):
            rule = re.match(r"rule_([a-z]+)", comment).group(1)
            jobs.append({"id": job_id, "partition": partition, "rule": rule, "comment": comment, "state": state})
    return jobs


@pytest.mark.slow
@pytest.mark.slurm
def test_the_demo_runs_on_slurm_with_train_on_the_gpu_partition(tmp_path):
    ping = subprocess.run(["sinfo", "--noheader", "--format=%P %a"], capture_output=True, text=True)
    assert ping.returncode == 0 and "gpu" in ping.stdout and "cpu" in ping.stdout, (
        "Slurm is installed but not answering with partitions cpu and gpu; start it with "
        f"`bash ../shared/slurm/local-slurm start` ({ping.stderr.strip()})"
    )
    workdir = make_workdir(tmp_path / "run", {"input": {"num_shards": 2}})  # a job per shard: two show it
    profile = local_cluster_profile(tmp_path / "profile")
    started = time.monotonic()
    snakemake(workdir, profile=profile)
    print(f"workflow on Slurm: {time.monotonic() - started:.0f} s")
    assert (workdir / "results" / "render" / "metrics.json").is_file()

    jobs = slurm_jobs_in(workdir)
    assert sorted(job["rule"] for job in jobs) == sorted(["normalize"] * 2 + ["stats", "archive", "train", "render"])
    for job in jobs:
        assert job["state"] == "COMPLETED", job
        assert job["partition"] == ("gpu" if job["rule"] == "train" else "cpu"), job
    (train,) = [job for job in jobs if job["rule"] == "train"]
    details = subprocess.run(["scontrol", "show", "job", train["id"]], capture_output=True, text=True).stdout
    assert re.search(r"TresPerJob=\S*gpu", details) or "gres/gpu" in details, details
    # nothing left to do, also when asked through Slurm
    assert planned_jobs(snakemake(workdir, "--dry-run", profile=profile).stdout) == []


@pytest.mark.slow
@pytest.mark.slurm
def test_two_process_training_on_slurm_saves_on_the_warning_signal_and_the_retry_finishes(tmp_path, monkeypatch):
    """The profile's launch of multi-GPU training (srun, one task per device) on the local Slurm, with the signal
    Slurm sends before a time limit (SIGTERM to every step of the job), sent by the training itself at step 12. The
    data is prepared on this machine first (the demo test above runs every stage on Slurm): only train goes there."""
    free = subprocess.run(["sinfo", "--noheader", "--partition=gpu", "--format=%c %G"], capture_output=True, text=True)
    cpus, gres = free.stdout.split()
    if int(cpus) < 4 or not re.search(r"gpu:([2-9]|\d\d)", gres):
        pytest.skip(f"the local Slurm node has {cpus} CPUs and {gres}; start it with LOCAL_SLURM_CPUS=4 "
                    "LOCAL_SLURM_GPUS=2 (as .ci/run does)")
    train = {"devices": 2, "max_steps": 30, "checkpoint_every": 100, "val_every": 15}
    workdir = make_workdir(tmp_path / "run", {"train": train})
    profile = local_cluster_profile(tmp_path / "profile")
    snakemake(workdir, "--until", "archive", "stats")
    monkeypatch.setenv("SIGN_VQ_STOP_AT_STEP", "12:scancel-term")  # jobs inherit the environment (--export=ALL)
    snakemake(workdir, "--until", "train", profile=profile)
    jobs = slurm_jobs_in(workdir)
    assert [job["rule"] for job in jobs] == ["train"], "the prepared data is not made again on Slurm"
    (job,) = jobs
    slurm_logs = "".join(p.read_text() for p in (workdir / ".snakemake" / "slurm_logs" / "rule_train").glob("*.log"))
    assert "exit status 3" in slurm_logs, "the first attempt stopped on the signal and Snakemake retried it"
    log = (workdir / "results" / "logs" / "train.log").read_text()
    assert "resuming from" in log
    ranks = dict((int(r), (int(s), w)) for r, s, w in re.findall(r"rank (\d) stopped at step (\d+), weights (\w+)", log))
    assert ranks.keys() == {0, 1} and ranks[0] == ranks[1] and ranks[0][0] == 30, log
    details = subprocess.run(["scontrol", "show", "job", job["id"]], capture_output=True, text=True).stdout
    assert re.search(r"\bNumTasks=2\b", details), details
