# Files derived from the config and the input folder, put in place by local jobs (never while the workflow is parsed,
# so a dry run leaves them alone): the local shard lists and the report of skipped entries (local mode, staged by the
# main process's listing; see rules/common.smk), the train config. Shell jobs run in the main process, which knows
# what it staged.


rule shard_list:
    output:
        f"{LISTS}/shard-{{shard}}-{{digest}}.txt",
    log:
        f"{RESULTS}/logs/lists/shard-{{shard}}-{{digest}}.log",
    wildcard_constraints:
        shard=r"\d+",
        digest=r"[0-9a-f]{12}",
    localrule: True
    conda:
        "../envs/poses.yaml"
    params:
        staged=lambda wildcards, output: os.path.join(
            STAGED, os.path.basename(output[0])
        ),
        shard=lambda wildcards: f"{LISTS}/shard-{wildcards.shard}",
    shell:
        # then the shard's older lists go: LISTS holds one list per shard
        "(mv -f -v {params.staged:q} {output:q} && for old in {params.shard:q}-*.txt;"
        ' do [ "$old" = {output:q} ] || rm -f -v "$old"; done) > {log:q} 2>&1'


rule skipped_files:
    output:
        f"{LISTS}/skipped.tsv",
    log:
        f"{RESULTS}/logs/lists/skipped.log",
    localrule: True
    conda:
        "../envs/poses.yaml"
    params:
        staged=SKIPPED_STAGED,  # named by the report's content: a new report reruns the job
    shell:
        "cp {params.staged:q} {output:q} > {log:q} 2>&1"


rule train_config:
    output:
        TRAIN_CONFIG,
    log:
        f"{RESULTS}/logs/train_config.log",
    localrule: True
    run:
        write_derived(output[0], TRAIN_YAML, log[0])
