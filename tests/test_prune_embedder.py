"""prune-embedder: a sentence embedder pruned while it distils from its dense self, on unlabelled sentences."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from transformers import AutoModel

import sparsebert
from conftest import kill_once_written, make_tiny_encoder, run_cli
from sparsebert.data import epoch_batches
from sparsebert.embedding import copy_sentence_transformers_files
from sparsebert.embedding import glue_sentences, sts_b_pairs
from sparsebert.models import load_tokenizer, resolve_model_path
from sparsebert.pruning import find_targets

WORDS = "the a cat dog man woman plays sings reads runs guitar song book fast slowly on stage at home".split()


def sentences_file(path, n=48):
    rng = np.random.default_rng(0)
    path.write_text("".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) + "\n" for _ in range(n)))
    return path


def sts_b_reference(folder) -> float:
    """STS-B dev Spearman of cosine similarities, computed here from Hugging Face's encoder and scipy."""
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), load_tokenizer(str(folder))
    first, second, gold = sts_b_pairs()

    def pooled(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            last = model(**enc).last_hidden_state
        mask = enc["attention_mask"][:, :, None].float()
        return (last * mask).sum(1) / mask.sum(1)

    cosine = torch.nn.functional.cosine_similarity(pooled(first), pooled(second)).numpy()
    return spearmanr(cosine, gold).statistic


def test_the_pruned_embedder_is_exactly_sparse_and_scored_as_it_says(tmp_path):
    model = make_tiny_encoder(tmp_path / "encoder")
    out = tmp_path / "pruned"
    result = run_cli("prune-embedder", "--model", model, "--sentences", sentences_file(tmp_path / "s.txt"),
                     "--max-steps", "6", "--batch-size", "8", "--sparsity", "0.5", "--prune-end", "0.5",
                     "--eval-every", "3", "--output", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]  # an encoder alone
    weights, masks = load_file(out / "model.safetensors"), load_file(out / "masks.safetensors")
    targets = [n for n in find_targets(AutoModel.from_pretrained(out))]
    assert len(targets) == 12 and len(masks) == 12
    for name in targets:
        w = weights[f"{name}.weight"]
        assert (w == 0).sum().item() == w.numel() // 2, name
        assert torch.equal(w == 0, ~masks[next(k for k in masks if k.startswith(name))].bool()), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sentences"] == 48 and metrics["sparsity"] == 0.5
    assert metrics["final"]["sts_b_spearman"] == pytest.approx(sts_b_reference(out), abs=1e-4)
    assert metrics["teacher"]["sts_b_spearman"] == pytest.approx(sts_b_reference(model), abs=1e-4)
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "\"eval\"" in line]
    assert [e["step"] for e in evals] == [3, 6]


def test_the_pruned_folder_opens_in_sentence_transformers_and_its_export_encodes_alike(tmp_path):
    """What a user compares: the pruned folder in sentence-transformers (dense), and its export on the engine."""
    from sentence_transformers import SentenceTransformer

    model = make_tiny_encoder(tmp_path / "encoder")
    copy_sentence_transformers_files(Path(resolve_model_path(None)), model)  # mean pooling, normalised, as MiniLM's
    out = tmp_path / "pruned"
    assert run_cli("prune-embedder", "--model", model, "--sentences", sentences_file(tmp_path / "s.txt"),
                   "--max-steps", "4", "--batch-size", "8", "--sparsity", "0.75", "--prune-end", "0.5",
                   "--output", out).returncode == 0
    sentences = [" ".join(WORDS[i:i + 5]) for i in range(0, 15, 3)]
    dense = SentenceTransformer(str(out), device="cpu")
    assert dense.max_seq_length == 256  # the model's own sentence-transformers files came along
    reference = dense.encode(sentences)
    assert np.abs(np.linalg.norm(reference, axis=1) - 1).max() < 1e-5  # its Normalize module came along too
    sparsebert.export(str(out), str(tmp_path / "export"), values="fp32", embeddings="fp32")
    for folder, use in ((out, f'SentenceTransformer("{out}")'), (tmp_path / "export", "sparsebert.load_sparse(")):
        card = (folder / "README.md").read_text()  # the model card says what the folder is and how to use it
        assert "pipeline_tag: sentence-similarity" in card and use in card and "model.encode([" in card
        assert "Labels" not in card and "logits" not in card
    np.testing.assert_allclose(sparsebert.load_sparse(tmp_path / "export").encode(sentences), reference, atol=1e-5)


