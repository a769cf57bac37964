"""The Snakemake workflow: style and lint, config errors, the DAG, reruns of only the stale stages, the report.

Every run happens in a temporary working directory (its own config/config.yaml: the repository's defaults with the
small test configuration of .test/config/config.yaml, and a copy of the example poses), never in the repository's
results/. Hostile values (shell syntax, spaces, unicode in paths, bad files in the input folder) run as data.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import EXAMPLES
from sign_vq.formats.statistics import load_stats
from sign_vq.model.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
SNAKEFILE = REPO / "workflow" / "Snakefile"
STAGES = ("normalize", "stats", "archive", "train", "render")
LOCAL_JOBS = ("shard_list", "skipped_files", "train_config", "rejected")  # lists, config, the table of rejected
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"  # a training run of a few seconds on a CPU


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def write_config(workdir: Path, changes: dict | None = None) -> dict:
    """workdir/config/config.yaml: the repository's defaults, the test config, local poses, plus ``changes``."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    deep_update(config, yaml.safe_load(TEST_CONFIG.read_text()))
    deep_update(config, {"input": {"local_dir": "poses"}})
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


def stage_jobs(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The jobs of the five stages (and sync), without the local jobs that write derived files."""
    return [(rule, wildcards) for rule, wildcards in jobs if rule not in LOCAL_JOBS]


def shell_commands(output: str) -> list[list[str]]:
    """Every `Shell command:` of a dry run, split as the shell would split it."""
    return [shlex.split(line.split(":", 1)[1]) for line in output.splitlines() if line.startswith("Shell command: ")
            and "None" != line.split(":", 1)[1].strip()]


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


def test_dry_run_on_a_clean_clone_lists_the_five_stages_and_writes_nothing(tmp_path):
    workdir = make_workdir(tmp_path)
    jobs = dry_run(workdir)
    rules = [rule for rule, _ in jobs]
    assert sorted(set(rules)) == sorted(STAGES + LOCAL_JOBS)
    assert rules.count("normalize") == rules.count("shard_list") == 4
    assert sorted(w for r, w in jobs if r == "normalize") == [f"shard={k:03d}" for k in range(4)]
    for stage in STAGES[1:] + LOCAL_JOBS[1:]:
        assert rules.count(stage) == 1
    assert not (workdir / "results").exists(), "a dry run writes nothing: no lists, no train config"


def test_the_test_config_runs_from_the_dot_test_folder(tmp_path):
    """The catalogue's convention: `snakemake --directory .test` runs the small config on the examples (here in a
    copy of the repository's layout, so the repository's own .test/ keeps no state)."""
    shutil.copytree(REPO / ".test" / "config", tmp_path / ".test" / "config")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local"),
         "--directory", ".test", "--dry-run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout
    assert sorted({rule for rule, _ in planned_jobs(result.stdout)} - {"all"}) == sorted(STAGES + LOCAL_JOBS)


def test_bucket_mode_dry_run_starts_with_the_sync_checkpoint(tmp_path):
    workdir = make_workdir(tmp_path, {"input": {"bucket": "gs://sign-vq-test/poses", "mirror_dir": "mirror"}})
    result = snakemake(workdir, "--dry-run")
    assert "-m sign_vq.cli sync --bucket gs://sign-vq-test/poses --output mirror" in result.stdout
    # the shards are known only after sync: the dry run plans sync and the stages after the shards
    assert [rule for rule, _ in planned_jobs(result.stdout)] == sorted(
        ["sync", "stats", "archive", "train", "render", "train_config", "rejected"]
    )
    assert not (workdir / "results" / "lists").exists(), "bucket mode writes no lists before sync"


def test_the_dag_links_the_stages_in_order_and_renders_with_dot(tmp_path):
    workdir = make_workdir(tmp_path)
    dag = snakemake(workdir, "--dag").stdout
    dot_text = dag[dag.index("digraph") :]
    rules = {node: label.split("\\n")[0] for node, label in re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot_text, re.M)}
    edges = {(rules[a], rules[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)$", dot_text, re.M)}
    chain = ("normalize", "stats"), ("normalize", "archive"), ("archive", "train"), ("stats", "train"), ("train", "render")
    assert set(chain) <= edges, edges
    assert sum(rule == "normalize" for rule in rules.values()) == 4, "one normalize job per shard"
    if shutil.which("dot"):  # graphviz is optional: the structure above is what a user reads in the picture
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
        ({"train": {"lr": float("nan")}}, ["train.lr = nan", "finite"]),
        ({"train": {"model": {"d_model": 10, "heads": 4}}}, ["train.model.heads = 4", "must divide"]),
    ],
    ids=["unknown-key", "wrong-type", "not-in-enum", "out-of-range", "unknown-section", "nan", "heads"],
)
def test_a_wrong_config_stops_before_any_job(tmp_path, changes, expected):
    workdir = make_workdir(tmp_path, changes)
    result = snakemake(workdir, check=False)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if expected[0] in line]
    for text in expected:
        assert text in line, result.stdout
    assert "Traceback" not in result.stdout
    assert "Finished job" not in result.stdout
    assert not (workdir / "results").exists(), "no job ran, nothing was written"


def test_a_missing_input_folder_is_a_clear_error(tmp_path):
    workdir = make_workdir(tmp_path, {"input": {"local_dir": "no-such-folder"}})
    result = snakemake(workdir, "--dry-run", check=False)
    assert result.returncode == 1
    assert "input.local_dir: no-such-folder: not a folder" in result.stdout


# --- hostile values are data: quoted in every shell command ------------------------------------------------------

INJECTIONS = {
    "bucket": {"input": {"bucket": "gs://abc/x --help; touch pwned; exit 0 #", "mirror_dir": "mirror"}},
    "results": {"results": "out$(touch pwned)"},
    "local_dir": {"input": {"local_dir": "in;touch pwned;x"}},
}


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_a_shell_injection_in_the_config_is_one_quoted_argument(tmp_path, name):
    workdir = make_workdir(tmp_path, INJECTIONS[name])
    if name == "local_dir":
        (workdir / "poses").rename(workdir / "in;touch pwned;x")
    value = INJECTIONS[name].get("results") or INJECTIONS[name]["input"][name]
    arguments = [argument for command in shell_commands(snakemake(workdir, "--dry-run").stdout) for argument in command]
    assert any(value in argument for argument in arguments), "the value reaches the commands"
    assert all(value in argument for argument in arguments if "pwned" in argument), "never split into words"
    assert not list(tmp_path.rglob("pwned"))


HOSTILE_RESULTS = "rés ults$(touch pwned)"
HOSTILE_INPUT = "in;touch pwned;x ü"
BAD_NAMES = {
    "bad\\nname.pose": "the name holds a line break or control character",
    "loop-a.pose": "Too many levels of symbolic links",
    "loop-b.pose": "Too many levels of symbolic links",
    "folder.pose": "a folder, not a pose file",
    "notes.txt": "not a .pose file",
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The workflow run to the end with shell syntax, a space and unicode in `results` and `input.local_dir`, and
    a newline name, a symlink loop and a folder named `.pose` among the example poses."""
    workdir = make_workdir(
        tmp_path_factory.mktemp("hostile") / "run",
        {"results": HOSTILE_RESULTS, "input": {"local_dir": HOSTILE_INPUT, "num_shards": 2}},
    )
    poses = (workdir / "poses").rename(workdir / HOSTILE_INPUT)
    shutil.copy(EXAMPLES / "lexicon" / "pizza.pose", poses / "bad\nname.pose")
    (poses / "loop-a.pose").symlink_to("loop-b.pose")
    (poses / "loop-b.pose").symlink_to("loop-a.pose")
    (poses / "folder.pose").mkdir()
    (poses / "notes.txt").write_text("not a pose")
    (poses / "corrupt.pose").write_bytes(b"\x00" * 64)
    snakemake(workdir)
    return workdir


