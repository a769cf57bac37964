# Bucket mode only: mirror gs://BUCKET[/PREFIX] and write the shard lists. A checkpoint, so normalize reads the lists
# after it; its declared output is the small summary file (never the mirror or the lists: Snakemake deletes declared
# outputs before a job runs, and an unchanged list must keep its mtime). Rerun it with `--forcerun sync`.


checkpoint sync:
    output:
        summary=f"{LISTS}/sync-summary.json",
    log:
        f"{RESULTS}/logs/sync.log",
    benchmark:
        f"{RESULTS}/benchmarks/sync.tsv"
    localrule: True
    conda:
        "../envs/sync.yaml"
    threads: config["input"]["threads"]
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        cli=SIGN_VQ,
        bucket=BUCKET,
        mirror=config["input"]["mirror_dir"],
        lists=lambda wildcards, output: os.path.dirname(output.summary),
        shards=NUM_SHARDS,
        delete_removed="--delete-removed" if config["input"]["delete_removed"] else "",
    shell:
        "{params.cli} sync --bucket {params.bucket:q} --output {params.mirror:q}"
        " --lists {params.lists:q} --shards {params.shards} --threads {threads}"
        " {params.delete_removed} > {log:q} 2>&1"
