import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from sparsebert.pruning import build_pruner, find_targets, sparsity_report
from sparsebert.pruning.schedule import CubicSchedule


def tiny(tiny_model):
    return AutoModelForSequenceClassification.from_pretrained(tiny_model)


def test_cubic_schedule_values():
    s = CubicSchedule(0.9, start=0, end=100, events=10)
    assert s.sparsity_at(0) == 0.0
    assert s.sparsity_at(50) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert s.sparsity_at(25) == pytest.approx(0.9 * (1 - 0.75 ** 3))
    assert s.sparsity_at(100) == s.sparsity_at(150) == 0.9
    assert [t for t in range(200) if s.is_event(t)] == list(range(10, 101, 10))


def test_schedule_with_start_end_and_uneven_interval():
    s = CubicSchedule(0.95, start=20, end=87, events=10)
    events = [t for t in range(200) if s.is_event(t)]
    assert events == [27, 34, 41, 48, 55, 62, 69, 76, 83, 87]
    assert s.sparsity_at(20) == 0.0 and s.sparsity_at(87) == 0.95


def test_one_shot_schedule_prunes_once_at_start():
    s = CubicSchedule(0.5, start=0, end=0)
    assert [t for t in range(10) if s.is_event(t)] == [0] and s.sparsity_at(0) == 0.5


def test_targets_are_the_six_encoder_linears_per_layer(tiny_model):
    names = list(find_targets(tiny(tiny_model)))
    assert len(names) == 2 * 6
    assert names[:6] == [f"bert.encoder.layer.0.{n}" for n in ("attention.self.query", "attention.self.key",
                         "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense")]


@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_masks_monotone_and_exact_at_every_event(tiny_model, allocation, criterion):
    model = tiny(tiny_model)
    targets = find_targets(model)
    pruner = build_pruner(targets, 0.9, start=0, end=50, events=10, criterion=criterion, allocation=allocation)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    previous = {n: m.clone() for n, m in pruner.masks.items()}
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 51):
        with torch.no_grad():  # weights move between events, as in training
            for m in targets.values():
                m.weight.add_(torch.randn(m.weight.shape, generator=gen) * 0.01)
                m.weight.grad = torch.randn(m.weight.shape, generator=gen)
        pruner.apply()
        pruner.observe()
        if pruner.step(step):
            level = pruner.schedule.sparsity_at(step)
            if allocation == "uniform":
                for name, mask in pruner.masks.items():
                    assert (~mask).sum().item() == mask.numel() - round(mask.numel() * (1 - level))
            else:
                total = sum(m.numel() for m in pruner.masks.values())
                removed = sum((~m).sum().item() for m in pruner.masks.values())
                assert removed == total - round(total * (1 - level))
            for name, mask in pruner.masks.items():
                assert not (mask & ~previous[name]).any(), "a removed weight came back"
                assert (targets[name].weight[~mask] == 0).all()
            previous = {n: m.clone() for n, m in pruner.masks.items()}
    assert pruner.level == 0.9
    target_weights = {f"{n}.weight" for n in targets}
    for name, param in model.named_parameters():
        if name not in target_weights:
            assert (param == 0).sum() == (before[name] == 0).sum(), f"{name} is not a target but lost weights"


