"""sparsebert finetune: ordinary fine-tuning on the task's labels. This is how teachers are made."""

from __future__ import annotations

import copy
import time

import torch
from tqdm import tqdm

from ..data import collate, epoch_batches
from ..evaluation import evaluate
from ..models import load_model, save_model
from ..runio import JsonlLog, prepare_output_dir, write_config, write_json
from ..tasks import get_task
from ..training import make_optimizer, pick_device, set_seed, warmup_then
from . import common


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="pre-trained encoder folder or hub id (default: embedded MiniLM)")
    common.add_training_args(p, epochs=3, lr=5e-5, schedule="linear")


def run(args) -> dict:
    common.check_training_args(args)
    task = get_task(args.task)
    model, tokenizer, model_path = load_model(args.model, task, new_head=True)
    train, dev = common.load_train_dev(args, tokenizer)
    out = prepare_output_dir(args.output, args.overwrite)
    write_config(out, {"job": "finetune", **vars(args), "model_path": model_path})
    log = JsonlLog(out / "log.jsonl")

    set_seed(args.seed)
    device = pick_device(args.device)
    model.to(device).train()
    steps = common.total_steps(args, len(train))
    eval_every = common.eval_interval(args, len(train))
    optimizer = make_optimizer(model.named_parameters(), args.learning_rate, args.weight_decay, args.head_learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(args.lr_schedule, steps, int(args.warmup * steps)))

    best, best_state, best_step = None, None, 0
    step, epoch, started = 0, 0, time.time()
    bar = tqdm(total=steps, desc=f"finetune {task.name}", unit="step")
    while step < steps:
        for indices in epoch_batches(len(train), args.batch_size, args.seed, epoch):
            batch = common.to_device(collate(train, indices), device)
            loss = common.task_loss(task, model(**common.model_inputs(batch)).logits, batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.write(step=step, epoch=epoch, loss=loss.item(), lr=scheduler.get_last_lr()[0])
            if step % eval_every == 0 or step == steps:
                metrics = evaluate(model, task, dev, args.eval_batch_size)
                log.write(step=step, eval=metrics)
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                if common.is_better(task, metrics, best):
                    best, best_step = metrics, step
                    best_state = copy.deepcopy(model.state_dict())
            if step == steps:
                break
        epoch += 1
    bar.close()
    final = metrics
    model.load_state_dict(best_state)
    save_model(model, tokenizer, out)
    result = {**best, "step": best_step, "final": final, "train_seconds": round(time.time() - started, 1),
              "steps": steps, "seconds_per_step": round((time.time() - started) / steps, 3)}
    write_json(out / "metrics.json", result)
    log.close()
    return result
