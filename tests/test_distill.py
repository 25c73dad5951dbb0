import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sparsebert.data import collate, encode
from sparsebert.distill import (DistillationLoss, TeacherCache, forward_with_internals, layer_mapping,
                                set_scores_attention, teacher_hidden_variance)
from sparsebert.errors import UserError
from sparsebert.models import load_tokenizer
from sparsebert.tasks import get_task, load_split

from conftest import make_tiny_model


def test_layer_mapping():
    assert layer_mapping(6, 6) == list(range(7))
    assert layer_mapping(3, 12) == [0, 4, 8, 12]
    with pytest.raises(UserError, match="not a multiple"):
        layer_mapping(4, 6)


@pytest.fixture(scope="module")
def batch_data(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    data = encode(load_split(get_task("mrpc"), None, "dev")[:12], tok, 64, regression=False)
    return data, collate(data, list(range(12)))


def model_from(path):
    model = AutoModelForSequenceClassification.from_pretrained(path)
    set_scores_attention(model)
    return model.eval()


def inputs_of(batch):
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


@pytest.mark.parametrize("attention", ["scores", "probs", "kl"])
@pytest.mark.parametrize("hidden_norm", ["none", "teacher-var"])
def test_terms_zero_for_identical_models_and_positive_otherwise(tiny_model, tmp_path, batch_data, attention,
                                                                  hidden_norm):
    data, batch = batch_data
    teacher, student = model_from(tiny_model), model_from(tiny_model)
    other = model_from(make_tiny_model(tmp_path / "other", seed=1))
    loss = DistillationLoss(32, 32, attention=attention, hidden_norm=hidden_norm,
                            hidden_variance=teacher_hidden_variance(teacher, data, [0, 1, 2]))
    with torch.no_grad():
        t = forward_with_internals(teacher, inputs_of(batch))
        same = loss.terms(forward_with_internals(student, inputs_of(batch)), t, batch["labels"], batch["attention_mask"])
        diff = loss.terms(forward_with_internals(other, inputs_of(batch)), t, batch["labels"], batch["attention_mask"])
    assert same["attention"].item() == pytest.approx(0, abs=1e-6)
    assert same["hidden"].item() == pytest.approx(0, abs=1e-6)
    # soft cross-entropy equals the teacher's entropy when the student matches it
    p = torch.softmax(t.logits, -1)
    assert same["prediction"].item() == pytest.approx(-(p * p.log()).sum(-1).mean().item(), abs=1e-5)
    assert diff["attention"] > 0 and diff["hidden"] > 1e-4 and diff["prediction"] > same["prediction"]


def test_padding_does_not_change_the_loss(tiny_model, tmp_path, batch_data):
    data, _ = batch_data
    teacher, student = model_from(tiny_model), model_from(make_tiny_model(tmp_path / "s", seed=2))
    loss = DistillationLoss(32, 32)
    short = min(range(len(data)), key=lambda i: len(data.input_ids[i]))
    longest = max(range(len(data)), key=lambda i: len(data.input_ids[i]))
    with torch.no_grad():
        alone = collate(data, [short])
        padded = collate(data, [short, longest])
        a = loss.terms(forward_with_internals(student, inputs_of(alone)), forward_with_internals(teacher, inputs_of(alone)),
                       alone["labels"], alone["attention_mask"])
        s_out = forward_with_internals(student, inputs_of(padded))
        t_out = forward_with_internals(teacher, inputs_of(padded))
        # keep only the short example's row of the padded batch
        pick = lambda o: type(o)(o.logits[:1], [h[:1] for h in o.hidden], [x[:1] for x in o.scores])
        b = loss.terms(pick(s_out), pick(t_out), padded["labels"][:1], padded["attention_mask"][:1])
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-4, abs=1e-6)


def test_teacher_cache_matches_live_outputs(tmp_path, batch_data):
    data, _ = batch_data
    teacher = model_from(make_tiny_model(tmp_path / "t", layers=4))
    mapping = layer_mapping(2, 4)
    cache = TeacherCache(teacher, data, mapping, keep_internals=True, batch_size=5)
    indices = [3, 7, 1]
    batch = collate(data, indices)
    with torch.no_grad():
        live = forward_with_internals(teacher, inputs_of(batch), mapping)
    cached = cache.batch(indices, batch["input_ids"].size(1), "cpu")
    assert len(cached.hidden) == 3 and len(cached.scores) == 2
    assert torch.allclose(cached.logits, live.logits, atol=1e-5)
    m = batch["attention_mask"].bool()
    for c, l in zip(cached.hidden, live.hidden):
        assert torch.allclose(c.float()[m], l[m], atol=2e-2, rtol=1e-2)
    pairs = m[:, None, :, None] & m[:, None, None, :]
    for c, l in zip(cached.scores, live.scores):
        assert torch.allclose(c.float()[pairs.expand_as(l)], l[pairs.expand_as(l)], atol=2e-2, rtol=1e-2)


def test_projection_when_hidden_sizes_differ(tmp_path, batch_data):
    data, batch = batch_data
    teacher = model_from(make_tiny_model(tmp_path / "wide", hidden=48))
    student = model_from(make_tiny_model(tmp_path / "narrow", hidden=32))
    loss = DistillationLoss(32, 48)
    assert loss.projection is not None and loss.projection.weight.shape == (48, 32)
    terms = loss.terms(forward_with_internals(student, inputs_of(batch)),
                       forward_with_internals(teacher, inputs_of(batch)), batch["labels"], batch["attention_mask"])
    loss.combine(terms).backward()
    assert loss.projection.weight.grad is not None and loss.projection.weight.grad.abs().sum() > 0
