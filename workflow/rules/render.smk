# Validation render: side-by-side videos of a few validation poses and the metrics over the whole validation split.


rule render:
    input:
        model=f"{RESULTS}/model/model.ckpt",
        archive=f"{RESULTS}/archive.zip",
    output:
        metrics=report(
            f"{RESULTS}/render/metrics.json",
            caption="../report/metrics.rst",
            category="Validation metrics",
        ),
        table=report(
            f"{RESULTS}/render/metrics.csv",
            caption="../report/metrics-table.rst",
            category="Validation metrics",
        ),
        plot=report(
            f"{RESULTS}/render/metrics.png",
            caption="../report/metrics-plot.rst",
            category="Validation metrics",
        ),
        videos=report(
            directory(f"{RESULTS}/render/videos"),
            patterns=["{name}.mp4"],
            caption="../report/videos.rst",
            category="Validation videos",
        ),
    log:
        f"{RESULTS}/logs/render.log",
    benchmark:
        f"{RESULTS}/benchmarks/render.tsv"
    conda:
        "../envs/render.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        cli=SIGN_VQ,
        output=lambda wildcards, output: os.path.dirname(output.metrics),
        num_poses=config["render"]["num_poses"],
        metric_poses=config["render"]["metric_poses"],
        max_frames=config["render"]["max_frames"],
        gif="" if config["render"]["gif"] else "--no-gif",
    shell:
        "{params.cli} render --model {input.model:q} --archive {input.archive:q}"
        " --output {params.output:q} --num-poses {params.num_poses} --metric-poses {params.metric_poses}"
        " --max-frames {params.max_frames} {params.gif} > {log:q} 2>&1"
