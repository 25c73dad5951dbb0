"""Output folders: refusal to clobber, a lock while a job writes, the config that made a run (and that --resume
reads back), JSONL logs, JSON reports."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import yaml

from . import checkpoint
from .errors import UserError

LOCK = ".sparsebert.lock"
_held_locks: list = []


def lock_output_dir(path: Path) -> None:
    """Claims the folder for this process until release_output_locks(): a second run writing into the same
    folder (the same --output, --overwrite or not) would interleave its log and checkpoints with this one's."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{path}: another sparsebert process is writing into this folder; wait for it to end "
                        "or choose another") from None
    _held_locks.append(handle)


def release_output_locks() -> None:
    while _held_locks:
        _held_locks.pop().close()


def prepare_output_dir(path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: the output path is a file; give a folder")
    if path.is_dir() and any(p.name != LOCK for p in path.iterdir()) and not overwrite:
        earlier = " (an earlier run is there: --resume goes on with it)" if (path / "config.yaml").is_file() else ""
        raise UserError(f"{path}: the output folder is not empty{earlier}; choose another or pass --overwrite")
    lock_output_dir(path)
    return path


def check_output_file(path: Path, flag: str) -> None:
    """A file a job will write at its end, checked before the job starts: not a folder, in one that exists."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {path.parent} does not exist")


def check_output(output: Path, input_path: Path | None, overwrite: bool, flag: str = "--output") -> None:
    """Before anything is read or written: the output never replaces the input, nor another file unasked."""
    if input_path is not None and output.resolve() == input_path.resolve():
        raise UserError(f"{flag} {output} is the input file; write to another file")
    check_output_file(output, flag)
    if output.exists() and not overwrite:
        raise UserError(f"{flag} {output} exists; give another file or --overwrite to replace it")


def plain(value):
    """Config values as YAML/JSON can hold them."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_config(output_dir: Path, config: dict) -> None:
    """`config`: a job config's settings (`to_dict(settings_only=True)`: how the command was run, --overwrite or
    --resume, is not among them), so the file re-runs the job with --config."""
    with open(output_dir / "config.yaml", "w") as f:
        yaml.safe_dump(plain(config), f, sort_keys=False)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping of settings (an empty file is an empty one). `what` names the file
    for the user ("an experiment config"); a syntax error or another shape is one line naming the file (and
    the line)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); correct it there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a YAML {type(data).__name__}, but {what} is a mapping of settings")
    return data


def write_json(path: Path, data) -> None:
    """Atomic: a reader never sees half a file, a crash leaves the old one."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w") as f:
        json.dump(plain(data), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


class JsonlLog:
    """One JSON object per line: losses, learning rate, sparsity, dev metrics.

    resume_step: the records of steps after it (written before a crash) are dropped, so a resumed
    run's log reads as if it had never stopped; without it the file starts empty.
    """

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.enabled = enabled
        self.start = time.time()
        if not enabled:
            return
        if resume_step is not None and path.is_file():
            kept = [line for line in self._records(path) if json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self.file = open(path, "w" if resume_step is None else "a")  # an overwritten run's log starts empty

    @staticmethod
    def _records(path: Path) -> list[str]:
        """The log's lines; a last line cut short by a crash mid-write is dropped, with a word."""
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        for number, line in enumerate(lines, 1):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                if number < len(lines):
                    raise UserError(f"{path}:{number}: not a JSON record; the log was changed by hand. Remove "
                                    "the line to resume") from None
                print(f"{path}: its last line was cut short by the crash; dropped", flush=True)
                return lines[:-1]
        return lines

    def write(self, **record) -> None:
        if not self.enabled:
            return
        record = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        record["elapsed_s"] = round(time.time() - self.start, 1)
        self.file.write(json.dumps(plain(record)) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()


# the settings that say where a run's inputs are, not how it trains
INPUT_LOCATIONS = ("model", "student", "teacher", "train_file", "validation_file", "data_dir", "sentences")


def resumed_config(config):
    """With --resume, the settings are the run's own config.yaml, whatever else the command line says, except
    where things are: the run's folder is where it is now, and an input given anew (a teacher moved with the
    run, as `run --resume` gives its own) replaces the one the run started from."""
    if not config.resume:
        return config
    saved = saved_config(Path(config.output))
    current = config.to_dict()
    refuse_settings_given_anew(config, [k for k in current if k not in INPUT_LOCATIONS], saved,
                               Path(config.output) / "config.yaml")
    moved = {k: current[k] for k in INPUT_LOCATIONS if current.get(k) is not None}
    resumed = type(config)(**{**current, **{k: v for k, v in saved.items() if k in current}, **moved,
                              "resume": True, "output": config.output})
    resumed.check()
    return resumed


def refuse_settings_given_anew(config, names, saved: dict, where: Path) -> None:
    """A resumed run goes on with its own settings; one of `names` that `config` sets to other than its default and
    to other than the saved value would be dropped without a word, so it is refused."""
    defaults, current = {f.name: f.default for f in dataclasses.fields(config)}, config.to_dict()
    for name in names:
        value = current[name]
        if (name in saved and name not in ("output", "resume", "overwrite") and value != defaults[name]
                and value != saved[name]):
            raise UserError(f"--resume continues the run with the settings of {where}: --{name.replace('_', '-')} "
                            f"{value} is not its {saved[name]}; leave it out, or start a new run in another --output")


def saved_config(out: Path) -> dict:
    """The config.yaml of the run that --resume continues."""
    config = out / "config.yaml"
    if not config.is_file():
        raise UserError(f"{config}: not found; --resume continues a run in its output folder")
    saved = read_yaml_mapping(config, "the config.yaml a run writes")
    if not saved:
        raise UserError(f"{config}: empty; --resume needs the config.yaml the run wrote")
    return saved


def start_run(config, records: dict, main: bool = True):
    """The output folder with the config that made it, and `records` (the paths it resolved) beside the settings
    (rank 0 only; a resumed run keeps its own)."""
    out = Path(config.output)
    if main and config.resume:
        lock_output_dir(out)
    if main and not config.resume:
        out = prepare_output_dir(out, config.overwrite)
        checkpoint.remove_all(out)  # an overwritten run's, which a later --resume would take for this one's
        write_config(out, {"job": config.job, **config.to_dict(settings_only=True), **records})
    return out
