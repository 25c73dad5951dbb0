"""sparsebert augment: the training rows plus N word-replacement variants of each, in the task's format."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tqdm import tqdm

from ..augmentation import Augmenter, EmbeddingNeighbours, MaskedLMCandidates
from ..errors import UserError
from ..loading import load_word_sources
from ..models import load_tokenizer, resolve_model_path
from ..tasks import get_task, read_glue_examples, read_tsv_rows, split_header, task_file


def run(config) -> None:
    task = get_task(config.task)
    out = Path(config.output)
    if out.exists() and not config.overwrite:
        raise UserError(f"{out}: exists; choose another file or pass --overwrite")
    source = task_file(config.data_dir, task, "train.tsv")
    read_glue_examples(task, source)  # every row's width and label checked (FILE:LINE), before anything is written
    header, rows, col, _ = split_header(task, source, read_tsv_rows(source))
    path = resolve_model_path(config.model)
    tokenizer = load_tokenizer(path)
    started = time.time()
    mlm, embeddings = load_word_sources(path)
    if mlm is not None:
        print("candidates: masked-LM top-k for one-piece words, embedding neighbours for the rest")
    else:
        print("candidates: nearest neighbours in the model's input embeddings for every word "
              "(the model has no masked-LM head)")
    text_columns = [col[c] for c in (task.text_a, task.text_b) if c is not None]
    augmenter = Augmenter(tokenizer, EmbeddingNeighbours(tokenizer, embeddings, config.top_k),
                          MaskedLMCandidates(tokenizer, mlm, config.top_k) if mlm is not None else None,
                          config.prob, config.seed)
    augmenter.prepare([fields[c] for _, fields in rows for c in text_columns])
    tmp = Path(f"{out}.tmp")
    try:
        write_augmented(tmp, header, rows, text_columns, augmenter, config.n_aug, task.name)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted run leaves no partial file
    print(f"wrote {len(rows) * (1 + config.n_aug)} rows ({len(rows)} originals + {len(rows) * config.n_aug} variants) "
          f"to {out} in {time.time() - started:.0f} s")


def write_augmented(path: Path, header, rows, text_columns, augmenter, n_aug: int, name: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        if header is not None:
            f.write("\t".join(header) + "\n")
        variants = []
        for _, fields in tqdm(rows, desc=f"augment {name} x{n_aug}", unit="row"):
            f.write("\t".join(fields) + "\n")
            texts = {c: augmenter.variants(fields[c], n_aug) for c in text_columns}
            for k in range(n_aug):
                new = list(fields)
                for c in text_columns:
                    new[c] = texts[c][k]
                variants.append("\t".join(new) + "\n")
        f.writelines(variants)  # originals first, then the variants, as `prune --train-file` reads them
