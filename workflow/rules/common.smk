# Helpers shared by the rules: config validation, the shard lists, input functions, train resources.
import hashlib
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from sign_vq.config import validate as validate_sign_vq_config
from sign_vq.errors import UserError
from sign_vq.fileio import write_text_if_changed
from sign_vq.normalize import read_file_list
from sign_vq.shards import list_path, write_local_shard_lists

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

# The rules call `sign-vq`: the one installed beside the Python that runs Snakemake (no need to activate the venv;
# Slurm jobs run that same Python).
shell.prefix(
    f'set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; '
)

# --- files written at parse time (only when their content changes, so their mtimes say what is stale) -------------
# The train section alone, in a file named by its content: a new hyper-parameter is a new input of train (train and
# render rerun, nothing upstream), and a dry run with other values leaves the current file (and its mtime) alone.
_train_yaml = yaml.safe_dump({"train": TRAIN}, sort_keys=True)
TRAIN_CONFIG = f"{RESULTS}/configs/train-{hashlib.sha256(_train_yaml.encode()).hexdigest()[:12]}.yaml"
write_text_if_changed(TRAIN_CONFIG, _train_yaml)

# Local mode: the shard lists come straight from the folder (bucket mode: the sync checkpoint writes them).
if not BUCKET:
    try:
        write_local_shard_lists(Path(INPUT_ROOT), Path(LISTS), NUM_SHARDS)
    except UserError as error:
        raise WorkflowError(f"input.local_dir: {error}") from None


# --- input functions ---------------------------------------------------------------------------------------------
def shard_name(shard):
    """`003` for shard 3: the wildcard value used in list and shard file names."""
    return list_path(Path(LISTS), shard).stem.removeprefix("shard-")


def get_shards():
    """Names of the non-empty shards (bucket mode: after the sync checkpoint has written the lists)."""
    if BUCKET:
        checkpoints.sync.get()
    return [
        shard_name(k)
        for k in range(NUM_SHARDS)
        if os.path.getsize(list_path(Path(LISTS), k)) > 0
    ]


def get_shard_zips(wildcards):
    return expand(f"{RESULTS}/shards/shard-{{shard}}.zip", shard=get_shards())


def get_normalize_input(wildcards):
    """The shard's list and exactly the pose files it names: adding a file reruns only its shard."""
    if BUCKET:
        checkpoints.sync.get()
    files_from = f"{LISTS}/shard-{wildcards.shard}.txt"
    try:
        poses = [os.path.normpath(p) for p in read_file_list(Path(files_from))]
    except UserError as error:
        raise WorkflowError(str(error)) from None
    return {"files_from": files_from, "poses": poses}


def get_final_outputs():
    return [
        f"{RESULTS}/stats.json",
        f"{RESULTS}/model/model.ckpt",
        f"{RESULTS}/render/metrics.json",
    ]


# --- resources ---------------------------------------------------------------------------------------------------
def train_cpus():
    """CPUs per task of the train job: DataLoader workers + the main process (and at least the rule's threads)."""
    return max(2, TRAIN["num_workers"] + 1)


def train_launch_resources():
    """Multi-process training (devices x num_nodes > 1) under Slurm: `mpi="srun"` makes the slurm executor submit
    `--ntasks-per-node=devices` and start the train command once per task with srun, as Lightning's Slurm support
    expects. Single-process training needs no launcher (the executor runs one task)."""
    return {"mpi": "srun"} if TRAIN["devices"] * TRAIN["num_nodes"] > 1 else {}
