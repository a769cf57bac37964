# The training archive: every shard joined into one pose zip with a hash-based train/validation split.


rule archive:
    input:
        shards=get_shard_zips,
        lists=get_all_lists,
    output:
        f"{RESULTS}/archive.zip",
    log:
        f"{RESULTS}/logs/archive.log",
    benchmark:
        f"{RESULTS}/benchmarks/archive.tsv"
    conda:
        "../envs/poses.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        cli=SIGN_VQ,
        val_fraction=config["archive"]["val_fraction"],
    shell:
        "{params.cli} archive --output {output:q} --val-fraction {params.val_fraction}"
        " {input.shards:q} > {log:q} 2>&1"