def test_a_killed_run_resumes_to_the_same_embedder(tmp_path):
    model = make_tiny_encoder(tmp_path / "encoder")
    sentences = sentences_file(tmp_path / "s.txt", n=96)

    def prune(out, *extra):
        return ["prune-embedder", "--model", str(model), "--sentences", str(sentences), "--max-steps", "16",
                "--batch-size", "8", "--sparsity", "0.75", "--prune-end", "0.5", "--save-every", "4",
                "--eval-every", "8", "--output", str(out), *extra]

    assert run_cli(*prune(tmp_path / "whole")).returncode == 0
    out = tmp_path / "killed"
    kill_once_written(prune(out), out / "checkpoint-8")
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    resumed = run_cli("prune-embedder", "--resume", "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.safetensors", "masks.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    assert json.loads((out / "metrics.json").read_text())["final"] == json.loads(
        (tmp_path / "whole" / "metrics.json").read_text())["final"]


def test_a_student_identical_to_its_teacher_has_nothing_to_learn(tmp_path):
    """No dropout and nothing pruned: student and teacher see the same sentences and every term is zero, which
    fails if a layer, a pooling or a mask is paired wrongly."""
    model = make_tiny_encoder(tmp_path / "encoder", dropout=0.0)
    out = tmp_path / "same"
    assert run_cli("prune-embedder", "--model", model, "--sentences", sentences_file(tmp_path / "s.txt"),
                   "--max-steps", "1", "--batch-size", "8", "--sparsity", "0", "--embedding-loss", "mse",
                   "--output", out).returncode == 0
    step = next(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line)
    assert step["loss"] == pytest.approx(0, abs=1e-6) and step["attention"] == pytest.approx(0, abs=1e-6)


def test_prune_embedder_refuses_what_it_cannot_use(tiny_model, tmp_path):
    model = make_tiny_encoder(tmp_path / "encoder")
    bare = make_tiny_encoder(tmp_path / "bare")  # an encoder that records no pooling: its embedding is unknown
    shutil.rmtree(bare / "1_Pooling")
    (tmp_path / "pairs.tsv").write_text("one sentence\tand another\n")
    for args, words in [(["--model", tiny_model], "a fine-tuned classifier; give a sentence-embedding model"),
                        (["--model", bare], "bare: not a sentence-embedding model: no 1_Pooling/config.json"),
                        (["--model", model, "--sentences", tmp_path / "pairs.tsv"], "pairs.tsv:1: two texts on a row"),
                        (["--model", model, "--sentences", tmp_path / "none.txt"], "file of sentences not found"),
                        (["--model", model, "--loss-weights", "1,1"], "give 3 non-negative numbers: attention,hidden,"
                                                                      "embedding")]:
        refused = run_cli("prune-embedder", *args, "--output", tmp_path / "out")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr and words in refused.stderr, refused.stderr
        assert not (tmp_path / "out" / "config.yaml").exists()


def test_the_default_sentences_are_the_bundled_training_sentences_without_sts_b_dev():
    sentences = glue_sentences()
    first, second, _ = sts_b_pairs()
    assert len(sentences) == len(set(sentences)) > 30000
    assert not set(first + second) & set(sentences)
    assert "Amrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his evidence ." \
        in sentences  # MRPC's first training sentence


def test_length_grouped_batches_cover_the_epoch_and_pad_less():
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.choice([10, 12, 15, 20, 120], 2000, p=[0.3, 0.3, 0.2, 0.18, 0.02])]
    grouped = epoch_batches(len(lengths), 16, seed=3, epoch=0, lengths=lengths)
    plain = epoch_batches(len(lengths), 16, seed=3, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    assert grouped == epoch_batches(len(lengths), 16, seed=3, epoch=0, lengths=lengths)
    assert grouped != epoch_batches(len(lengths), 16, seed=3, epoch=1, lengths=lengths)
    padded = lambda batches: sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded(grouped) < 0.5 * padded(plain)


def test_the_python_api_names_the_job():
    with pytest.raises(sparsebert.UserError, match="--sparsity 1.5"):
        sparsebert.prune_embedder(sparsity=1.5, output="x")
