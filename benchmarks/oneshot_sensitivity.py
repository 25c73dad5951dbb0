"""How much one pruning step costs, per criterion: a fine-tuned model pruned once, no training after.

    python benchmarks/oneshot_sensitivity.py TEACHER_DIR [--task mrpc] [--json OUT.json]

Each criterion ranks the teacher's encoder weights once and the model is pruned to each sparsity; dev
metrics are measured without any retraining. The taylor criterion sees the squared gradients of the
cross-entropy against labels sampled from the model's own predictions (the empirical Fisher) over
`--batches` training batches: in a pruning run it sees those of the distillation loss, which are zero
for the teacher against itself. This is what a single pruning event does to the function the student
must keep; gradual pruning repeats it a hundred times between steps of recovery.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F

from sparsebert.data import collate, encode
from sparsebert.evaluation import evaluate
from sparsebert.loading import load_model
from sparsebert.pruning import build_pruner, find_targets
from sparsebert.tasks import get_task, load_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--sparsities", default="0.3,0.5,0.7,0.8,0.9,0.95")
    p.add_argument("--batches", type=int, default=16, help="training batches of 32 for the squared gradients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    teacher, tokenizer, _ = load_model(args.teacher, task, new_head=False)
    train = encode(load_split(task, None, "train"), tokenizer, 128, task.is_regression)
    dev = encode(load_split(task, None, "dev"), tokenizer, 128, task.is_regression)
    teacher.eval()

    # the taylor criterion's state: squared gradients observed on training batches
    observed = build_pruner(find_targets(teacher), 0.5, 0, 0, 1, criterion="taylor")
    order = torch.randperm(len(train)).tolist()
    for b in range(args.batches):
        batch = collate(train, order[b * 32:(b + 1) * 32])
        logits = teacher(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}).logits
        sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
        teacher.zero_grad()
        F.cross_entropy(logits, sampled).backward()
        observed.observe()
    teacher.zero_grad()

    records = [{"criterion": "none", "sparsity": 0.0, **evaluate(teacher, task, dev, 64)}]
    for sparsity in [float(s) for s in args.sparsities.split(",")]:
        for criterion in ("magnitude", "taylor"):
            model = copy.deepcopy(teacher)
            pruner = build_pruner(find_targets(model), sparsity, 0, 0, 1, criterion=criterion)
            if criterion == "taylor":
                pruner.criterion.load_state_dict(observed.criterion.state_dict())
            pruner.prune_to(sparsity)
            records.append({"criterion": criterion, "sparsity": sparsity, **evaluate(model, task, dev, 64)})
            print(json.dumps(records[-1]), flush=True)
    result = {"task": task.name, "teacher": args.teacher, "batches": args.batches, "seed": args.seed,
              "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "records": records}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
