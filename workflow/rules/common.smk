# Helpers shared by the rules: config validation, the command the rules run, the shard lists, input functions,
# train resources.
import hashlib
import os
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
from sign_vq.shards import read_list, relative_key, scan_poses, shard_texts

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
TRAIN = config["train"]

# --- the command the rules run (every value in a shell command is quoted with {...:q}) -----------------------------
# With --software-deployment-method conda each job runs in its rule's environment (workflow/envs/), which holds the
# dependencies, and runs this repository's code. Otherwise jobs run the Python that runs Snakemake, so the venv of
# `make demo` needs no activation. A param, so a switch of software (deployment method or Python) reruns the jobs.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    SIGN_VQ = f"env PYTHONPATH={shlex.quote(REPO)} python -m sign_vq.cli"
else:
    SIGN_VQ = f"{shlex.quote(sys.executable)} -m sign_vq.cli"


# --- files named by their content (written by local rules, never while the workflow is parsed) -------------------
def content_name(prefix, text, suffix):
    """`PREFIX-<hash of text>SUFFIX`: a new content is a new file, an unchanged one keeps its file and mtime."""
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}{suffix}"


# The train section (and render, when training renders) alone: a new hyper-parameter is a new input of train (train
# and render rerun, nothing upstream), and a dry run with other values leaves the current file alone.
TRAIN_YAML = yaml.safe_dump(
    {"train": TRAIN, **({"render": config["render"]} if TRAIN["render_every"] else {})},
    sort_keys=True,
)
TRAIN_CONFIG = content_name(f"{RESULTS}/configs/train", TRAIN_YAML, ".yaml")

# Local mode: the folder is listed here (read only) and each non-empty shard's list is the output of a `shard_list`
# job, named by its content: adding one file makes one new list, so only its shard reruns. Entries that cannot be
# pose files or list lines are skipped and reported in LISTS/skipped.tsv. Bucket mode: the sync checkpoint writes
# the lists.
if BUCKET:
    LOCAL_LISTS, SKIPPED_REPORT = {}, ""
else:
    try:
        _listing = scan_poses(Path(INPUT_ROOT))
    except UserError as error:
        raise WorkflowError(f"input.local_dir: {error}") from None
    _texts = shard_texts(
        _listing.files, Path(LISTS), NUM_SHARDS, key=relative_key(INPUT_ROOT)
    )
    LOCAL_LISTS = {
        f"{k:03d}": text for k, text in enumerate(_texts) if text
    }  # shard name -> list text
    SKIPPED_REPORT = _listing.report()
    if _listing.skipped and workflow.is_main_process:
        logger.warning(
            f"input.local_dir: skipped entries that are not readable pose files or whose names cannot be "
            f"listed: {len(_listing.skipped)}, each with its reason in {LISTS}/skipped.tsv"
        )


def local_list(shard):
    """The content-named list file of a non-empty local shard."""
    return content_name(f"{LISTS}/shard-{shard}", LOCAL_LISTS[shard], ".txt")


def write_derived(path, text, log):
    """Write a file derived from the config or the listing (the local rules of rules/inputs.smk)."""
    with atomic_open(path) as handle:
        handle.write(text)
    Path(log).write_text(f"{path}: {len(text.splitlines())} lines\n")


# --- input functions ---------------------------------------------------------------------------------------------
def get_shards():
    """Names (`003`) of the non-empty shards (bucket mode: after the sync checkpoint has written the lists)."""
    if not BUCKET:
        return sorted(LOCAL_LISTS)
    checkpoints.sync.get()
    names = [f"{k:03d}" for k in range(NUM_SHARDS)]
    return [name for name in names if os.path.getsize(f"{LISTS}/shard-{name}.txt") > 0]


def get_shard_zips(wildcards):
    return expand(f"{RESULTS}/shards/shard-{{shard}}.zip", shard=get_shards())


def get_normalize_input(wildcards):
    """The shard's list and exactly the pose files it names: adding a file reruns only its shard."""
    if BUCKET:
        checkpoints.sync.get()
        files_from = f"{LISTS}/shard-{wildcards.shard}.txt"
        try:
            files = read_list(Path(files_from))
        except UserError as error:
            raise WorkflowError(str(error)) from None
    else:
        files_from = local_list(wildcards.shard)
        files = [
            Path(LISTS, line) for line in LOCAL_LISTS[wildcards.shard].splitlines()
        ]
    return {"files_from": files_from, "poses": [os.path.normpath(p) for p in files]}


def get_final_outputs():
    return [
        f"{RESULTS}/stats.json",
        f"{RESULTS}/model/model.ckpt",
        f"{RESULTS}/render/metrics.json",
        *([] if BUCKET else [f"{LISTS}/skipped.tsv"]),
    ]


# --- resources ---------------------------------------------------------------------------------------------------
def normalize_memory_mb(poses, attempt):
    """Memory of a normalize job, sized by its largest pose file (each is read whole), times the attempt."""
    from sign_vq.normalize import (
        memory_mb,
    )  # imported when jobs are planned, not when the workflow is parsed

    return memory_mb([Path(p) for p in poses], attempt)


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
