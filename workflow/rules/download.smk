# Input photos. The embedded default copies its sample sets (checked by sha256) into data/sample,
# never among the user's photos; a URL list (input.urls) is downloaded into input.dir; photos
# already in input.dir need no rule.


checkpoint sample_photos:
    output:
        manifest=f"{RAW}/{MANIFEST_NAME}",
    log:
        logs("download/sample_photos.log"),
    conda:
        "../envs/leam.yaml"
    params:
        options=OPTIONS.sample,
    script:
        "../scripts/sample_photos.py"


checkpoint download:
    input:
        urls=url_list,
    output:
        manifest=f"{RAW}/DOWNLOADS.sha256",
        table=results("downloads.parquet"),
    log:
        logs("download/download.log"),
    conda:
        "../envs/leam.yaml"
    params:
        options=OPTIONS.download,
    script:
        "../scripts/download.py"
