"""The `sparsebert` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import errno
import sys

from .config import CONFIGS, CONFIGURABLE, add_arguments, from_namespace, read_config_file
from .errors import UserError

JOBS = {
    "run": "fine-tune a teacher, prune at distilling, report (the main job)",
    "finetune": "ordinary fine-tuning on a task (makes teachers)",
    "prune": "pruning at distilling: prune the pre-trained encoder while distilling from a teacher",
    "evaluate": "dev metrics (and sparsity) of a model",
    "augment": "TinyBERT-style data augmentation of a task's training set",
    "export": "write a compressed sparse model (CSR in safetensors), optionally ONNX",
    "bench": "time dense PyTorch against the sparse engine",
    "predict": "labels and probabilities for new text, through the sparse engine",
    "embed": "sentence embeddings of a file's texts, through the sparse engine",
    "prune-embedder": "prune a sentence embedder while it distils from its dense self (no task, no labels)",
    "experiment": "run a grid of jobs from a YAML config; tables and plots",
    "tasks": "list the GLUE tasks, their files, labels and metrics",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, an off switch)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def build_parser(job: str | None = None, file_settings: dict | None = None) -> argparse.ArgumentParser:
    """The command line; only `job`'s own flags are added, generated from its config class (config/, which
    imports nothing heavy, so that --help answers at once). `file_settings` (from --config) become the defaults
    that flags override."""
    parser = argparse.ArgumentParser(prog="sparsebert", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow pickle weights (.bin/.pt), loaded with torch.load(weights_only=True)")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, help_text in JOBS.items():
        p = sub.add_parser(name, help=help_text, description=CONFIGS[name].__doc__ or help_text,
                           formatter_class=HelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        p.add_argument("--trust-pickle", action="store_true", default=argparse.SUPPRESS,
                       help="allow pickle weights (.bin/.pt), loaded with torch.load(weights_only=True)")
        if name == job:
            if name in CONFIGURABLE:
                p.add_argument("--config", default=None,
                               help="a YAML file of this job's settings, by flag name with underscores (the "
                                    "config.yaml a run writes re-runs it); flags given beside it win")
            add_arguments(p, CONFIGS[name], file_settings)
    return parser


def config_named_in(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def job_named_in(argv: list[str]) -> str | None:
    return next((a for a in argv if a in JOBS), None)


def close_progress_bars() -> None:
    """A job stopped mid-loop leaves its progress bar open, without its newline: the message must not be
    glued to it."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def os_error_message(e: OSError, config) -> str:
    where = f" ({e.filename})" if e.filename else ""
    resume = hasattr(config, "resume") and getattr(config, "output", None)
    if e.errno == errno.ENOSPC:
        return f"the disk is full{where}; free some space, then " + (
            "--resume: the run's last complete checkpoint is kept" if resume else "run it again")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {e.strerror}; choose a folder you can write to"
    return f"{e.strerror or e}{where}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    job_name = job_named_in(argv)
    config_file = config_named_in(argv) if job_name in CONFIGURABLE else None
    try:
        file_settings = read_config_file(config_file, job_name) if config_file else None
    except UserError as e:
        print(f"sparsebert {job_name}: error: {e}", file=sys.stderr)
        return 2
    args = build_parser(job_name, file_settings).parse_args(argv)
    from . import models
    from .output_folders import release_output_locks

    models.trust_pickle = args.trust_pickle
    config = None
    try:
        config = from_namespace(CONFIGS[args.job], args)
        from .jobs import job_module

        job_module(args.job).run(config)
    except UserError as e:
        if args.debug:
            raise
        close_progress_bars()
        print(f"sparsebert {args.job}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as e:  # a full disk, a read-only or vanished folder: the system's word, the file, what to do
        if args.debug:
            raise
        close_progress_bars()
        print(f"sparsebert {args.job}: error: {os_error_message(e, config)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_progress_bars()
        again = (f"; `sparsebert {args.job} --resume --output {config.output}` goes on from its last checkpoint"
                 if hasattr(config, "resume") and getattr(config, "output", None) else "")
        print(f"sparsebert {args.job}: interrupted{again}", file=sys.stderr)
        return 130
    finally:
        release_output_locks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
