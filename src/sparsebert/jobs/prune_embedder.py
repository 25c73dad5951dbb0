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
from .. import distributed
from ..config import EmbedderConfig
from ..data import collate, model_inputs, to_device
from ..distill import (DistillationLoss, forward_with_internals, frozen_teacher, set_scores_attention,
                       teacher_hidden_variance)
from ..embedding import (check_sentence_model, copy_sentence_transformers_files, embed, encode_sentences, glue_sentences, mean_pool,
                         sentence_length, sts_b_spearman)
from ..loading import load_encoder
from ..models import check_model_positions, load_tokenizer, resolve_model_path
from ..inference_files import read_sentences
from ..pruning import check_pattern, find_targets, pruner_for_run
from ..output_folders import resumed_config
from ..saving import save_pruned
from ..sparse.engine import position_count
from ..training import TrainingRun, eval_interval, optimizer_and_schedule, set_seed, start_training, total_steps


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
    check_pattern(find_targets(student), config.pattern)
    sentences = ([text for _, text in read_sentences(Path(config.sentences), config.text_column)]
                 if config.sentences else glue_sentences())
    train = encode_sentences(sentences, tokenizer, config.max_seq_length)
    eval_length = sentence_length(Path(path), position_count(student.config))
    processes, device, out = start_training(config, student, {"model_path": path})

    layers = list(range(student.config.num_hidden_layers + 1))  # the same model: layer m learns from layer m
    student.to(device).train()
    set_scores_attention(student)
    frozen_teacher(teacher, device)
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
    pruner = pruner_for_run(find_targets(student), config, steps)
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
    result = {}
    if report is not None:
        copy_sentence_transformers_files(Path(path), out)  # SentenceTransformer(out) pools as the model did
        result = save_pruned(student, tokenizer, out, pruner, None, report, teacher_metrics, "sts_b_spearman",
                             "prune-embedder", f"Sentence embeddings: `{path}` pruned to {config.sparsity:.0%} "
                             f"sparsity while distilling from its dense self on {len(train)} unlabelled sentences",
                             training.state.metrics, sentences=len(train))
    distributed.finish(processes)
    return result