def test_removed_weights_stay_zero_through_adam_steps(tiny_model):
    model = tiny(tiny_model)
    pruner = build_pruner(find_targets(model), 0.8, start=0, end=0, events=1)
    pruner.step(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    inputs = {"input_ids": torch.randint(0, 30522, (4, 12)), "labels": torch.tensor([0, 1, 0, 1])}
    for _ in range(5):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        pruner.apply()
        for name, module in pruner.targets.items():
            assert (module.weight[~pruner.masks[name]] == 0).all()
    report = sparsity_report(model)
    sizes = [m.weight.numel() for m in pruner.targets.values()]
    removed = sum(n - round(n * 0.2) for n in sizes)
    assert report["targets"]["sparsity"] == pytest.approx(removed / sum(sizes), abs=1e-6)
    assert all(abs(s - 0.8) < 1e-3 for s in report["per_matrix"].values())
    assert set(report["per_layer"]) == {str(i) for i in range(model.config.num_hidden_layers)}
    assert all(abs(s - 0.8) < 1e-3 for s in report["per_layer"].values())


def test_per_layer_sparsity_weighs_matrices_by_size():
    from sparsebert.pruning.report import per_layer

    zeros_first = lambda zeros, size: torch.cat([torch.zeros(zeros), torch.ones(size - zeros)])
    tensors = {"bert.encoder.layer.0.attention.self.query.weight": zeros_first(90, 100),  # 90% of a small matrix
               "bert.encoder.layer.0.intermediate.dense.weight": zeros_first(100, 400),   # 25% of a large one
               "bert.encoder.layer.1.output.dense.weight": zeros_first(0, 50)}
    assert per_layer(tensors) == {"0": 0.38, "1": 0.0}


def test_relative_change_per_layer_is_the_norm_of_the_move_over_the_norm_of_the_start():
    from sparsebert.pruning.report import relative_change

    torch.manual_seed(0)
    before = {f"bert.encoder.layer.{i}.{m}.weight": torch.randn(8, 8) for i in (0, 1) for m in ("query", "output.dense")}
    after = {n: w.clone() for n, w in before.items()}
    after["bert.encoder.layer.1.query.weight"] *= 1.5  # one of layer 1's two matrices moves by half its norm
    q, o = before["bert.encoder.layer.1.query.weight"], before["bert.encoder.layer.1.output.dense.weight"]
    expected = (0.25 * q.pow(2).sum() / (q.pow(2).sum() + o.pow(2).sum())).sqrt().item()
    change = relative_change(before, after)
    assert change["0"] == 0.0 and change["1"] == pytest.approx(expected, abs=1e-6)


def test_state_dict_and_mask_file_round_trip(tiny_model, tmp_path):
    model = tiny(tiny_model)
    pruner = build_pruner(find_targets(model), 0.9, start=0, end=10, events=5)
    for step in range(0, 7):
        pruner.step(step)
    state = pruner.state_dict()
    pruner.save_masks(tmp_path / "masks.safetensors")
    fresh_model = tiny(tiny_model)
    fresh = build_pruner(find_targets(fresh_model), 0.5, start=0, end=3, events=1)
    fresh.load_state_dict(state)
    assert fresh.level == pruner.level and fresh.schedule.state_dict() == pruner.schedule.state_dict()
    assert all(torch.equal(fresh.masks[n], pruner.masks[n]) for n in pruner.masks)
    saved = load_file(tmp_path / "masks.safetensors")  # the file a pruned model's folder carries
    assert sorted(saved) == sorted(f"{n}.weight" for n in pruner.masks)
    assert all(torch.equal(saved[f"{n}.weight"].bool(), pruner.masks[n]) for n in pruner.masks)
    assert all((m.weight[~pruner.masks[n]] == 0).all() for n, m in pruner.targets.items())
    # continuing the schedule from the restored state gives the same next masks
    pruner.step(8), fresh.step(8)
    assert all(torch.equal(fresh.masks[n], pruner.masks[n]) for n in pruner.masks)


def test_taylor_keeps_small_weights_the_loss_depends_on():
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.1], [0.5, 0.2]]))
    pruner = build_pruner({"layer": layer}, 0.5, start=0, end=0, events=1, criterion="taylor")
    pruner.prune_to(0.25)  # nothing observed yet: ranked by magnitude, so the smallest (0.1) goes
    assert pruner.masks["layer"].tolist() == [[True, False], [True, True]]
    decay = pruner.criterion.decay
    for grad in ([[0.0, 9.0], [1.0, 30.0]], [[0.0, 9.0], [3.0, 0.0]]):
        layer.weight.grad = torch.tensor(grad)
        pruner.observe()
    expected = torch.tensor([[0.0, 81.0], [decay * 1 + (1 - decay) * 9, decay * 900]])
    assert torch.allclose(pruner.criterion.squared_grads["layer"], expected)
    pruner.prune_to(0.5)
    # scores w²·E[g²]: 1·0 for the largest weight, 0.25·(≈1.4) and 0.04·(≈855): the 0.2 weight and the
    # 0.5 weight survive, the largest one goes; the weight removed before stays removed
    assert pruner.masks["layer"].tolist() == [[False, False], [True, True]]
    assert layer.weight[0].abs().sum() == 0


