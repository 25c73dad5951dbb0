"""Sentence embeddings on the sparse engine: mean pooling over real tokens, as sentence-transformers defines it."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import sparsebert
from sparsebert.models import resolve_model_path
from sparsebert.pruning import build_pruner, find_targets
from sparsebert.sparse import kernels
from sparsebert.sparse.engine import from_hf_model

from conftest import ROOT

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument on a stage in front of a crowd.",
             "The cat sat.", "Stocks fell sharply on Monday after the report on inflation came out."]


def mean_pooled(model, tokenizer, sentences, max_length):
    """The reference: Hugging Face's encoder, the mean of its last layer over the attention mask, normalised."""
    enc = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        last = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((last * mask).sum(1) / mask.sum(1), dim=-1).numpy()


class PythonTokenizer:
    """A tokenizer as one without a Rust backend looks to the engine: called, nothing more."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)


@pytest.mark.parametrize("mode", ["sparse", "dense", "without the C library"])
def test_encode_is_mean_pooling_of_the_encoder_alone(tiny_model, mode, monkeypatch):
    model = AutoModel.from_pretrained(tiny_model).eval()
    build_pruner(find_targets(model), 0.8, 0, 0, 1).step(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if mode == "without the C library":  # the numba products, PyTorch's attention on the sentences padded
        monkeypatch.setattr(kernels, "_C", None)
    engine = from_hf_model(model, tokenizer, engine="dense" if mode == "dense" else "sparse")
    sentences = [*SENTENCES, " ".join(["word"] * 300)]  # the last cut at the model's 128 positions
    got = engine.encode(sentences, batch_size=3)  # batches of mixed lengths
    np.testing.assert_allclose(got, mean_pooled(model, tokenizer, sentences, 128), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1)
    if mode == "sparse":  # each token's sums run in the same order whatever else is in the batch
        np.testing.assert_array_equal(engine.encode(sentences, batch_size=1), got)
        engine.tokenizer = PythonTokenizer(tokenizer)  # no Rust backend: tokenized through the wrapper, alike
        np.testing.assert_array_equal(engine.encode(sentences, batch_size=3), got)
    with pytest.raises(sparsebert.UserError, match="no task head: it gives sentence embeddings"):
        engine(**tokenizer(SENTENCES[:1], return_tensors="pt"))


@pytest.mark.integration
def test_the_embedded_minilm_encodes_as_its_model_card_says():
    path = resolve_model_path(None)
    engine = sparsebert.load_sparse()  # the embedded model by default
    assert engine.max_seq_length == 256  # its sentence_bert_config.json
    reference = mean_pooled(AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), SENTENCES, 256)
    np.testing.assert_allclose(engine.encode(SENTENCES), reference, atol=1e-5)
    similarity = engine.encode(SENTENCES[:2]) @ engine.encode(SENTENCES[2:]).T
    assert similarity.max() < (engine.encode(SENTENCES[:1]) @ engine.encode(SENTENCES[1:2]).T).item()


@pytest.mark.integration
def test_the_embedded_minilm_exports_and_encodes_from_its_export(tmp_path):
    report = sparsebert.export(resolve_model_path(None), str(tmp_path / "export"), values="fp32", embeddings="fp32")
    assert report["max_embedding_diff_vs_dense"] < 1e-5
    assert report["checked_on"] == "the first sentences of the first 256 STS-B dev pairs"
    assert report["checked_examples"] == 256
    exported = sparsebert.load_sparse(tmp_path / "export")
    assert exported.max_seq_length == 256  # the sentence-transformers files travel with the export
    np.testing.assert_allclose(exported.encode(SENTENCES), sparsebert.load_sparse(resolve_model_path(None)).encode(
        SENTENCES), atol=1e-5)


def test_embed_writes_a_matrix_in_file_order_and_refuses_bad_input(tiny_model, tmp_path):
    from conftest import make_tiny_encoder, run_cli

    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    # a fine-tuned classifier records no pooling: its mean-pooled encoder is not a sentence embedder
    refused = run_cli("embed", tiny_model, "--input", tmp_path / "sentences.txt", "--output", tmp_path / "e.npy")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp_path / "e.npy").exists()
    assert "not a sentence-embedding model: no 1_Pooling/config.json records how it pools" in refused.stderr
    with pytest.raises(sparsebert.UserError, match="not a sentence-embedding model"):
        sparsebert.load_sparse(tiny_model).encode(SENTENCES)
    sentence_model = make_tiny_encoder(tmp_path / "sentence-model")
    result = run_cli("embed", sentence_model, "--input", tmp_path / "sentences.txt", "--output", tmp_path / "e.npy")
    assert result.returncode == 0, result.stderr
    matrix = np.load(tmp_path / "e.npy")
    encoder = AutoModel.from_pretrained(sentence_model).eval()
    expected = mean_pooled(encoder, AutoTokenizer.from_pretrained(sentence_model), SENTENCES, 256)
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    (tmp_path / "rows.csv").write_text("id,sentence\n1,The cat sat.\n2,A man is playing a guitar.\n")
    assert run_cli("embed", sentence_model, "--input", tmp_path / "rows.csv", "--text-column", "sentence",
                   "--output", tmp_path / "e.jsonl").returncode == 0
    lines = [__import__("json").loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["line"] for r in lines] == [2, 3]
    np.testing.assert_allclose([r["embedding"] for r in lines], expected[[2, 0]], atol=1e-5)
    for args, words in [(["--output", tmp_path / "e.txt"], "give a .npy or a .jsonl file"),
                        (["--output", tmp_path / "e.npy"], "exists; give another file or --overwrite"),
                        (["--input", tmp_path / "none.txt", "--output", tmp_path / "n.npy"], "input file not found")]:
        base = ["--input", tmp_path / "sentences.txt"] if "--input" not in args else []
        refused = run_cli("embed", sentence_model, *base, *args)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr and words in refused.stderr
    (tmp_path / "pairs.txt").write_text("one\ttwo\n")
    refused = run_cli("embed", sentence_model, "--input", tmp_path / "pairs.txt", "--output", tmp_path / "p.npy")
    assert "pairs.txt:1: two texts on a row" in refused.stderr and not (tmp_path / "p.npy").exists()


def test_an_encoder_exports_to_onnx_with_its_last_hidden_states(tmp_path):
    import onnxruntime

    from conftest import make_tiny_encoder

    folder = make_tiny_encoder(tmp_path / "encoder")
    assert sparsebert.export(folder, str(tmp_path / "export"), onnx=True)["onnx"]["file"] == "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder).eval()(**enc).last_hidden_state.numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    got = session.run(["last_hidden_state"], {k: enc[k].numpy() for k in ("input_ids", "attention_mask",
                                                                         "token_type_ids")})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.integration
def test_the_committed_90_percent_embedder_scores_on_sts_b_what_its_results_say():
    """results/embedder/export-90 is committed so that its figures can be checked without training: its STS-B
    dev Spearman on the engine is the one results/embedder/embedder.json reports (rounded there to 4 places), 98.3%
    of the dense model's."""
    import json

    from sparsebert.embedding import sts_b_spearman

    folder = ROOT / "results" / "embedder" / "export-90"
    rows = {r["model"]: r for r in json.loads((folder.parent / "embedder.json").read_text())}
    engine = sparsebert.load_sparse(folder)
    score = sts_b_spearman(lambda sentences: engine.encode(sentences, batch_size=32))  # as the benchmark does
    # rounding apart, the kernels of every width give the same answers; the numba fall-back's sums run in
    # another order, which may move a tie in the ranks
    assert score == pytest.approx(rows["sparsebert engine: export-90"]["sts_b_dev_spearman"], abs=1e-3)


def test_a_sentence_model_that_pools_otherwise_or_records_a_bad_length_is_refused(tiny_model, tmp_path):
    """encode pools by the mean over tokens: a CLS-pooled sentence-transformers folder would be answered wrongly."""
    import json
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(tiny_model, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(sparsebert.UserError, match="the model pools by pooling_mode_cls_token; the engine's"):
        sparsebert.load_sparse(folder)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 100000}')
    with pytest.raises(sparsebert.UserError, match="max_seq_length 100000; give a whole number from 2 to"):
        sparsebert.load_sparse(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 12')
    with pytest.raises(sparsebert.UserError, match="sentence_bert_config.json: not valid JSON"):
        sparsebert.load_sparse(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 12, "do_lower_case": true}')
    with pytest.raises(sparsebert.UserError, match="do_lower_case is true; the engine's encode gives the tokenizer"):
        sparsebert.load_sparse(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 12, "do_lower_case": false}')
    assert sparsebert.load_sparse(folder).max_seq_length == 12
