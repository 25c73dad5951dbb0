"""sparsebert tasks: the GLUE tasks this tool knows."""

from __future__ import annotations

from ..tasks import TASKS, bundled_data_dir


def run(config) -> None:
    for task in TASKS.values():
        bundled = bundled_data_dir(task)
        files = ["train.tsv", *task.dev_files]
        have = [f for f in files if (bundled / f).is_file()]
        kind = "regression" if task.is_regression else "labels " + "/".join(task.labels)
        print(f"{task.name:6} {kind:45} metrics {', '.join(task.metrics):20} files {', '.join(files)}"
              f"  (bundled: {', '.join(have) or 'none'})")
