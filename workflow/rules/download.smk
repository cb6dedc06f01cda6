# Input photos. The embedded default fetches the real photos of the face_recognition 1.3.0 sdist
# with pip (checked by sha256) into input.dir; user photos need no rule.


checkpoint sample_photos:
    output:
        manifest=f"{RAW}/{MANIFEST_NAME}",
    params:
        sample=config["input"]["sample"],
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/download/sample_photos.log",
    script:
        "../scripts/sample_photos.py"
