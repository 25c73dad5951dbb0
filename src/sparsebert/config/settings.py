"""The settings machinery every job's config shares: a field with its help and group (`setting`), coercion of
values from YAML or Python, the checks values share, and the command line generated from a dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import field
from pathlib import Path

from ..errors import UserError

MIN_SEQ_LENGTH = 8  # a pair's [CLS] a [SEP] b [SEP] with room for a word of each: below it, truncation gives up


def setting(default=None, help: str = "", group: str = "settings", *, choices=None, positional: bool = False,
            required: bool = False, invocation: bool = False, metavar: str | None = None):
    """A field of a job's config. `invocation`: how the command is run (--overwrite, --resume), not what it
    runs; left out of the config.yaml a run writes."""
    return field(default=default, metadata=dict(help=help, group=group, choices=choices, positional=positional,
                                                required=required, invocation=invocation, metavar=metavar))


# Settings several jobs share, declared once: the same flag means the same thing, with the same help, in every job.
def overwrite_folder():
    return setting(False, "write into a non-empty output folder", "output", invocation=True)


def overwrite_file(flag: str = "--output"):
    return setting(False, f"replace an existing {flag} file", "output", invocation=True)


def seed_setting():
    return setting(42, "fixes the data order, the new head and dropout: a CPU run repeats bit for bit", "training")


def device_setting():
    return setting("auto", "auto: a GPU where there is one", "training", choices=("auto", "cpu", "cuda"))


def glue_data_dir():
    return setting(None, "task folder of the GLUE distribution (default: the bundled copy)", "data")


def _base_type(annotation):
    """int for `int`, str for `str | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


class JobConfig:
    """What every job config shares: coercion of values from YAML or Python, checks, YAML-ready dicts."""

    job: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f, kind in _fields(type(self)):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), kind))
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise UserError(f"{flag(f.name)} {value}: choose one of {', '.join(choices)}")
            if value is None and (f.metadata["required"] or f.metadata["positional"]):
                what = f.name.upper() if f.metadata["positional"] else flag(f.name)
                raise UserError(f"{what} is required (`sparsebert {self.job} --help`)")
        if not getattr(self, "resume", False):  # a resumed run is checked once its config.yaml is read back
            self.check()

    def check(self) -> None:
        """Checks of values alone (no files read); a job checks its files itself."""

    def to_dict(self, settings_only: bool = False) -> dict:
        return {f.name: getattr(self, f.name) for f, _ in _fields(type(self))
                if not (settings_only and f.metadata["invocation"])}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fields(cls) -> list[tuple[dataclasses.Field, type]]:
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls)]


def _coerce(name: str, value, kind):
    """YAML reads 1e-4 as a string and Python callers pass Paths and lists; each becomes the field's type."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{flag(name)}: '{value}' is not true or false")
    if kind in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{flag(name)}: {value} is not a number")
        try:
            number = kind(value) if isinstance(value, str) else value
        except ValueError:
            raise UserError(f"{flag(name)}: '{value}' is not {'a whole' if kind is int else 'a'} number") from None
        if kind is int and (not float(number).is_integer()):
            raise UserError(f"{flag(name)}: {value} is not a whole number")
        return kind(number)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value) if isinstance(value, Path) else value


def build(cls, values: dict, path, section: str):
    """A config from a mapping: a section (`prune`, a grid's job) of the YAML file `path`; an unknown key, or a
    value its checks refuse, is an error naming both."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{path}: unknown setting '{unknown[0]}' in {section}:")
    try:
        return cls(**values)
    except UserError as e:
        raise UserError(f"{path}: {section}: {e}") from None


def add_arguments(parser: argparse.ArgumentParser, cls, defaults: dict | None = None) -> None:
    """The job's flags, grouped as its config groups them; `defaults` (from --config) replace the class's."""
    defaults = defaults or {}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, kind in _fields(cls):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = defaults.get(f.name, f.default)
        options: dict = {"help": meta["help"], "default": default}
        if meta["positional"]:
            if f.name in defaults:
                options["nargs"] = "?"
            group.add_argument(f.name, metavar=meta["metavar"] or f.name.upper(), **options)
            continue
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        else:
            options.update(type=kind, metavar=meta["metavar"])
            if meta["choices"]:
                options["choices"] = meta["choices"]
        if meta["required"] and f.name not in defaults:
            options["required"] = True
        group.add_argument(flag(f.name), dest=f.name, **options)


def from_namespace(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})




def check_sizes(config, names=("batch_size",)) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"{flag(name)} must be at least 1")


def check_seq_length(length: int) -> None:
    if not MIN_SEQ_LENGTH <= length <= 512:
        raise UserError(f"--max-seq-length {length}: give {MIN_SEQ_LENGTH} to 512 tokens "
                        "(BERT-family encoders take at most 512)")


def check_text_columns(columns: str | None) -> None:
    """One text column, or two for pairs: a third would be read by no one."""
    if columns is not None and not 1 <= len(columns.split(",")) <= 2:
        raise UserError(f"--text-columns {columns}: give one column, or two for pairs, comma-separated")


def loss_weights(text: str, terms: tuple[str, ...]) -> tuple[float, ...]:
    """--loss-weights: one non-negative number per loss term, comma-separated, in the order of `terms`."""
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != len(terms) or min(weights) < 0:
        raise UserError(f"--loss-weights '{text}': give {len(terms)} non-negative numbers: {','.join(terms)}")
    return weights


def comma_list(text: str, flag: str, parse, what: str, valid, rule: str) -> list:
    """A flag's comma-separated values, each parsed by `parse` and held to `valid`; refused in one line naming
    the flag."""
    try:
        values = [parse(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} '{text}': give {what} separated by commas") from None
    if not all(valid(v) for v in values):
        raise UserError(f"{flag} '{text}': {rule}")
    return values


def whole_numbers(text: str, flag: str) -> list[int]:
    return comma_list(text, flag, int, "whole numbers", lambda v: v >= 1, "every value must be at least 1")


def fractions(text: str, flag: str) -> list[float]:
    return comma_list(text, flag, float, "fractions", lambda v: 0 <= v < 1, "every value is a fraction in [0, 1)")
