"""The Snakemake workflow: style and lint, config errors, the DAG, reruns of only the stale stages, the report.

Every run happens in a temporary working directory (its own config/config.yaml, a copy of the example poses and a
tiny training config), never in the repository's results/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
SNAKEFILE = REPO / "workflow" / "Snakefile"
EXAMPLES = REPO / "examples" / "poses"
STAGES = ("normalize", "stats", "archive", "train", "render")

# A training run of a few seconds on a CPU.
TINY_TRAIN = {
    "max_steps": 6,
    "batch_size": 4,
    "max_frames": 32,
    "warmup_steps": 2,
    "checkpoint_every": 3,
    "val_every": 3,
    "accelerator": "cpu",
    "wandb": {"mode": "disabled"},
    "model": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1},
}
TINY_RENDER = {"num_poses": 1, "max_frames": 20, "gif": False}


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def write_config(workdir: Path, changes: dict | None = None) -> dict:
    """workdir/config/config.yaml: the repository's defaults, local poses, tiny training, plus ``changes``."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    deep_update(config, {"input": {"local_dir": "poses"}, "train": TINY_TRAIN, "render": TINY_RENDER})
    deep_update(config, changes or {})
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def make_workdir(path: Path, changes: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLES, path / "poses")
    write_config(path, changes)
    return path


def snakemake(workdir: Path, *args: str, profile: str = "local", check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir``; stdout and stderr together in ``.stdout``."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--profile", str(REPO / "profiles" / profile), *args]
    result = subprocess.run(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-6000:]}")
    return result


JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists, sorted; `rule all` left out."""
    jobs = []
    for block in re.split(r"\n\s*\n", output):
        lines = [line.rstrip() for line in block.strip().splitlines()]
        for index, line in enumerate(lines):
            match = JOB_HEADER.match(line)
            if not match:
                continue
            wildcards = ""
            for detail in lines[index + 1 :]:
                if not detail.startswith("    "):
                    break
                if detail.strip().startswith("wildcards:"):
                    wildcards = detail.split(":", 1)[1].strip()
            if match.group(1) != "all":
                jobs.append((match.group(1), wildcards))
    return sorted(jobs)


def dry_run(workdir: Path, *args: str, profile: str = "local") -> list[tuple[str, str]]:
    return planned_jobs(snakemake(workdir, "--dry-run", *args, profile=profile).stdout)


# --- style, lint, DAG --------------------------------------------------------------------------------------------


def test_snakefmt_check():
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", str(REPO / "workflow")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("bucket", ["", "gs://sign-vq-test/poses"], ids=["local", "bucket"])
def test_lint_reports_nothing(tmp_path, bucket):
    workdir = make_workdir(tmp_path, {"input": {"bucket": bucket}})
    output = snakemake(workdir, "--lint").stdout
    assert "Lints for" not in output, output
    assert "Congratulations" in output


def test_dry_run_on_a_clean_clone_lists_the_five_stages(tmp_path):
    workdir = make_workdir(tmp_path)
    jobs = dry_run(workdir)
    rules = [rule for rule, _ in jobs]
    assert sorted(set(rules)) == sorted(STAGES)
    assert rules.count("normalize") == 4
    assert sorted(w for r, w in jobs if r == "normalize") == [f"shard={k:03d}" for k in range(4)]
    for stage in STAGES[1:]:
        assert rules.count(stage) == 1
    assert not (workdir / "results" / "shards").exists(), "a dry run must not run jobs"


def test_bucket_mode_dry_run_starts_with_the_sync_checkpoint(tmp_path):
    workdir = make_workdir(tmp_path, {"input": {"bucket": "gs://sign-vq-test/poses", "mirror_dir": "mirror"}})
    result = snakemake(workdir, "--dry-run")
    assert "sign-vq sync --bucket gs://sign-vq-test/poses --output mirror" in result.stdout
    # the shards are known only after sync: the dry run plans sync and the stages after the shards
    assert [rule for rule, _ in planned_jobs(result.stdout)] == sorted(["sync", "stats", "archive", "train", "render"])
    assert not (workdir / "results" / "lists").exists(), "bucket mode writes no lists before sync"


def test_dag_renders_with_dot(tmp_path):
    workdir = make_workdir(tmp_path)
    dag = snakemake(workdir, "--dag").stdout
    for stage in STAGES:
        assert stage in dag
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` is not installed (the DAG text was checked)")
    dot_text = dag[dag.index("digraph") :]
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True).stdout
    assert "<svg" in svg


# --- the configuration is checked before any job ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"train": {"max_step": 10}}, ["unknown config key train.max_step", "max_steps"]),
        ({"train": {"max_steps": "many"}}, ["train.max_steps", "expected integer"]),
        ({"train": {"precision": "64"}}, ["train.precision", "'bf16-mixed'"]),
        ({"input": {"num_shards": 0}}, ["input.num_shards", "minimum 1"]),
        ({"normalise": {}}, ["unknown config key normalise", "normalize"]),
    ],
    ids=["unknown-key", "wrong-type", "not-in-enum", "out-of-range", "unknown-section"],
)
def test_a_wrong_config_stops_before_any_job(tmp_path, changes, expected):
    workdir = make_workdir(tmp_path, changes)
    result = snakemake(workdir, check=False)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
    assert "Finished job" not in result.stdout
    assert not (workdir / "results" / "shards").exists()


def test_a_missing_input_folder_is_a_clear_error(tmp_path):
    workdir = make_workdir(tmp_path, {"input": {"local_dir": "no-such-folder"}})
    result = snakemake(workdir, "--dry-run", check=False)
    assert result.returncode != 0
    assert "input.local_dir" in result.stdout and "no-such-folder" in result.stdout


# --- a real run on the examples, then reruns of only what is stale ----------------------------------------------


def shard_of_file(relative: str, num_shards: int = 4) -> str:
    from sign_vq.shards import shard_of

    return f"{shard_of(relative, num_shards):03d}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The workflow run to the end once on the examples (tiny training)."""
    workdir = make_workdir(tmp_path_factory.mktemp("workflow") / "run")
    snakemake(workdir)
    return workdir


