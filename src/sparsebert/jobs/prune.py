"""sparsebert prune: pruning at distilling (METHOD.md).

The pre-trained encoder (the student) learns from a fine-tuned teacher, with the distillation loss
at every layer, while its encoder linear weights are pruned gradually to the target sparsity.
Baselines: --init teacher prunes the fine-tuned model instead; --no-teacher prunes during ordinary
fine-tuning on the labels; --distill logits keeps only the prediction term.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from tqdm import tqdm

from .. import checkpoint, distributed
from ..data import batches_from, collate
from ..distill import (DistillationLoss, Outputs, TeacherCache, forward_with_internals, layer_mapping,
                       set_scores_attention, teacher_hidden_variance)
from ..errors import UserError
from ..evaluation import evaluate
from ..models import copy_task_head, load_model, save_model, shrink_model
from ..pruning import build_pruner, find_targets, sparsity_report
from ..pruning.allocation import ALLOCATIONS
from ..pruning.criterion import CRITERIA
from ..pruning.pattern import PATTERNS
from ..runio import JsonlLog, write_json
from ..tasks import get_task
from ..training import make_optimizer, set_seed, warmup_then
from . import common


def add_arguments(p) -> None:
    p.add_argument("--teacher", default=None, help="model fine-tuned on the task (sparsebert finetune)")
    p.add_argument("--student", default=None, help="pre-trained encoder to prune (default: embedded MiniLM)")
    # Defaults: the recipe measured in results/recipe (README, "Results"); `--preset paper` of `sparsebert run`
    # and the values named "paper" below give METHOD.md's exact recipe.
    common.add_training_args(p, epochs=8, lr=2e-4, schedule="linear")
    p.set_defaults(warmup=0.05, head_learning_rate=2e-3)
    p.add_argument("--sparsity", type=float, default=0.95, help="fraction of target weights removed at the end")
    p.add_argument("--prune-events", type=int, default=100, help="how many times the masks are recomputed")
    p.add_argument("--prune-start", type=float, default=0.0, help="fraction of the run before pruning starts")
    p.add_argument("--prune-end", type=float, default=0.6,
                   help="fraction of the run where the target is reached; the rest recovers at it (paper: 1.0)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default="taylor",
                   help="taylor: w²·E[g²] of the distillation loss; magnitude: |w| (paper)")
    p.add_argument("--allocation", choices=sorted(ALLOCATIONS), default="uniform",
                   help="uniform: the same sparsity in every matrix (paper); global: one threshold over all")
    p.add_argument("--pattern", choices=list(PATTERNS), default="unstructured",
                   help="unstructured: single weights (paper); 1x4: blocks of 4 inputs, which the sparse engine "
                        "runs in int8 (faster)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--distill", choices=["full", "logits"], default="full",
                   help="full: attention + hidden + prediction (paper); logits: prediction only")
    p.add_argument("--attention-loss", choices=["scores", "probs", "kl"], default="kl",
                   help="scores: MSE before the softmax (paper); probs: MSE after it; kl: KL of the distributions")
    p.add_argument("--hidden-norm", choices=["none", "teacher-var"], default="teacher-var",
                   help="teacher-var: each layer's MSE over the teacher's variance there; none (paper)")
    p.add_argument("--loss-weights", default="1,1,4",
                   help="weights of the attention, hidden, prediction terms (paper: 1,1,1)")
    p.add_argument("--train-file", default=None, help="training TSV of the task's format (e.g. augmented)")
    p.add_argument("--init", choices=["pretrained", "teacher"], default="pretrained",
                   help="pretrained: prune the pre-trained encoder (paper); teacher: prune the fine-tuned model")
    p.add_argument("--student-head", choices=["new", "teacher"], default="new",
                   help="new: a freshly initialised classifier (paper); teacher: start the student's pooler and "
                        "classifier from the teacher's, which read the hidden states the student is taught")
    p.add_argument("--student-layers", type=int, default=None,
                   help="train a smaller dense student cut from --student: this many layers (small-dense baseline)")
    p.add_argument("--student-hidden", type=int, default=None,
                   help="... and this hidden size (a multiple of the number of heads)")
    p.add_argument("--no-teacher", action="store_true", help="baseline: pruning during ordinary fine-tuning on the labels, no teacher (the paper's: "
                        "with --criterion magnitude)")
    p.add_argument("--cache-teacher", action=argparse.BooleanOptionalAction, default=True,
                   help="compute the teacher's outputs once and reuse them (default: on, where it fits)")
    p.add_argument("--cache-limit-gb", type=float, default=8.0, help="largest teacher cache kept in memory")


def parse_weights(text: str) -> tuple[float, float, float]:
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or min(weights) < 0:
        raise UserError(f"--loss-weights '{text}': give three non-negative numbers: attention,hidden,prediction")
    return weights


def check_args(args) -> None:
    common.check_training_args(args)
    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity}: give a fraction in [0, 1), e.g. 0.95 for 95% removed")
    if not 0 <= args.prune_start <= args.prune_end <= 1:
        raise UserError("--prune-start and --prune-end are fractions of the run with start <= end")
    if args.prune_events < 1:
        raise UserError("--prune-events must be at least 1")
    if args.temperature <= 0:
        raise UserError("--temperature must be positive")
    if args.no_teacher == (args.teacher is not None):
        raise UserError("give --teacher MODEL (a model fine-tuned on the task) or --no-teacher, not both or neither")
    if args.no_teacher and args.init == "teacher":
        raise UserError("--init teacher needs --teacher")
    if args.student_head == "teacher" and args.no_teacher:
        raise UserError("--student-head teacher needs --teacher")
    parse_weights(args.loss_weights)


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


def run(args) -> dict:
    args = common.resumed_args(args)
    check_args(args)
    task = get_task(args.task)
    set_seed(args.seed)  # before the new task head is drawn: imported libraries leave torch's seed random
    teacher = teacher_tok = None
    if not args.no_teacher:
        teacher, teacher_tok, _ = load_model(args.teacher, task, new_head=False)
    if args.init == "teacher":
        student, tokenizer, student_path = load_model(args.teacher, task, new_head=False)
    else:
        student, tokenizer, student_path = load_model(args.student, task, new_head=True)
    common.check_seq_length(args, student.config, student_path)
    if args.student_layers or args.student_hidden:
        student = shrink_model(student, args.student_layers or student.config.num_hidden_layers,
                               args.student_hidden or student.config.hidden_size)
    mapping = check_pair(student, tokenizer, teacher, teacher_tok, args.distill) if teacher is not None else None
    try:
        for linear in find_targets(student).values():
            PATTERNS[args.pattern].group(linear.weight)
    except ValueError as e:
        raise UserError(f"--pattern {args.pattern}: {e}; use --pattern unstructured") from None
    if args.student_head == "teacher" and args.init == "pretrained":
        copy_task_head(teacher, student)
    train, dev = common.load_train_dev(args, tokenizer, args.train_file)
    processes, device = distributed.start(args.device)
    out = common.start_run(args, {"job": "prune", **vars(args), "student_path": student_path}, processes.main)
    if processes.main:
        checkpoint.check_free_space(out, student, args.keep_checkpoints if args.save_every else 0)

    full = teacher is not None and args.distill == "full"
    student.to(device).train()
    set_scores_attention(student)
    loss_fn = teacher_metrics = None
    if teacher is not None:
        teacher.to(device).eval()
        set_scores_attention(teacher)
        for p in teacher.parameters():
            p.requires_grad_(False)
        loss_fn = DistillationLoss(student.config.hidden_size, teacher.config.hidden_size, mode=args.distill,
                                   temperature=args.temperature, regression=task.is_regression,
                                   weights=parse_weights(args.loss_weights), attention=args.attention_loss,
                                   hidden_norm=args.hidden_norm,
                                   hidden_variance=teacher_hidden_variance(teacher, train, mapping)
                                   if args.hidden_norm == "teacher-var" else None).to(device)
        teacher_metrics = evaluate(teacher, task, dev, args.eval_batch_size)

    steps = common.total_steps(args, len(train))
    eval_every = common.eval_interval(args, len(train))
    pruner = build_pruner(find_targets(student), args.sparsity, round(args.prune_start * steps),
                          round(args.prune_end * steps), args.prune_events, args.criterion, args.allocation,
                          args.pattern)
    params = list(student.named_parameters()) + ([] if loss_fn is None else list(loss_fn.named_parameters()))
    optimizer = make_optimizer(params, args.learning_rate, args.weight_decay, args.head_learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")  # fp16 gradients underflow
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(args.lr_schedule, steps, int(args.warmup * steps)))
    extra_modules = {"distillation": loss_fn} if loss_fn is not None else {}

    step, best, best_state, best_step, metrics, seconds, step_seconds = 0, None, None, 0, None, 0.0, 0.0
    resumed = checkpoint.load_latest(out, model=student, optimizer=optimizer, scheduler=scheduler, pruner=pruner,
                                     extra_modules=extra_modules) if args.resume else None
    if resumed:
        trainer, best_state = resumed
        step, best, best_step, metrics, seconds, step_seconds = (
            trainer[k] for k in ("step", "best", "best_step", "metrics", "seconds", "step_seconds"))
    else:
        pruner.step(0)  # a schedule that starts and ends at 0 prunes once, before training
    log = JsonlLog(out / "log.jsonl", resume_step=step if resumed else None, enabled=processes.main)
    if teacher_metrics is not None and not resumed:
        log.write(step=0, teacher_eval=teacher_metrics)

    cache = None
    if teacher is not None and args.cache_teacher:
        need = TeacherCache.estimate_bytes(train, mapping, teacher.config.num_attention_heads,
                                           teacher.config.hidden_size) if full else 0
        if need <= args.cache_limit_gb * 2**30:
            cache = TeacherCache(teacher, train, mapping, keep_internals=full, batch_size=args.eval_batch_size)
        else:
            tqdm.write(f"teacher cache would take {need / 2**30:.1f} GiB > --cache-limit-gb; computing it live")

    started = time.time() - seconds
    bar = tqdm(total=steps, initial=step, desc=f"prune {task.name} to {args.sparsity:.0%}", unit="step", disable=not processes.main)
    for epoch, indices in batches_from(len(train), args.batch_size, args.seed, step):
        if step == steps:
            break
        tick = time.perf_counter()
        local, share = processes.share(indices)
        batch = common.to_device(collate(train, local), device)
        inputs = common.model_inputs(batch)
        with distributed.autocast(device, args.precision):
            if teacher is None:
                logits = student(**inputs).logits.float()
                terms = {"task": common.task_loss(task, logits, batch["labels"])}
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
        common.check_training_state(loss, step, out)
        scaler.scale(loss * share).backward()
        distributed.average_gradients([p for _, p in params], processes)
        scaler.unscale_(optimizer)
        pruner.observe()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        pruner.apply()  # the optimiser (momentum, weight decay) must not revive removed weights
        if pruner.step(step):
            distributed.broadcast_masks(pruner, processes)
        step_seconds += time.perf_counter() - tick
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", sparsity=f"{pruner.level:.3f}")
        log.write(step=step, epoch=epoch, loss=loss.item(), **{k: v.item() for k, v in terms.items()},
                  lr=scheduler.get_last_lr()[0], sparsity=pruner.level)
        if processes.main and (step % eval_every == 0 or step == steps):
            metrics = evaluate(student, task, dev, args.eval_batch_size)
            log.write(step=step, eval=metrics, sparsity=pruner.level)
            bar.write(f"step {step} sparsity {pruner.level:.3f}: " +
                      ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            at_target = pruner.level >= args.sparsity
            if at_target and common.is_better(task, metrics, best):
                best, best_step = metrics, step
                best_state = copy.deepcopy(student.state_dict())
        if processes.main and args.save_every and step % args.save_every == 0 and step < steps:
            trainer = {"step": step, "best": best, "best_step": best_step, "metrics": metrics,
                       "seconds": time.time() - started, "step_seconds": step_seconds}
            checkpoint.save(out, step, model=student, optimizer=optimizer, scheduler=scheduler, trainer=trainer,
                            best_state=best_state, pruner=pruner, extra_modules=extra_modules,
                            keep=args.keep_checkpoints)
    bar.close()
    if not processes.main:
        distributed.finish(processes)
        return {}
    seconds = time.time() - started
    final = metrics
    if best_state is not None:
        student.load_state_dict(best_state)
    student.set_attn_implementation("sdpa")
    save_model(student, tokenizer, out)
    pruner.save_masks(out / "masks.safetensors")
    report = sparsity_report(student)
    write_json(out / "sparsity.json", report)
    result = {"final": final, "best": best, "best_step": best_step, "teacher": teacher_metrics,
              "main_metric": task.main_metric, "steps": steps, "train_seconds": round(seconds, 1),
              "seconds_per_step": round(step_seconds / steps, 3), "sparsity": report["targets"]["sparsity"],
              "encoder_nonzero": report["encoder"]["nonzero"]}
    write_json(out / "metrics.json", result)
    log.close()
    distributed.finish(processes)
    return result
