# Helpers shared by the rules: config validation, the command the rules run, the shard lists, input functions,
# train resources.
import functools
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# The package is imported from this repository (its light modules: config, shards need only PyYAML and jsonschema,
# which Snakemake itself depends on), so the workflow and `sign-vq train --config` validate with one schema and the
# local lists are sharded exactly as `sign-vq sync` shards a bucket.
REPO = os.path.dirname(os.path.abspath(workflow.basedir))
sys.path.insert(0, REPO)

from sign_vq.config import validate as validate_sign_vq_config
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open
from sign_vq.formats.shards import (
    content_name,
    list_entries,
    stage_local_lists,
    stage_text,
)

# --- configuration -----------------------------------------------------------------------------------------------
# sign_vq.config names the wrong key and its allowed values in one line; Snakemake's own check follows.
try:
    _validated = validate_sign_vq_config(
        config, "config (config/config.yaml, --configfile, --config)"
    )
except UserError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)
validate(config, "../schemas/config.schema.yaml")

RESULTS = os.path.normpath(config["results"])
BUCKET = config["input"]["bucket"]
NUM_SHARDS = config["input"]["num_shards"]
INPUT_ROOT = config["input"]["mirror_dir"] if BUCKET else config["input"]["local_dir"]
LISTS = f"{RESULTS}/lists"
REJECTED = f"{RESULTS}/rejected.tsv"  # every input left out, with its stage and reason
TRAIN = config["train"]

# --- the command the rules run (every value in a shell command is quoted with {...:q}) -----------------------------
# With --software-deployment-method conda each job runs in its rule's environment (workflow/envs/), which holds the
# dependencies, and runs this repository's code. Otherwise jobs run the Python that runs Snakemake, so the venv of
# `make demo` needs no activation. A param, so a switch of software (deployment method or Python) reruns the jobs.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    SIGN_VQ = f"env PYTHONPATH={shlex.quote(REPO)} python -m sign_vq.cli"
else:
    SIGN_VQ = f"{shlex.quote(sys.executable)} -m sign_vq.cli"


# --- files named by their content (moved into place by local rules, never while the workflow is parsed) ----------
# The train section (and render, when training renders) alone: a new hyper-parameter is a new input of train (train
# and render rerun, nothing upstream), and a dry run with other values leaves the current file alone.
TRAIN_YAML = yaml.safe_dump(
    {"train": TRAIN, **({"render": config["render"]} if TRAIN["render_every"] else {})},
    sort_keys=True,
)
TRAIN_CONFIG = content_name(f"{RESULTS}/configs/train", TRAIN_YAML, ".yaml")

# Local mode: the main process lists the folder once per invocation (one scandir walk, one stat per pose file) and
# names each shard's list by its content (paths with their size and mtime): adding, removing or rewriting one file
# makes one new list, which the main process stages in STAGED and a `shard_list` job moves into LISTS, so only its
# shard reruns. A normalize job depends on its list alone, never on its pose files (no stat per file in the DAG).
# Job processes (each cluster job, each local `run:` job re-parses this file) never list the folder: they find the
# current lists in LISTS, and every job that reads them there depends on all of them. Entries that cannot be pose
# files or list lines are reported in LISTS/skipped.tsv. Bucket mode: the sync checkpoint writes the lists.
STAGED = os.path.join(".snakemake", "sign-vq-staged")
LOCAL_LISTS = {}  # shard name -> shards.ShardList (main process, local mode)
SKIPPED_STAGED = (
    ""  # the report of skipped entries, staged like a list (main process, local mode)
)
if not BUCKET and workflow.is_main_process:
    try:
        LOCAL_LISTS, _listing = stage_local_lists(
            Path(INPUT_ROOT), Path(LISTS), NUM_SHARDS, Path(STAGED)
        )
    except UserError as error:
        raise WorkflowError(f"input.local_dir: {error}") from None
    SKIPPED_STAGED = content_name(f"{STAGED}/skipped", _listing.report(), ".tsv")
    stage_text(Path(SKIPPED_STAGED), _listing.report())
    if _listing.skipped or _listing.others:
        logger.warning(
            f"input.local_dir: skipped entries that are not pose files, not readable or whose names cannot be "
            f"listed: {len(_listing.skipped) + len(_listing.others)}, each with its reason in {LISTS}/skipped.tsv"
        )
    del _listing


def shard_names():
    """Every shard's name (`003`), empty ones included."""
    return [f"{k:03d}" for k in range(NUM_SHARDS)]


@functools.cache
def written_lists():
    """Job processes: shard name -> its current content-named list in LISTS (one folder listing)."""
    pattern = re.compile(r"shard-(\d{3,})-[0-9a-f]{12}\.txt")
    try:
        with os.scandir(LISTS) as entries:
            matches = [(pattern.fullmatch(entry.name), entry.path) for entry in entries]
    except OSError:
        return {}
    return {match.group(1): os.path.normpath(path) for match, path in matches if match}