@pytest.mark.slow
def test_hostile_paths_run_as_data_and_bad_files_are_skipped_and_reported(hostile_run):
    results = hostile_run / HOSTILE_RESULTS
    assert (results / "model" / "model.ckpt").is_file() and (results / "render" / "metrics.json").is_file()
    assert not list(hostile_run.parent.rglob("pwned")), "no value of the config ran as a command"
    listed = [line for path in (results / "lists").glob("shard-*.txt") for line in path.read_text().splitlines()]
    assert len(listed) == len(list(EXAMPLES.rglob("*.pose"))) + 1, "every good file is listed (and corrupt.pose)"
    report = (results / "lists" / "skipped.tsv").read_text().splitlines()
    assert sorted(report[1:]) == sorted(f"{HOSTILE_INPUT}/{name}\t{reason}" for name, reason in BAD_NAMES.items())
    rejected = (results / "rejected.tsv").read_text().splitlines()
    assert rejected[0] == "file\tstage\treason" and len(rejected) == 1 + len(BAD_NAMES) + 1
    assert [line for line in rejected if line.startswith(f"{HOSTILE_INPUT}/corrupt.pose\tnormalize\t")]
    assert f"{HOSTILE_INPUT}/notes.txt\tlisting\tnot a .pose file" in rejected
    rerun = snakemake(hostile_run, "--until", "rejected", "--forcerun", "rejected").stdout
    assert f"{len(BAD_NAMES) + 1} input files rejected or skipped, each with its stage and reason" in rerun
    again = snakemake(hostile_run, "--dry-run").stdout
    assert planned_jobs(again) == []
    assert f"whose names cannot be listed: {len(BAD_NAMES)}, each with its reason in {HOSTILE_RESULTS}/lists/skipped.tsv" in again


