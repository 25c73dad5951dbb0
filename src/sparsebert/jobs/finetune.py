"""sparsebert finetune: ordinary fine-tuning on the task's labels. This is how teachers are made."""

from __future__ import annotations

from .. import distributed
from ..config import FinetuneConfig
from ..data import collate, load_train_dev, model_inputs, task_of, to_device
from ..evaluation import evaluate
from ..loading import load_model
from ..models import check_model_positions
from ..output_folders import resumed_config
from ..saving import save_trained
from ..training import (TrainingRun, eval_interval, optimizer_and_schedule, set_seed, start_training, task_loss,
                        total_steps)


def run(config: FinetuneConfig) -> dict:
    config = resumed_config(config)
    task = task_of(config)
    config = config.replace(epochs=config.epochs_for(task))  # config.yaml records the number the run used
    set_seed(config.seed)  # before the new task head is drawn: imported libraries leave torch's seed random
    model, tokenizer, model_path = load_model(config.model, task, new_head=True)
    check_model_positions(config, model.config, model_path)
    train, dev = load_train_dev(config, task, tokenizer)
    processes, device, out = start_training(config, model, {"model_path": model_path})

    model.to(device).train()
    steps = total_steps(config, len(train))
    eval_every = eval_interval(config, len(train))
    optimizer, scheduler, scaler = optimizer_and_schedule(model.named_parameters(), config, steps)

    training = TrainingRun(config, out, processes, steps, eval_every,
                           dict(model=model, optimizer=optimizer, scheduler=scheduler))
    for epoch, indices in training.batches(len(train), f"finetune {task.name}"):
        local, share = processes.share(indices)
        batch = to_device(collate(train, local), device)
        with distributed.autocast(device, config.precision):
            loss = task_loss(task, model(**model_inputs(batch)).logits.float(), batch["labels"])
        if training.optimise(loss, epoch, share=share, scaler=scaler, averaged=model.parameters(),
                             clipped=model.parameters()):
            training.evaluated(evaluate(model, task, dev, config.eval_batch_size), task.main_metric)
        training.checkpoint_if_due()
    report = training.finish()
    result = {} if report is None else save_trained(
        model, tokenizer, out, task, config.max_seq_length, {**training.state.metrics, **report}, job="finetune",
        summary=f"{task.name}, fine-tuned from `{model_path}` by sparsebert.", evaluations=training.state.metrics)
    distributed.finish(processes)
    return result
