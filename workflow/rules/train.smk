# Training. Checkpoints live in model/checkpoints/ (not declared, so Snakemake keeps them); a killed or timed-out job
# exits non-zero and the retry resumes from checkpoints/last.ckpt. Hyper-parameters come from
# configs/train-<hash>.yaml (written by common.smk; a changed config["train"] is a new file). GPUs, nodes and tasks
# follow train.devices and train.num_nodes; the partition, runtime and memory come from the profile.


rule train:
    input:
        config=TRAIN_CONFIG,
        archive=f"{RESULTS}/archive.zip",
        stats=f"{RESULTS}/stats.json",
    output:
        model=f"{RESULTS}/model/model.ckpt",
        metrics=report(
            f"{RESULTS}/model/metrics.csv",
            caption="../report/training-metrics.rst",
            category="Training",
        ),
        curves=report(
            f"{RESULTS}/model/curves.png",
            caption="../report/training-curves.rst",
            category="Training",
        ),
    log:
        f"{RESULTS}/logs/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/train.tsv"
    retries: 3
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        **train_launch_resources(),
        mem_mb=8000,
        runtime=60,
        gpu=TRAIN["devices"] * TRAIN["num_nodes"],
        nodes=TRAIN["num_nodes"],
        tasks_per_node=TRAIN["devices"],
        cpus_per_task=train_cpus(),
    params:
        output=lambda wildcards, output: os.path.dirname(output.model),
        launcher=lambda wildcards, resources: resources.get("mpi", ""),
    shell:
        "{params.launcher} sign-vq train --config {input.config} --archive {input.archive}"
        " --stats {input.stats} --output {params.output} >> {log} 2>&1"