# --- a real run on the examples, then reruns of only what is stale ----------------------------------------------


def shard_of_file(relative: str, num_shards: int = 4) -> str:
    from sign_vq.formats.shards import shard_of

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
        assert dry_run(finished_run) == [("render", ""), ("train", ""), ("train_config", "")]
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
    jobs = dry_run(finished_run)
    assert stage_jobs(jobs) == expected
    assert [(rule, wildcards.split(",")[0]) for rule, wildcards in jobs if rule in LOCAL_JOBS] == [
        ("rejected", ""), ("shard_list", f"shard={shard}")
    ], "one new list, for the new file's shard"
    # and a real run does exactly that, after which nothing is left to do
    before = {p.name: p.stat().st_mtime_ns for p in (finished_run / "results" / "shards").glob("shard-*.zip")}
    old_model = read_checkpoint(finished_run / "results" / "model" / "model.ckpt")["state_dict"]
    snakemake(finished_run)
    after = {p.name: p.stat().st_mtime_ns for p in (finished_run / "results" / "shards").glob("shard-*.zip")}
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == [f"shard-{shard}.zip"]
    assert dry_run(finished_run) == []
    # the model was trained again, on the new data: never the old run's last.ckpt resumed
    new_model = read_checkpoint(finished_run / "results" / "model" / "model.ckpt")["state_dict"]
    assert any(not torch.equal(old_model[key], new_model[key]) for key in old_model)
    new_mean = torch.as_tensor(load_stats(finished_run / "results" / "stats.json").mean).float()
    assert torch.allclose(new_model["model.mean"].float().reshape(new_mean.shape), new_mean)
    assert (finished_run / "results" / "model" / "previous").is_dir()


def shard_runs(workdir: Path, change) -> list[str]:
    """The shard zips a real run rewrites after ``change()`` (up to the archive), and nothing left to do after."""
    shards = workdir / "results" / "shards"
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.zip")}
    change()
    snakemake(workdir, "--until", "archive")
    assert stage_jobs(dry_run(workdir, "--until", "archive")) == []
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.zip")}
    return sorted(name for name in after if after.get(name) != before.get(name))


@pytest.mark.slow
def test_a_hand_edited_list_reruns_its_shard_and_bad_lines_are_skipped_by_name(tmp_path):
    """A list naming a file that is gone or a file outside the input folder: its shard reruns, reports both in one
    line each (shard and file), keeps every good pose; nothing else reruns."""
    workdir = make_workdir(tmp_path / "run")
    snakemake(workdir, "--until", "archive")
    lists = workdir / "results" / "lists"
    edited = max(lists.glob("shard-*-*.txt"), key=lambda path: path.stat().st_size)
    shard = edited.name.split("-")[1]
    good = len(edited.read_text().splitlines())
    outside = tmp_path / "outside.pose"
    shutil.copy(EXAMPLES / "lexicon" / "pizza.pose", outside)
    with edited.open("a") as handle:
        handle.write(f"../../poses/gone.pose\t100\t1\n{outside}\n")
    result = snakemake(workdir, "--until", "archive")
    assert stage_jobs(planned_jobs(result.stdout)) == [("archive", ""), ("normalize", f"shard={shard}")]
    report = json.loads((workdir / "results" / "shards" / f"shard-{shard}.zip.report.json").read_text())
    assert (report["ok"], report["bad"]) == (good, 2)
    reasons = {Path(bad["file"]).name: bad["reason"] for bad in report["bad_files"]}
    assert "No such file" in reasons["gone.pose"] and "gone.pose" in reasons["gone.pose"]
    assert "outside the input folder" in reasons["outside.pose"] and str(outside) in reasons["outside.pose"]
    log = (workdir / "results" / "logs" / "normalize" / f"shard-{shard}.log").read_text()
    assert re.search(rf"shard-{shard}\.zip: skipped .*gone\.pose", log) and "outside.pose" in log