def test_taylor_state_restores_the_same_next_masks(tiny_model):
    def observed(model, steps, seed):
        pruner = build_pruner(find_targets(model), 0.9, start=0, end=10, events=5, criterion="taylor")
        gen = torch.Generator().manual_seed(seed)
        for step in range(steps):
            for m in pruner.targets.values():
                m.weight.grad = torch.randn(m.weight.shape, generator=gen)
            pruner.observe()
            pruner.step(step)
        return pruner

    model, other = tiny(tiny_model), tiny(tiny_model)
    pruner = observed(model, 7, seed=0)
    fresh = observed(other, 3, seed=1)  # other gradients seen: other state
    other.load_state_dict(model.state_dict())  # as a checkpoint restores the weights
    fresh.load_state_dict(pruner.state_dict())
    for p in (pruner, fresh):
        for m in p.targets.values():
            m.weight.grad = torch.ones_like(m.weight)
        p.observe()
        p.step(8)
    assert all(torch.equal(fresh.masks[n], pruner.masks[n]) for n in pruner.masks)


def test_the_1x4_pattern_keeps_and_removes_whole_blocks_at_the_exact_sparsity():
    torch.manual_seed(0)
    targets = {"a": torch.nn.Linear(16, 8), "b": torch.nn.Linear(32, 12)}
    pruner = build_pruner(targets, 0.75, 0, 4, 4, criterion="magnitude", pattern="1x4")
    for step in range(5):
        pruner.step(step)
        for name, module in targets.items():
            mask = pruner.masks[name].reshape(module.out_features, -1, 4)
            assert (mask.all(-1) | ~mask.any(-1)).all()  # each block all kept or all removed
        with torch.no_grad():
            for module in targets.values():
                module.weight.add_(torch.randn_like(module.weight))  # training moves the weights
        pruner.apply()
    for name, module in targets.items():
        assert (module.weight == 0).float().mean() == 0.75
    # the blocks kept are those with the largest sum of |w|, and removed ones stay removed
    w = torch.randn(4, 8)
    single = {"m": torch.nn.Linear(8, 4)}
    single["m"].weight.data = w.clone()
    one_shot = build_pruner(single, 0.5, 0, 0, 1, criterion="magnitude", pattern="1x4")
    one_shot.step(0)
    block_scores = w.abs().reshape(-1, 2, 4).sum(-1).flatten()
    kept = one_shot.masks["m"].reshape(-1, 2, 4)[..., 0].flatten()
    assert set(kept.nonzero().flatten().tolist()) == set(block_scores.topk(4).indices.tolist())


def test_the_rewind_schedule_decays_to_zero_at_the_target_then_starts_again():
    from sparsebert.training import lr_factor

    factor = lr_factor("rewind", 100, 10, rewind_at=60)
    assert (factor(0), factor(9), factor(10)) == (pytest.approx(0.1), 1.0, 1.0)
    assert factor(35) == pytest.approx(0.5) and factor(59) == pytest.approx(1 / 50)  # (60 - step) / (60 - 10)
    assert factor(60) == 1.0 and factor(80) == pytest.approx(0.5) and factor(100) == 0.0
    assert lr_factor("linear", 100, 10, rewind_at=60)(60) == pytest.approx(40 / 90)  # the others ignore it


def test_gold_weight_mixes_the_labels_into_the_prediction_term():
    import torch.nn.functional as F

    from sparsebert.distill import DistillationLoss, Outputs

    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    soft = -(teacher.softmax(-1) * student.log_softmax(-1)).sum(-1).mean()
    mixed = DistillationLoss(8, 8, mode="logits", gold_weight=0.25)
    assert mixed.prediction(Outputs(student), Outputs(teacher), labels) == pytest.approx(
        float(0.75 * soft + 0.25 * F.cross_entropy(student, labels)))
    plain = DistillationLoss(8, 8, mode="logits")
    assert plain.prediction(Outputs(student), Outputs(teacher), labels) == pytest.approx(float(soft))


def test_every_registered_component_is_a_setting_prune_takes_and_no_other_is():
    """A criterion, pattern or allocation added to its registry is usable from the command line and the API at
    once; a name no registry holds is refused with the names that are."""
    from sparsebert import PruneConfig
    from sparsebert.errors import UserError
    from sparsebert.pruning.allocation import ALLOCATIONS
    from sparsebert.pruning.criterion import CRITERIA
    from sparsebert.metrics import METRICS
    from sparsebert.pruning.pattern import PATTERNS

    for field, registry in (("criterion", CRITERIA), ("pattern", PATTERNS), ("allocation", ALLOCATIONS),
                            ("metric", METRICS)):
        for name in registry:
            assert getattr(PruneConfig(teacher="t", output="o", **{field: name}), field) == name
        with pytest.raises(UserError, match=f"--{field} no-such-{field}: choose one of ") as refused:
            PruneConfig(teacher="t", output="o", **{field: "no-such-" + field})
        assert set(str(refused.value).split("choose one of ")[1].split(", ")) == set(registry)
