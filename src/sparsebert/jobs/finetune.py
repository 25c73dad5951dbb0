"""sparsebert finetune: ordinary fine-tuning on the task's labels. This is how teachers are made."""

from __future__ import annotations

import copy
import time

import torch
from tqdm import tqdm

from .. import checkpoint, distributed
from ..data import batches_from, collate
from ..evaluation import evaluate
from ..models import load_model, save_model
from ..runio import JsonlLog, write_json
from ..tasks import get_task
from ..training import make_optimizer, set_seed, warmup_then
from . import common


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="pre-trained encoder folder or hub id (default: embedded MiniLM)")
    common.add_training_args(p, epochs=3, lr=5e-5, schedule="linear")


def run(args) -> dict:
    args = common.resumed_args(args)
    common.check_training_args(args)
    task = get_task(args.task)
    set_seed(args.seed)  # before the new task head is drawn: imported libraries leave torch's seed random
    model, tokenizer, model_path = load_model(args.model, task, new_head=True)
    common.check_seq_length(args, model.config, model_path)
    train, dev = common.load_train_dev(args, tokenizer)
    processes, device = distributed.start(args.device)
    out = common.start_run(args, {"job": "finetune", **vars(args), "model_path": model_path}, processes.main)
    if processes.main:
        checkpoint.check_free_space(out, model, args.keep_checkpoints if args.save_every else 0)

    model.to(device).train()
    steps = common.total_steps(args, len(train))
    eval_every = common.eval_interval(args, len(train))
    optimizer = make_optimizer(model.named_parameters(), args.learning_rate, args.weight_decay, args.head_learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")  # fp16 gradients underflow
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(args.lr_schedule, steps, int(args.warmup * steps)))

    step, best, best_state, best_step, metrics, seconds, step_seconds = 0, None, None, 0, None, 0.0, 0.0
    resumed = checkpoint.load_latest(out, model=model, optimizer=optimizer, scheduler=scheduler) if args.resume else None
    if resumed:
        trainer, best_state = resumed
        step, best, best_step, metrics, seconds, step_seconds = (
            trainer[k] for k in ("step", "best", "best_step", "metrics", "seconds", "step_seconds"))
    log = JsonlLog(out / "log.jsonl", resume_step=step if resumed else None, enabled=processes.main)

    started = time.time() - seconds
    bar = tqdm(total=steps, initial=step, desc=f"finetune {task.name}", unit="step", disable=not processes.main)
    for epoch, indices in batches_from(len(train), args.batch_size, args.seed, step):
        if step == steps:
            break
        tick = time.perf_counter()
        local, share = processes.share(indices)
        batch = common.to_device(collate(train, local), device)
        with distributed.autocast(device, args.precision):
            loss = common.task_loss(task, model(**common.model_inputs(batch)).logits.float(), batch["labels"])
        common.check_training_state(loss, step, out)
        scaler.scale(loss * share).backward()
        distributed.average_gradients(model.parameters(), processes)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds += time.perf_counter() - tick
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        log.write(step=step, epoch=epoch, loss=loss.item(), lr=scheduler.get_last_lr()[0])
        if processes.main and (step % eval_every == 0 or step == steps):
            metrics = evaluate(model, task, dev, args.eval_batch_size)
            log.write(step=step, eval=metrics)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if common.is_better(task, metrics, best):
                best, best_step = metrics, step
                best_state = copy.deepcopy(model.state_dict())
        if processes.main and args.save_every and step % args.save_every == 0 and step < steps:
            trainer = {"step": step, "best": best, "best_step": best_step, "metrics": metrics,
                       "seconds": time.time() - started, "step_seconds": step_seconds}
            checkpoint.save(out, step, model=model, optimizer=optimizer, scheduler=scheduler, trainer=trainer,
                            best_state=best_state, keep=args.keep_checkpoints)
    bar.close()
    if not processes.main:
        distributed.finish(processes)
        return {}
    seconds = time.time() - started
    final = metrics
    model.load_state_dict(best_state)
    save_model(model, tokenizer, out)
    result = {**best, "step": best_step, "final": final, "train_seconds": round(seconds, 1),
              "steps": steps, "seconds_per_step": round(step_seconds / steps, 3)}
    write_json(out / "metrics.json", result)
    log.close()
    distributed.finish(processes)
    return result
