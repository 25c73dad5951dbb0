"""sparsebert prune: pruning at distilling (METHOD.md).

The pre-trained encoder (the student) learns from a fine-tuned teacher, with the distillation loss
at every layer, while its encoder linear weights are pruned gradually to the target sparsity.
Baselines: --init teacher prunes the fine-tuned model instead; --no-teacher prunes during ordinary
fine-tuning on the labels; --distill logits keeps only the prediction term.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm import tqdm

from .. import distributed
from ..config import PruneConfig
from ..data import collate, load_train_dev, model_data_settings, model_inputs, task_of, to_device
from ..distill import (DistillationLoss, Outputs, TeacherCache, forward_with_internals, frozen_teacher, layer_mapping,
                       set_scores_attention, teacher_hidden_variance)
from ..errors import UserError
from ..evaluation import evaluate
from ..loading import load_config, load_model
from ..models import check_model_positions, copy_task_head, resolve_model_path, shrink_model
from ..pruning import check_pattern, find_targets, pruner_for_run
from ..output_folders import resumed_config
from ..saving import save_pruned
from ..training import (TrainingRun, eval_interval, optimizer_and_schedule, set_seed, start_training, task_loss,
                        total_steps)


def check_pair(student, student_tok, teacher, teacher_tok, distill: str) -> list[int]:
    """Stops before training on a teacher the student cannot learn from; returns the layer mapping."""
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise UserError("the teacher's and the student's tokenizers differ; both must share one vocabulary")
    s_cfg, t_cfg = student.config, teacher.config
    mapping = layer_mapping(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
    if distill == "full" and s_cfg.num_attention_heads != t_cfg.num_attention_heads:
        raise UserError(f"attention distillation needs the same number of heads (student "
                        f"{s_cfg.num_attention_heads}, teacher {t_cfg.num_attention_heads}); use --distill logits")
    return mapping


def with_teachers_task(config: PruneConfig) -> PruneConfig:
    """Given no --task (nor files of your own), the GLUE task the teacher recorded it was fine-tuned on; a teacher
    that recorded none is refused rather than taken for MRPC's. Its config.yaml then says which."""
    if config.task or config.validation_file or not config.teacher or (config.no_teacher and config.init != "teacher"):
        return config
    recorded = model_data_settings(load_config(resolve_model_path(config.teacher)))
    if "text_columns" in recorded:  # your own files' task: task_head_settings says so
        return config
    if not recorded.get("task"):
        raise UserError(f"{config.teacher}: the teacher records no task it was fine-tuned on; give --task (or "
                        f"--train-file and --validation-file)")
    return dataclasses.replace(config, task=recorded["task"])


