# Training. Checkpoints live in model/checkpoints/ (not declared, so Snakemake keeps them); a killed or timed-out job
# exits non-zero and the retry resumes from checkpoints/last.ckpt. Hyper-parameters come from
# configs/train-<hash>.yaml (rule train_config; a changed config["train"] is a new file). GPUs, nodes and tasks
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
        "../envs/train.yaml"
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
        cli=SIGN_VQ,
        output=lambda wildcards, output: os.path.dirname(output.model),
        launcher=lambda wildcards, resources: train_launcher(resources),
    shell:
        "{params.launcher} {params.cli} train --config {input.config:q} --archive {input.archive:q}"
        " --stats {input.stats:q} --output {params.output:q} >> {log:q} 2>&1"
