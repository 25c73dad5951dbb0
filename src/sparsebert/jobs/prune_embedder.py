"""sparsebert prune-embedder: a sentence embedder pruned while it distils from its dense self.

The paper's method without a task: the teacher is the sentence-embedding model as it is (dense, frozen), the
student a copy of it whose encoder linear weights are pruned gradually to the target sparsity while it learns,
on unlabelled sentences, the teacher's pooled sentence embedding (mean over real tokens), its hidden states and
its attention (the hidden and attention terms of docs/METHOD.md, the embedding term in place of the prediction
term). The result is a sentence-transformers folder: `sparsebert export` makes the sparse engine's form, which
`load_sparse(...).encode(...)` and `sparsebert embed` run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from .. import checkpoint, distributed
from ..config import EmbedderConfig
from ..data import collate, model_inputs, to_device
from ..distill import DistillationLoss, forward_with_internals, set_scores_attention, teacher_hidden_variance
from ..embedding import (check_sentence_model, embed, encode_sentences, glue_sentences, mean_pool,
                         sentence_length, sts_b_spearman)
from ..errors import UserError
from ..loading import load_encoder
from ..models import check_model_positions, load_tokenizer, resolve_model_path
from ..pruning import build_pruner, find_targets
from ..pruning.pattern import PATTERNS
from ..runio import resumed_config, start_run
from ..sparse.engine import position_count
from ..training import TrainingRun, eval_interval, optimizer_and_schedule, set_seed, total_steps
from .embed import read_sentences
from .prune import save_pruned
from .export import copy_sentence_transformers_files


def embedding_term(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """The pooled sentence embeddings (B, H) of student and teacher: 1 - cosine similarity, or MSE."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher.float(), dim=-1)).mean()
    return F.mse_loss(student, teacher.float())


def run(config: EmbedderConfig) -> dict:
    config = resumed_config(config)
    set_seed(config.seed)
    path = resolve_model_path(config.model)
    tokenizer = load_tokenizer(path)
    teacher, student = load_encoder(path), load_encoder(path)
    check_sentence_model(Path(path))
    check_model_positions(config, student.config, path)
    try:
        for linear in find_targets(student).values():
            PATTERNS[config.pattern].group(linear.weight)
    except ValueError as e:
        raise UserError(f"--pattern {config.pattern}: {e}; use --pattern unstructured") from None
    sentences = ([text for _, text in read_sentences(Path(config.sentences), config.text_column)]
                 if config.sentences else glue_sentences())
    train = encode_sentences(sentences, tokenizer, config.max_seq_length)
    eval_length = sentence_length(Path(path), position_count(student.config))
    processes, device = distributed.start(config.device, config.precision)
    out = start_run(config, {"model_path": path}, processes.main)
    if processes.main:
        checkpoint.check_free_space(out, student, config.keep_checkpoints if config.save_every else 0)

    layers = list(range(student.config.num_hidden_layers + 1))  # the same model: layer m learns from layer m
    student.to(device).train()
    teacher.to(device).eval()
    set_scores_attention(student)
    set_scores_attention(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    layer_loss = DistillationLoss(student.config.hidden_size, teacher.config.hidden_size, attention=config.attention_loss,
                                  hidden_norm=config.hidden_norm,
                                  hidden_variance=teacher_hidden_variance(teacher, train, layers)
                                  if config.hidden_norm == "teacher-var" else None)
    weights = dict(zip(("attention", "hidden", "embedding"), config.distillation_weights()))

    def quality(model) -> dict:
        model.set_attn_implementation("sdpa")
        score = sts_b_spearman(lambda texts: embed(model, tokenizer, texts, eval_length, config.eval_batch_size))
        set_scores_attention(model)
        return {"sts_b_spearman": score}

    teacher_metrics = quality(teacher)
    steps = total_steps(config, len(train))
    eval_every = eval_interval(config, len(train))
    pruner = build_pruner(find_targets(student), config.sparsity, round(config.prune_start * steps),
                          round(config.prune_end * steps), config.prune_events, config.criterion, config.allocation,
                          config.pattern, {"decay": config.taylor_decay} if config.criterion == "taylor" else None)
    params = list(student.named_parameters())
    optimizer, scheduler, scaler = optimizer_and_schedule(params, config, steps, rewind_at=round(config.prune_end * steps))

    set_seed(config.seed)  # the training draws (dropout) start from the seed, whatever loading drew
    training = TrainingRun(config, out, processes, steps, eval_every,
                           dict(model=student, optimizer=optimizer, scheduler=scheduler, pruner=pruner))
    if not training.resumed:
        pruner.step(0)
        training.log.write(step=0, teacher_eval=teacher_metrics, sentences=len(train))

    for epoch, indices in training.batches(len(train), f"prune embedder to {config.sparsity:.0%}", train.lengths()):
        local, share = processes.share(indices)
        batch = to_device(collate(train, local), device)
        inputs, mask = model_inputs(batch), batch["attention_mask"]
        with distributed.autocast(device, config.precision):
            s_out = forward_with_internals(student, inputs)
            with torch.no_grad():
                t_out = forward_with_internals(teacher, inputs)
            terms = {"attention": layer_loss.attention_term(s_out, t_out, mask),
                     "hidden": layer_loss.hidden(s_out, t_out, mask),
                     "embedding": embedding_term(mean_pool(s_out.hidden[-1].float(), mask),
                                                 mean_pool(t_out.hidden[-1].float(), mask), config.embedding_loss)}
            loss = sum(weights[name] * term for name, term in terms.items())
        if training.optimise(loss, epoch, share=share, scaler=scaler, averaged=[p for _, p in params],
                             clipped=student.parameters(), pruner=pruner,
                             **{name: term.item() for name, term in terms.items()}):
            training.evaluated(quality(student), "sts_b_spearman", pruner,
                               said=f" (teacher {teacher_metrics['sts_b_spearman']:.4f})")
        training.checkpoint_if_due()
    report = training.finish()
    if report is None:
        distributed.finish(processes)
        return {}
    result = save_pruned(student, tokenizer, out, pruner, None, report, teacher_metrics, "sts_b_spearman",
                         "prune-embedder", f"Sentence embeddings: `{path}` pruned to {config.sparsity:.0%} sparsity "
                         f"while distilling from its dense self on {len(train)} unlabelled sentences",
                         training.state.metrics, sentences=len(train))
    copy_sentence_transformers_files(Path(path), out)  # SentenceTransformer(out) pools as the model did
    distributed.finish(processes)
    return result
