# Configuration validation and input functions, included first by the Snakefile.
import functools
import os

from snakemake.logging import logger

from leam.config import apply_overrides, occlusion_sources, photo_dir, resolve_models, run_name, validate_config
from leam.stages.dataset import MANIFEST_NAME, count_identities, input_problem, list_inputs, sample_caveats, shard_of
from leam.plan import run_options
from leam.models.weights import builder_problem, check_weights, missing_file_message, weights_path
from leam.core.codeversion import PACKAGE, script_modules
from leam.core.resultsdir import damaged_outputs, killed_temporaries, unplanned_outputs
from leam.core.stamps import update_stamp

# With --configfile, the study's files say which models it has, each entry whole (Snakemake merges
# config/config.yaml underneath key by key), and model-naming keys default to those models; messages name them.
_user_files = [str(f) for f in workflow.overwrite_configfiles]
resolve_models(config, _user_files)
apply_overrides(config, dict(workflow.config_settings.config))  # --config, over the resolved models; typed
_SOURCE = " + ".join(_user_files) or "config/config.yaml"
# for messages, in every job too (set here, not read from the user: no `envvars:` to assert)
os.environ.update(LEAM_CONFIG=_SOURCE)
# Each run has its own results/{run}/ and logs/{run}/: a --configfile that names no run is named after
# its file, so it never reads or overwrites another config's results.
config["run"] = run_name(config, _user_files, dict(workflow.config_settings.config))
validate_config(config, source=f"config ({_SOURCE} and any --config overrides)")
RUN = config["run"]
# one device for every torch stage; a rule that runs torch asks a cluster for a GPU unless it is cpu/mps
DEVICE = config["device"]
GPU = 0 if DEVICE in ("cpu", "mps") else 1


def results(path):
    """``path`` inside this run's results folder: results/{run}/{path}."""
    return f"results/{RUN}/{path}"


# the views written as CSV by the tables rule (and shown in `snakemake --report`)
TABLES = [
    "findings",
    "identity_profiles",
    "threshold_table",
    "class_share_layer",
    "compare_table",
    "occlusion_by_model",
    "atlas_summary",
    "verification",
    "rejects",
    "suspect_labels",
]


def figure(name, caption, subcategory):
    """results/{run}/figures/{name}, marked for `snakemake --report`: captioned by
    workflow/report/{caption}.rst, under Figures / {subcategory} (a model, or all models)."""
    fmt = "PDF (vector)" if name.endswith(".pdf") else "PNG, 300 dpi"
    labels = {"figure": caption, "format": fmt}
    return report(
        results(f"figures/{name}"),
        caption=f"../report/{caption}.rst",
        category="Figures",
        subcategory=subcategory,
        labels=labels,
    )


def logs(path):
    """``path`` inside this run's log folder: logs/{run}/{path}."""
    return f"logs/{RUN}/{path}"


# torch's OpenMP threads spin while they wait for each other; on a busy machine a descheduled
# thread keeps the others spinning. A short spin (inherited by every job) measured 1.5-2.7x faster
# beside 4 CPU burners on 2 cores and within 6 % when idle (benchmarks/contention.py); set the
# variable yourself to override.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")
# A kernel's thread count must not follow the machine's load: with dynamic teams (OpenMP's
# OMP_DYNAMIC, MKL's MKL_DYNAMIC, on by default in MKL) a loaded machine may get fewer threads, and
# a reduction split differently sums in another order. Pinned off for every job (overridable).
os.environ.setdefault("OMP_DYNAMIC", "FALSE")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

RAW = photo_dir(config)  # input.dir, or data/sample for input.sample
# never more shards than people: an empty shard is a job that does nothing, and 100000 of them hang the DAG
_people = count_identities(config, RAW)
N_SHARDS = min(config["shards"], _people) if _people else config["shards"]
if N_SHARDS < config["shards"]:
    logger.warning(f"leam: shards: {config['shards']} is more than the {_people} people of this run: using {N_SHARDS}")
SHARDS = [f"{s:03d}" for s in range(N_SHARDS)]
# your own photos: a missing or empty input.dir stops here, before any job replaces the last results
if not config["input"]["sample"] and not config["input"]["urls"] and (_msg := input_problem(RAW)):
    raise ValueError(_msg)

