# One job per shard: preprocess the shard's pose files into a pose zip with per-point statistics, then merge them.


rule normalize:
    input:
        files_from=get_normalize_input,
    output:
        shard=f"{RESULTS}/shards/shard-{{shard}}.zip",
        report=f"{RESULTS}/shards/shard-{{shard}}.zip.report.json",
    log:
        f"{RESULTS}/logs/normalize/shard-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/normalize/shard-{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../envs/poses.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: normalize_memory_mb(
            wildcards.shard, input.files_from, attempt
        ),
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        cli=SIGN_VQ,
        root=INPUT_ROOT,
        max_bad_fraction=config["normalize"]["max_bad_fraction"],
        outlier_limit=config["normalize"]["outlier_limit"],
        wrists="" if config["normalize"]["correct_wrists"] else "--no-wrist-correction",
    shell:
        "{params.cli} normalize --output {output.shard:q} --files-from {input.files_from:q}"
        " --root {params.root:q} --max-bad-fraction {params.max_bad_fraction}"
        " --outlier-limit {params.outlier_limit} {params.wrists} > {log:q} 2>&1"


rule stats:
    input:
        shards=get_shard_zips,
        lists=get_all_lists,
    output:
        f"{RESULTS}/stats.json",
    log:
        f"{RESULTS}/logs/stats.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats.tsv"
    conda:
        "../envs/poses.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        cli=SIGN_VQ,
    shell:
        "{params.cli} stats --output {output:q} {input.shards:q} > {log:q} 2>&1"


rule rejected:
    input:
        reports=get_shard_reports,
        skipped=[] if BUCKET else f"{LISTS}/skipped.tsv",
    output:
        REJECTED,
    log:
        f"{RESULTS}/logs/rejected.log",
    localrule: True
    conda:
        "../envs/poses.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        cli=SIGN_VQ,
        skipped=lambda wildcards, input: (
            f"--skipped {shlex.quote(input.skipped)}" if input.skipped else ""
        ),
    shell:
        "{params.cli} rejected --output {output:q} {params.skipped} {input.reports:q} > {log:q} 2>&1"