@pytest.mark.slow
def test_a_complete_run_writes_every_stage(finished_run):
    results = finished_run / "results"
    for path in (
        "stats.json",
        "archive.zip",
        "model/model.ckpt",
        "model/curves.png",
        "model/metrics.csv",
        "render/metrics.json",
        "render/metrics.png",
    ):
        assert (results / path).is_file(), path
    assert list((results / "render" / "videos").glob("*.mp4"))
    assert len(list((results / "shards").glob("shard-*.zip"))) == 4
    for rule in ("stats", "archive", "train", "render"):
        assert (results / "benchmarks" / f"{rule}.tsv").is_file()
        assert (results / "logs" / f"{rule}.log").is_file()
    assert (results / "model" / "checkpoints" / "last.ckpt").is_file(), "checkpoints are kept after the run"


@pytest.mark.slow
def test_a_second_dry_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "--dry-run")
    assert planned_jobs(result.stdout) == []
    assert "Nothing to be done" in result.stdout


@pytest.mark.slow
def test_the_report_holds_videos_metrics_curves_and_runtimes(finished_run):
    snakemake(finished_run, "--report", "results/report.zip")
    with zipfile.ZipFile(finished_run / "results" / "report.zip") as report:
        names = report.namelist()
        html = report.read(next(n for n in names if n.endswith("report.html"))).decode()
    for suffix in (".mp4", "metrics.json", "metrics.png", "curves.png", "metrics.csv"):
        assert any(n.endswith(suffix) for n in names), (suffix, names)
    for category in ("Validation videos", "Validation metrics", "Training"):
        assert category in html
    assert "runtime" in html.lower()


@pytest.mark.slow
def test_a_new_hyper_parameter_reruns_train_and_render_only(finished_run):
    write_config(finished_run, {"train": {"lr": 0.002}})
    try:
        assert dry_run(finished_run) == [("render", ""), ("train", "")]
    finally:
        write_config(finished_run)
    # back to the old value: the dry run left the trained model up to date
    assert dry_run(finished_run) == []