def local_list(shard):
    """The content-named list of a local shard: from the listing (main process) or as written (job processes)."""
    if LOCAL_LISTS:
        return LOCAL_LISTS[shard].path
    if shard not in written_lists():
        raise WorkflowError(
            f"{LISTS}: no list of shard {shard}; run snakemake from the main process to write it"
        )
    return written_lists()[shard]


def local_list_is_empty(shard):
    if LOCAL_LISTS:
        return LOCAL_LISTS[shard].empty
    return os.path.getsize(local_list(shard)) == 0


def write_derived(path, text, log):
    """Write a file derived from the config (the local rules of rules/inputs.smk)."""
    with atomic_open(path) as handle:
        handle.write(text)
    Path(log).write_text(f"{path}: {len(text.splitlines())} lines\n")


# --- input functions ---------------------------------------------------------------------------------------------
def get_shards():
    """Names (`003`) of the non-empty shards (bucket mode: after the sync checkpoint has written the lists)."""
    if not BUCKET:
        return [name for name in shard_names() if not local_list_is_empty(name)]
    checkpoints.sync.get()
    return [
        name
        for name in shard_names()
        if os.path.getsize(f"{LISTS}/shard-{name}.txt") > 0
    ]


def get_shard_zips(wildcards):
    return expand(f"{RESULTS}/shards/shard-{{shard}}.zip", shard=get_shards())


def get_shard_reports(wildcards):
    return expand(
        f"{RESULTS}/shards/shard-{{shard}}.zip.report.json", shard=get_shards()
    )


def get_all_lists(wildcards):
    """Local mode: every shard's list, empty ones included, so a job that finds the shards from LISTS runs after
    each list is current."""
    return [] if BUCKET else [local_list(name) for name in shard_names()]


def get_normalize_input(wildcards):
    """The shard's list alone: its text changes exactly when one of its files does, so only its shard reruns."""
    if BUCKET:
        checkpoints.sync.get()
        return f"{LISTS}/shard-{wildcards.shard}.txt"
    return local_list(wildcards.shard)


def get_final_outputs():
    return [
        f"{RESULTS}/stats.json",
        REJECTED,
        f"{RESULTS}/model/model.ckpt",
        f"{RESULTS}/render/metrics.json",
        *([] if BUCKET else [f"{LISTS}/skipped.tsv"]),
    ]


def report_rejected(table):
    """One line in the Snakemake log: how many inputs were left out, and where to read why."""
    if os.path.exists(table):
        with open(table, encoding="utf-8") as handle:
            count = sum(1 for _ in handle) - 1
        logger.info(
            f"{count} input files rejected or skipped, each with its stage and reason: {table}"
        )


# --- resources ---------------------------------------------------------------------------------------------------
def normalize_memory_mb(shard, files_from, attempt):
    """Memory of a normalize job, sized by the largest file its list records (each file is read whole), times the
    attempt; the files themselves are never stat'ed."""
    from sign_vq.dataset.normalize import (
        memory_mb,
    )  # imported when jobs are planned, not when the workflow is parsed

    if LOCAL_LISTS:
        return memory_mb([LOCAL_LISTS[shard].largest], attempt)
    try:
        entries = list_entries(Path(files_from))
    except UserError as error:
        raise WorkflowError(str(error)) from None
    return memory_mb((size for _, size in entries), attempt)


def train_cpus():
    """CPUs per task of the train job: DataLoader workers + the main process (and at least the rule's threads)."""
    return max(2, TRAIN["num_workers"] + 1)


def train_launch_resources():
    """Multi-process training (devices x num_nodes > 1) under Slurm: `mpi="srun"` makes the slurm executor submit
    `--ntasks-per-node=devices` and run the job's shell in the batch step, where `srun` starts one training process
    per task (Lightning's Slurm support) in a step of their own. Single-process training needs no launcher.
    """
    return {"mpi": "srun"} if TRAIN["devices"] * TRAIN["num_nodes"] > 1 else {}


def train_launcher(resources):
    """`srun` with the job's task geometry for multi-process training inside a Slurm job, expanded by the shell at
    run time: the slurm job-step executor clears the SLURM_* variables srun would read, and outside Slurm (the local
    profile) Lightning starts its own processes. Empty for single-process training."""
    if TRAIN["devices"] * TRAIN["num_nodes"] == 1:
        return ""
    flags = [
        f"--nodes={resources.nodes}",
        f"--ntasks-per-node={resources.tasks_per_node}",
        f"--cpus-per-task={resources.cpus_per_task}",
    ]
    if resources.get("gpu", 0):
        flags.append(f"--gpus-per-node={resources.gpu // resources.nodes}")
    return "${SLURM_JOB_ID:+srun " + " ".join(flags) + "}"