def run(config: PruneConfig) -> dict:
    config = with_teachers_task(resumed_config(config))
    task = task_of(config)
    set_seed(config.seed)  # before the new task head is drawn: imported libraries leave torch's seed random
    teacher = teacher_tok = None
    if not config.no_teacher:
        teacher, teacher_tok, _ = load_model(config.teacher, task, new_head=False)
    if config.init == "teacher":
        student, tokenizer, student_path = load_model(config.teacher, task, new_head=False)
    else:
        student, tokenizer, student_path = load_model(config.student, task, new_head=True)
    check_model_positions(config, student.config, student_path)
    if config.student_layers or config.student_hidden:
        student = shrink_model(student, config.student_layers or student.config.num_hidden_layers,
                               config.student_hidden or student.config.hidden_size)
    mapping = check_pair(student, tokenizer, teacher, teacher_tok, config.distill) if teacher is not None else None
    check_pattern(find_targets(student), config.pattern)
    if config.student_head == "teacher" and config.init == "pretrained":
        copy_task_head(teacher, student)
    train, dev = load_train_dev(config, task, tokenizer)
    processes, device, out = start_training(config, student, {"student_path": student_path})

    full = teacher is not None and config.distill == "full"
    student.to(device).train()
    set_scores_attention(student)
    loss_fn = teacher_metrics = None
    if teacher is not None:
        frozen_teacher(teacher, device)
        loss_fn = DistillationLoss(student.config.hidden_size, teacher.config.hidden_size, mode=config.distill,
                                   temperature=config.temperature, regression=task.is_regression,
                                   weights=config.distillation_weights(), attention=config.attention_loss,
                                   hidden_norm=config.hidden_norm, gold_weight=config.gold_weight,
                                   hidden_variance=teacher_hidden_variance(teacher, train, mapping)
                                   if config.hidden_norm == "teacher-var" else None).to(device)
        teacher_metrics = evaluate(teacher, task, dev, config.eval_batch_size)

    steps = total_steps(config, len(train))
    eval_every = eval_interval(config, len(train))
    pruner = pruner_for_run(find_targets(student), config, steps)
    params = list(student.named_parameters()) + ([] if loss_fn is None else list(loss_fn.named_parameters()))
    optimizer, scheduler, scaler = optimizer_and_schedule(params, config, steps, rewind_at=round(config.prune_end * steps))
    extra_modules = {"distillation": loss_fn} if loss_fn is not None else {}

    # The training draws (dropout) start from the seed here, whatever was drawn above: the two arms of a paired
    # comparison load different things (kap draws a fresh head, prune-teacher none) and must still see the same
    # dropout masks, step for step. A resumed run restores the draws its checkpoint saved.
    set_seed(config.seed)
    training = TrainingRun(config, out, processes, steps, eval_every,
                           dict(model=student, optimizer=optimizer, scheduler=scheduler, pruner=pruner,
                                extra_modules=extra_modules))
    if not training.resumed:
        pruner.step(0)  # a schedule that starts and ends at 0 prunes once, before training
        if teacher_metrics is not None:
            training.log.write(step=0, teacher_eval=teacher_metrics)

    cache = None
    if teacher is not None and config.cache_teacher:
        need = TeacherCache.estimate_bytes(train, mapping, teacher.config.num_attention_heads,
                                           teacher.config.hidden_size) if full else 0
        if need <= config.cache_limit_gb * 2**30:
            cache = TeacherCache(teacher, train, mapping, keep_internals=full, batch_size=config.eval_batch_size)
        else:
            tqdm.write(f"teacher cache would take {need / 2**30:.1f} GiB > --cache-limit-gb; computing it live")

    for epoch, indices in training.batches(len(train), f"prune {task.name} to {config.sparsity:.0%}"):
        local, share = processes.share(indices)
        batch = to_device(collate(train, local), device)
        inputs = model_inputs(batch)
        with distributed.autocast(device, config.precision):
            if teacher is None:
                logits = student(**inputs).logits.float()
                terms = {"task": task_loss(task, logits, batch["labels"])}
                loss = terms["task"]
            else:
                s_out = forward_with_internals(student, inputs) if full else Outputs(student(**inputs).logits)
                if cache is not None:
                    t_out = cache.batch(local, inputs["input_ids"].size(1), device)
                else:
                    with torch.no_grad():
                        t_out = (forward_with_internals(teacher, inputs, mapping) if full
                                 else Outputs(teacher(**inputs).logits))
                terms = loss_fn.terms(s_out, t_out, batch["labels"], batch["attention_mask"])
                loss = loss_fn.combine(terms)
        if training.optimise(loss, epoch, share=share, scaler=scaler, averaged=[p for _, p in params],
                             clipped=student.parameters(), pruner=pruner,
                             **{name: term.item() for name, term in terms.items()}):
            training.evaluated(evaluate(student, task, dev, config.eval_batch_size), task.main_metric, pruner)
        training.checkpoint_if_due()
    report = training.finish()
    how = "without a teacher" if teacher is None else f"distilling from `{config.teacher}`"
    result = {} if report is None else save_pruned(
        student, tokenizer, out, pruner, task, report, teacher_metrics, task.main_metric, "prune",
        f"{task.name}: `{student_path}` pruned to {config.sparsity:.0%} sparsity {how}", training.state.metrics,
        max_seq_length=config.max_seq_length)
    distributed.finish(processes)
    return result