@pytest.mark.slow
def test_a_render_option_reruns_render_only(finished_run):
    write_config(finished_run, {"render": {"max_frames": 10}})
    try:
        assert dry_run(finished_run) == [("render", "")]
    finally:
        write_config(finished_run)


@pytest.mark.slow
def test_a_new_pose_file_reruns_only_its_shard_and_what_follows(finished_run):
    poses = finished_run / "poses"
    source = poses / "lexicon" / "pizza.pose"
    added = poses / "lexicon" / "pizza-again.pose"
    shutil.copy(source, added)
    shard = shard_of_file("lexicon/pizza-again.pose")
    expected = sorted([("normalize", f"shard={shard}"), ("stats", ""), ("archive", ""), ("train", ""), ("render", "")])
    assert dry_run(finished_run) == expected
    # and a real run does exactly that, after which nothing is left to do
    before = {p.name: p.stat().st_mtime_ns for p in (finished_run / "results" / "shards").glob("shard-*.zip")}
    snakemake(finished_run)
    after = {p.name: p.stat().st_mtime_ns for p in (finished_run / "results" / "shards").glob("shard-*.zip")}
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == [f"shard-{shard}.zip"]
    assert dry_run(finished_run) == []


# --- the documented configuration --------------------------------------------------------------------------------


def schema_leaves(node: dict, prefix: str = "") -> list[str]:
    leaves = []
    for key, child in node.get("properties", {}).items():
        if child.get("type") == "object" and child.get("properties"):
            leaves.extend(schema_leaves(child, f"{prefix}{key}."))
        else:
            leaves.append(f"{prefix}{key}")
    return leaves


def test_every_config_key_is_in_config_yaml_and_explained_in_the_readme():
    from sign_vq.config import schema, validate

    leaves = schema_leaves(schema())
    readme = (REPO / "config" / "README.md").read_text()
    assert [key for key in leaves if f"`{key}`" not in readme] == []
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(shipped, "config/config.yaml")
    missing = []
    for key in leaves:
        node = shipped
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    assert missing == []


# --- bucket mode: the sync checkpoint against a local fake GCS server ---------------------------------------------


@pytest.mark.slow
def test_bucket_mode_runs_and_a_new_object_reruns_only_its_shard(tmp_path, monkeypatch):
    gcs_server = pytest.importorskip("gcs_server")
    try:
        server = gcs_server.GcsServer().start()
    except (FileNotFoundError, RuntimeError, TimeoutError) as error:
        pytest.skip(f"fake-gcs-server not available: {error}")
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        bucket = server.client().create_bucket("sign-vq-workflow")
        for path in sorted(EXAMPLES.rglob("*.pose")):
            bucket.blob(f"poses/{path.relative_to(EXAMPLES).as_posix()}").upload_from_filename(str(path))
        workdir = make_workdir(
            tmp_path, {"input": {"bucket": "gs://sign-vq-workflow/poses", "mirror_dir": "mirror", "threads": 2}}
        )
        snakemake(workdir, "--until", "archive")
        assert (workdir / "mirror" / "lexicon" / "pizza.pose").is_file()
        assert len(list((workdir / "results" / "shards").glob("shard-*.zip"))) == 4
        assert dry_run(workdir, "--until", "archive") == [], "no reruns after a checkpoint (snakemake#3559)"

        shards = workdir / "results" / "shards"
        before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.zip")}
        bucket.blob("poses/lexicon/pizza-again.pose").upload_from_filename(str(EXAMPLES / "lexicon" / "pizza.pose"))
        snakemake(workdir, "--until", "archive", "--forcerun", "sync")
        after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.zip")}
        changed = sorted(name for name in after if after[name] != before[name])
        assert changed == [f"shard-{shard_of_file('lexicon/pizza-again.pose')}.zip"]
    finally:
        server.stop()
