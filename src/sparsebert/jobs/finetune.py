"""sparsebert finetune: ordinary fine-tuning on the task's labels. This is how teachers are made."""

from __future__ import annotations

import time

from tqdm import tqdm

from .. import checkpoint, distributed
from ..config import FinetuneConfig
from ..data import batches_from, collate, load_train_dev, model_inputs, task_of, to_device
from ..evaluation import evaluate
from ..modelcard import write_model_card
from ..models import check_model_positions, load_model, save_model
from ..runio import JsonlLog, resumed_config, start_run, write_json
from ..training import (TrainState, backward_and_step, check_training_state, checkpoint_due, eval_interval,
                        optimisation, set_seed, task_loss, total_steps)


def run(config: FinetuneConfig) -> dict:
    config = resumed_config(config)
    task = task_of(config)
    config = config.replace(epochs=config.epochs_for(task))  # config.yaml records the number the run used
    set_seed(config.seed)  # before the new task head is drawn: imported libraries leave torch's seed random
    model, tokenizer, model_path = load_model(config.model, task, new_head=True)
    check_model_positions(config, model.config, model_path)
    train, dev = load_train_dev(config, task, tokenizer)
    processes, device = distributed.start(config.device, config.precision)
    out = start_run(config, {"model_path": model_path}, processes.main)
    if processes.main:
        checkpoint.check_free_space(out, model, config.keep_checkpoints if config.save_every else 0)

    model.to(device).train()
    steps = total_steps(config, len(train))
    eval_every = eval_interval(config, len(train))
    optimizer, scheduler, scaler = optimisation(model.named_parameters(), config, steps)

    state = TrainState()
    resumed = config.resume and checkpoint.load_latest(out, model=model, optimizer=optimizer, scheduler=scheduler)
    if resumed:
        state.load_state_dict(resumed)
    log = JsonlLog(out / "log.jsonl", resume_step=state.step if resumed else None, enabled=processes.main)

    started = time.time() - state.seconds
    bar = tqdm(total=steps, initial=state.step, desc=f"finetune {task.name}", unit="step", disable=not processes.main)
    for epoch, indices in batches_from(len(train), config.batch_size, config.seed, state.step):
        if state.step == steps:
            break
        tick = time.perf_counter()
        local, share = processes.share(indices)
        batch = to_device(collate(train, local), device)
        with distributed.autocast(device, config.precision):
            loss = task_loss(task, model(**model_inputs(batch)).logits.float(), batch["labels"])
        check_training_state(loss, state.step, out)
        backward_and_step(loss * share, optimizer=optimizer, scheduler=scheduler, scaler=scaler, processes=processes,
                          averaged=model.parameters(), clipped=model.parameters())
        state.step_seconds += time.perf_counter() - tick
        state.step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        log.write(step=state.step, epoch=epoch, loss=loss.item(), lr=scheduler.get_last_lr()[0])
        if processes.main and (state.step % eval_every == 0 or state.step == steps):
            state.record_evaluation(evaluate(model, task, dev, config.eval_batch_size), task.main_metric)
            log.write(step=state.step, eval=state.metrics)
            bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in state.metrics.items()))
        if processes.main and checkpoint_due(config, state.step, steps):
            state.seconds = time.time() - started
            checkpoint.save(out, state.step, model=model, optimizer=optimizer, scheduler=scheduler,
                            trainer=state.state_dict(), keep=config.keep_checkpoints)
    bar.close()
    if not processes.main:
        distributed.finish(processes)
        return {}
    state.seconds = time.time() - started
    save_model(model, tokenizer, out, task)
    result = {**state.metrics, **state.results(steps)}
    write_json(out / "metrics.json", result)
    write_model_card(out, summary=f"{task.name}, fine-tuned from `{model_path}` by sparsebert.",
                     made_by=f"sparsebert finetune --config {out / 'config.yaml'} --output NEW-FOLDER",
                     metrics=state.metrics)
    log.close()
    distributed.finish(processes)
    return result
