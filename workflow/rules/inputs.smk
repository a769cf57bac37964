# Files derived from the config and the input folder, written by local jobs (never while the workflow is parsed, so
# a dry run writes nothing): the local shard lists and the report of skipped entries (local mode), the train config.


rule shard_list:
    output:
        f"{LISTS}/shard-{{shard}}-{{digest}}.txt",
    log:
        f"{RESULTS}/logs/lists/shard-{{shard}}-{{digest}}.log",
    wildcard_constraints:
        shard=r"\d+",
        digest=r"[0-9a-f]{12}",
    localrule: True
    run:
        write_derived(output[0], LOCAL_LISTS[wildcards.shard], log[0])


rule skipped_files:
    output:
        f"{LISTS}/skipped.tsv",
    log:
        f"{RESULTS}/logs/lists/skipped.log",
    localrule: True
    params:
        report=SKIPPED_REPORT,
    run:
        write_derived(output[0], params.report, log[0])


rule train_config:
    output:
        TRAIN_CONFIG,
    log:
        f"{RESULTS}/logs/train_config.log",
    localrule: True
    run:
        write_derived(output[0], TRAIN_YAML, log[0])