# A builder that cannot be found stops the run here (found, not imported: the plan needs no torch), naming its config key (layers, weights and
# the device are checked by each model's preflight job, first).
for _name, _spec in config["models"].items():
    if _msg := builder_problem(_spec["builder"]):
        raise ValueError(f"models.{_name}.builder: {_msg}")

# LEAM_PLAN_ONLY=1 with --dry-run plans a config on a machine without its photos, URL list or
# weights (make lint plans config/paper.yaml so): every model is planned, missing files are named
# (a run that would execute jobs stops in onstart, which a dry run does not call)
PLAN_ONLY = os.environ.get("LEAM_PLAN_ONLY") == "1"

# Models whose weight file is absent are left out (loudly); the others run. A file that is present
# but wrong (sha256) fails that model's extract job with the same kind of message.
_absent = {m: msg for m, spec in config["models"].items() if (msg := check_weights(m, spec))}
SKIPPED_MODELS = {} if PLAN_ONLY else _absent
MODELS = [m for m in config["models"] if m not in SKIPPED_MODELS]
for _msg in _absent.values():
    logger.warning(f"leam: {'planned all the same (LEAM_PLAN_ONLY): ' if PLAN_ONLY else 'skipping '}{_msg}")
if not MODELS:
    raise ValueError("no model can run:\n" + "\n".join(SKIPPED_MODELS.values()))
if config["parser"]["name"] == "farl" and (
    _msg := missing_file_message("parser 'farl'", config["parser"]["weights"], "parser.weights.path")
):
    if not PLAN_ONLY:
        raise ValueError(_msg)
    logger.warning(f"leam: planned all the same (LEAM_PLAN_ONLY): {_msg}")


# the occlusion sources (the paper used IR_CASIA's first convolution); the first drives the atlas
OCCLUDE_SOURCES, _warnings = occlusion_sources(config, MODELS)
for _msg in _warnings:
    logger.warning(f"leam: {_msg}")
OCCLUDE_SOURCE = OCCLUDE_SOURCES[0][0]


# What the results folder holds that this run must not trust or must not pass off as its own
# (leam.core.resultsdir): a damaged Parquet file is removed so that its job runs again; files of models or
# shards no longer in the run are named here and in the database (table unplanned_outputs).
if workflow.is_main_process:
    for _path, _why in damaged_outputs(results("")):
        logger.warning(f"leam: {_path} {_why}: removed; the job that wrote it runs again")
        _path.unlink(missing_ok=True)
UNPLANNED = [str(p) for p in unplanned_outputs(results(""), MODELS, N_SHARDS)] if workflow.is_main_process else []
if UNPLANNED:
    logger.warning(
        f"leam: {len(UNPLANNED)} file(s) in {results('')} are not part of this run (a model or shard no longer "
        f"in the config; kept, listed in the database's unplanned_outputs table): {', '.join(UNPLANNED[:5])}"
        + (" ..." if len(UNPLANNED) > 5 else "")
    )


# every stage's options (leam.options), built once from the validated config: a rule passes its
# stage's as params.options, so a changed option reruns exactly the jobs that read it
OPTIONS = run_options(config, models=MODELS, sources=OCCLUDE_SOURCES, unplanned=UNPLANNED)


onstart:
    if PLAN_ONLY:
        raise ValueError(
            "LEAM_PLAN_ONLY=1 plans a run without its data and weights: use it with --dry-run (-n) only"
        )
    # temporaries of killed jobs (leam.core.io.atomic_path) whose file a job of this run writes: removed now that
    # this run holds Snakemake's lock on those files
    _outputs = {os.path.abspath(f) for job in workflow.dag.jobs for f in job.output}
    for _tmp in killed_temporaries(results("")):
        _target = os.path.join(os.path.dirname(os.path.abspath(_tmp)), _tmp.name[1:].rsplit(".", 2)[0])
        if _target in _outputs:
            logger.info(f"leam: removing {_tmp}, left by a job that was killed")
            _tmp.unlink(missing_ok=True)


onsuccess:
    for _msg in SKIPPED_MODELS.values():
        logger.warning(f"leam: this run left out {_msg}")


def url_list(wildcards):
    """The download checkpoint's input: input.urls (with LEAM_PLAN_ONLY, nothing when it is absent)."""
    urls = config["input"]["urls"]
    return [] if not urls or (PLAN_ONLY and not os.path.exists(urls)) else urls