@pytest.mark.slow
def test_a_cluster_job_never_lists_the_input_folder(finished_run):
    """A job process (what Snakemake runs inside each cluster job) parses the workflow without the input folder:
    here it is moved away, and the stats job still runs from the lists."""
    poses, hidden = finished_run / "poses", finished_run / "poses-away"
    stats = finished_run / "results" / "stats.json"
    before, content = stats.stat().st_mtime_ns, stats.read_bytes()
    poses.rename(hidden)
    try:
        snakemake(finished_run, "--target-jobs", "stats:", "--allowed-rules", "stats", "--mode", "remote", "--force",
                  "--nolock", "--cores", "1")
    finally:
        hidden.rename(poses)
    assert stats.stat().st_mtime_ns != before and stats.read_bytes() == content
    os.utime(stats, ns=(before, before))  # what follows stays up to date for the next tests
    assert dry_run(finished_run) == []


@pytest.mark.slow
def test_a_dry_run_with_another_folder_leaves_the_lists_alone(finished_run):
    lists = finished_run / "results" / "lists"
    before = {p.name: p.stat().st_mtime_ns for p in lists.iterdir()}
    other = finished_run / "other"
    other.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "lexicon" / "pizza.pose", other / "pizza.pose")
    write_config(finished_run, {"input": {"local_dir": "other", "num_shards": 2}})
    try:
        assert "normalize" in {rule for rule, _ in dry_run(finished_run)}
    finally:
        write_config(finished_run)
    assert {p.name: p.stat().st_mtime_ns for p in lists.iterdir()} == before
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

        data = bytearray((EXAMPLES / "lexicon" / "pizza.pose").read_bytes())
        data[-1] ^= 1  # the same object, the same size, other bytes: a new generation and crc32c
        bucket.blob("poses/lexicon/pizza.pose").upload_from_string(bytes(data))
        snakemake(workdir, "--until", "archive", "--forcerun", "sync")
        again = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.zip")}
        assert sorted(name for name in again if again[name] != after[name]) == [
            f"shard-{shard_of_file('lexicon/pizza.pose')}.zip"]
    finally:
        server.stop()


@pytest.mark.slow
def test_more_steps_resume_the_trained_model(finished_run):
    """Three steps more than the model was trained for: the train job resumes from its last checkpoint."""
    steps = yaml.safe_load((finished_run / "config" / "config.yaml").read_text())["train"]["max_steps"] + 3
    write_config(finished_run, {"train": {"max_steps": steps}})
    assert stage_jobs(dry_run(finished_run)) == [("render", ""), ("train", "")]
    snakemake(finished_run, "--until", "train")
    assert "resuming from" in (finished_run / "results" / "logs" / "train.log").read_text()
    assert read_checkpoint(finished_run / "results" / "model" / "model.ckpt")["global_step"] == steps


@pytest.mark.slow
def test_a_rewritten_or_removed_pose_file_reruns_exactly_its_shard(finished_run):
    """Last in this file: its runs go up to the archive only, so they leave the model older than the archive."""
    poses = finished_run / "poses"
    target = min(poses.rglob("*.pose"), key=lambda p: p.stat().st_size)
    shard = shard_of_file(target.relative_to(poses).as_posix())
    data = bytearray(target.read_bytes())
    data[-1] ^= 1  # same name, same size, other bytes

    def rewrite():
        target.write_bytes(bytes(data))
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1))  # coarse-clock file systems

    assert shard_runs(finished_run, rewrite) == [f"shard-{shard}.zip"]
    saved = target.read_bytes()
    assert shard_runs(finished_run, target.unlink) == [f"shard-{shard}.zip"]
    assert shard_runs(finished_run, lambda: target.write_bytes(saved)) == [f"shard-{shard}.zip"]
