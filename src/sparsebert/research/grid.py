"""An experiment grid: its YAML file read and checked whole, expanded into jobs, and the locks by which several
processes share one grid (experiment.py runs it; the file's form is described there)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from pathlib import Path

from ..config import AugmentConfig, FinetuneConfig, PruneConfig, build
from ..errors import UserError
from ..output_folders import read_yaml_mapping


def load_grid(path: str) -> dict:
    if not Path(path).is_file():
        raise UserError(f"{path}: experiment config not found")
    config = read_yaml_mapping(path, "an experiment config")
    for key in ("name", "output", "runs_dir", "teachers", "jobs"):
        if key not in config:
            raise UserError(f"{path}: missing '{key}:'")
    unknown = sorted(config.keys() - CONFIG_KEYS)
    if unknown:  # a misspelt key would otherwise leave its setting at the default, silently, for hours
        raise UserError(f"{path}: unknown key '{unknown[0]}:'; an experiment config takes "
                        f"{', '.join(sorted(CONFIG_KEYS))}")
    if config.get("plot_metric", "accuracy") not in ("accuracy", "score"):
        raise UserError(f"{path}: plot_metric: '{config['plot_metric']}'; give accuracy or score")
    check_jobs(config, path)
    return config


CONFIG_KEYS = {"name", "output", "runs_dir", "label", "plot_metric", "teachers", "augmented", "prune_defaults",
               "compare", "paired", "jobs"}


JOB_KEYS = {"variant", "teacher", "seeds", "sparsities", "steps", "prune", "train"}

# the keys a job expands over: what each value must be, and an example for the message
JOB_LISTS = {"seeds": (lambda v: isinstance(v, int) and not isinstance(v, bool), 42),
             "sparsities": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, 0.95),
             "steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, 500)}


def check_jobs(config: dict, path: str) -> None:
    """Every job's settings are checked before any job runs: a typo in the last job of a grid would otherwise
    stop it hours in, and a misspelt key (`sparsity:` for `sparsities:`) would silently run the default."""
    for name in [*mapping(config["teachers"], f"{path}: teachers:"), *(config.get("augmented") or {})]:
        check_name(name, f"{path}: '{name}:'")
    for name, settings in config["teachers"].items():
        if "task" not in mapping(settings, f"{path}: teachers: {name}"):
            raise UserError(f"{path}: teachers: {name} needs 'task:'")
        build(FinetuneConfig, {"output": "-", **settings}, path, f"teachers: {name}")
    augmented = mapping(config.get("augmented") or {}, f"{path}: augmented:")
    for name, settings in augmented.items():
        build(AugmentConfig, {"output": "-", **mapping(settings, f"{path}: augmented: {name}")},
              path, f"augmented: {name}")
    mapping(config.get("prune_defaults", {}), f"{path}: prune_defaults:")
    if not isinstance(config["jobs"], list):
        raise UserError(f"{path}: 'jobs:' is a list of jobs, one '- {{variant: ..., teacher: ...}}' each")
    for number, spec in enumerate(config["jobs"], 1):
        if not isinstance(spec, dict) or not {"variant", "teacher"} <= spec.keys():
            raise UserError(f"{path}: job {number} of 'jobs:' needs 'variant:' and 'teacher:'")
        where = f"{path}: job {number} ({spec['variant']})"
        for key in ("variant", "teacher", "train"):
            check_name(spec.get(key, "plain"), f"{where}: {key}:")
        if spec.keys() - JOB_KEYS:
            raise UserError(f"{where}: unknown key '{sorted(spec.keys() - JOB_KEYS)[0]}'; a job takes "
                            f"{', '.join(sorted(JOB_KEYS))}")
        for key, (fits, example) in JOB_LISTS.items():
            values = spec.get(key, [example])
            if not isinstance(values, list) or not values or not all(map(fits, values)):
                raise UserError(f"{where}: '{key}:' is a list like [{example}]")
        mapping(spec.get("prune", {}), f"{where}: prune:")
        if spec["teacher"] not in config["teachers"]:
            raise UserError(f"{where}: teacher '{spec['teacher']}' is not defined under 'teachers:'")
        if "train" in spec and spec["train"] not in augmented:
            raise UserError(f"{where}: trains on '{spec['train']}', which 'augmented:' does not define")
        settings = {**config.get("prune_defaults", {}), **spec.get("prune", {})}
        build(PruneConfig, {"output": "-", "teacher": None if settings.get("no_teacher") else "-", **settings},
              path, spec["variant"])
    variants = {spec["variant"] for spec in config["jobs"]}
    pairs = config.get("paired", [])
    if not isinstance(pairs, list):
        raise UserError(f"{path}: 'paired:' is a list like [{{method: kap, baseline: prune-teacher, sparsity: 0.95}}]")
    for number, pair in enumerate(pairs, 1):
        if not isinstance(pair, dict) or pair.keys() != {"method", "baseline", "sparsity"}:
            raise UserError(f"{path}: pair {number} of 'paired:' takes method:, baseline: and sparsity:")
        missing = sorted({pair["method"], pair["baseline"]} - variants)
        if missing:
            raise UserError(f"{path}: pair {number} of 'paired:' names '{missing[0]}', which no job's variant is")


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name, where: str) -> None:
    """Names become folder names under runs_dir: a name with a slash or `..` would put a job (run with
    overwrite) outside it."""
    if not (isinstance(name, str) and NAME.match(name)):
        raise UserError(f"{where} '{name}' is not a plain name; use letters, digits, '.', '_' and '-' "
                        "(it becomes a folder name under runs_dir)")


def mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        shape = "empty" if value is None else f"a {type(value).__name__}"
        raise UserError(f"{where} is a mapping ({{key: value, ...}}), not {shape}")
    return value


def expand(config: dict) -> list[dict]:
    jobs = []
    for spec in config["jobs"]:
        for (rank, seed), sparsity, steps in itertools.product(enumerate(spec.get("seeds", [42])),
                                                               spec.get("sparsities", [0.95]), spec.get("steps", [None])):
            teacher = spec["teacher"]
            length = f"-{steps}steps" if steps else ""  # `steps:` lists run lengths, each its own job
            jobs.append({**spec, "seed": seed, "seed_rank": rank, "sparsity": sparsity, "steps": steps,
                         "task": config["teachers"][teacher]["task"],
                         "dir": f"{spec['variant']}-{teacher}-s{sparsity:g}-seed{seed}{length}"})
    # a grid spread over several runs completes every job's first seed before any job's second: a table for
    # one seed comes first, the spread over seeds later
    return sorted(jobs, key=lambda j: j["seed_rank"])


def fingerprint(model_folder: Path) -> str:
    """Names a trained model by its weights, so results of a grid continued on another day or machine can show
    that their teacher is the same one, retrained bit for bit."""
    digest = hashlib.sha256()
    for weights in sorted(model_folder.glob("*.safetensors")):
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def claim(folder: Path) -> bool:
    """Several processes can work through one grid side by side: each job goes to the one that creates
    its claim file first (atomically, naming its process id). A claim whose process is gone is taken over."""
    lock = folder.with_name(folder.name + ".claim")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            owner = lock.read_text()
            if not owner:
                return False  # its process created it an instant ago and is writing its id
            os.kill(int(owner), 0)
            return False  # its process is running the job
        except (ProcessLookupError, ValueError, FileNotFoundError):
            try:  # of several processes finding it stale, one renames it away and retries
                os.rename(lock, f"{lock}.stale-{os.getpid()}")
                os.unlink(f"{lock}.stale-{os.getpid()}")
            except FileNotFoundError:
                pass
            return claim(folder)
        except PermissionError:  # a live process of another user
            return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release(folder: Path) -> None:
    folder.with_name(folder.name + ".claim").unlink(missing_ok=True)


def made_once(target: Path, done: Path, make) -> None:
    """Calls make() unless `done` exists; while another process of the grid makes `target`, waits for it."""
    while not done.is_file():
        if claim(target):
            try:
                if not done.is_file():
                    make()
            finally:
                release(target)
        else:
            time.sleep(5)