def sample_manifest():
    """The sample-photo or download manifest when one is configured (checkpoints), else nothing."""
    if config["input"]["sample"]:
        return checkpoints.sample_photos.get().output.manifest
    if config["input"]["urls"]:
        return checkpoints.download.get().output.manifest
    return []


@functools.lru_cache(maxsize=2)
def _inputs_by_shard(stamp):
    """{shard: ([usable paths], [(identity, image, path, reason) of the unusable])} of input.dir,
    listed once for every shard's detect job; ``stamp`` (the sample/download manifest's mtime)
    lists again when a checkpoint rewrote the folder."""
    n = N_SHARDS
    out = {s: ([], []) for s in range(n)}
    entries, unusable = list_inputs(RAW)
    for e in entries:
        out[shard_of(e.identity, n)][0].append(e.path)
    for u in unusable:
        out[shard_of(u.identity, n)][1].append((u.identity, u.image, u.path, u.reason))
    return out


def _shard_inputs(wildcards):
    manifest = sample_manifest()  # known after the sample/download checkpoint
    return _inputs_by_shard(os.stat(manifest).st_mtime_ns if manifest else None)[int(wildcards.shard)]


def shard_images(wildcards):
    """Every usable file of the shard's identities under input.dir."""
    return list(_shard_inputs(wildcards)[0])


def shard_stamp(wildcards):
    """results/{run}/inputs/shard-NNN.json: the sha256 of the shard's photos, rewritten only when
    one changed (leam.core.stamps): a photo replaced by an older copy (cp -p) reruns detect."""
    stamp = results(f"inputs/shard-{wildcards.shard}.json")
    update_stamp(stamp, {os.path.relpath(p, RAW): p for p in shard_images(wildcards)})
    return stamp


def weight_stamp(wildcards):
    """results/{run}/inputs/weights-{model}.json: the sha256 of the model's weight files (and a
    TF.js model's shards): replaced weights rerun the model's jobs, whatever their timestamps."""
    spec = config["models"][wildcards.model]
    stamp = results(f"inputs/weights-{wildcards.model}.json")
    if wildcards.model in _absent and PLAN_ONLY:  # planned without its weights: an empty stamp
        update_stamp(stamp, {})
        return stamp
    main = weights_path(wildcards.model, spec["weights"], f"models.{wildcards.model}.weights.path")
    files = {"weights": main}
    for shard in (spec.get("builder_args") or {}).get("shard_sha256") or {}:
        files[shard] = main.parent / shard
    update_stamp(stamp, files)
    return stamp


def code_stamp(script):
    """An input function: results/{run}/inputs/code-{script}[-{model}].json, the sha256 of the leam
    modules that workflow/scripts/{script}.py can run (leam.core.codeversion.script_modules; a model's
    builder module too) and of the script: an edited module reruns exactly the rules that run it."""
    path = os.path.join(workflow.basedir, "scripts", f"{script}.py")

    def stamp(wildcards):
        model = wildcards.get("model")
        builder = config["models"][model]["builder"].split(":")[0] if model else None
        name = f"code-{script}-{model}" if model else f"code-{script}"
        return _update_code_stamp(results(f"inputs/{name}.json"), path, (builder,) if builder else ())

    return stamp


@functools.cache
def _update_code_stamp(stamp, script, extra):
    files = {f"leam/{p.relative_to(PACKAGE).as_posix()}": p for p in script_modules(script, extra)}
    update_stamp(stamp, {f"workflow/scripts/{os.path.basename(script)}": script, **files})
    return stamp


def shard_unusable(wildcards):
    """The shard's entries under input.dir that cannot be photos, with their reasons (detect records
    them as rejected): [(identity, image, path, reason)]."""
    return list(_shard_inputs(wildcards)[1])


HAVE_METADATA = bool(config["metadata"]["identities"] or config["metadata"]["ages"])


def metadata_files():
    """The demographic CSVs named in config (none by default)."""
    return [f for f in (config["metadata"]["identities"], config["metadata"]["ages"]) if f and f != "fgnet"]


def shard_outputs(pattern, **kw):
    return expand(pattern, shard=SHARDS, **kw)
