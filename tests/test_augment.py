import re

import pytest

from sparsebert.models import load_tokenizer, resolve_model_path
from sparsebert.tasks import get_task, read_glue_examples

from conftest import run_cli


@pytest.fixture(scope="module")
def rte_slice(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rte")
    lines = (resolve_bundled("RTE") / "train.tsv").read_text(encoding="utf-8").splitlines()[:41]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def resolve_bundled(name):
    from sparsebert.tasks import bundled_data_dir

    return bundled_data_dir(get_task(name))


def augment(data_dir, out, *flags):
    return run_cli("augment", "--task", "rte", "--data-dir", str(data_dir), "--output", str(out), *flags)


def test_prob_zero_gives_exact_copies_and_row_count(rte_slice, tmp_path):
    result = augment(rte_slice, tmp_path / "aug.tsv", "--n-aug", "3", "--prob", "0")
    assert result.returncode == 0, result.stderr
    original = read_glue_examples(get_task("rte"), rte_slice / "train.tsv")
    augmented = read_glue_examples(get_task("rte"), tmp_path / "aug.tsv")
    assert len(augmented) == len(original) * 4
    variants = augmented[len(original):]
    for k, row in enumerate(variants):
        source = original[k // 3]
        assert (row.text_a, row.text_b, row.label) == (source.text_a, source.text_b, source.label)


def test_variants_use_real_words_are_deterministic_and_read_back(rte_slice, tmp_path):
    for name in ("a.tsv", "b.tsv"):
        result = augment(rte_slice, tmp_path / name, "--n-aug", "4", "--prob", "0.5", "--seed", "7")
        assert result.returncode == 0, result.stderr
        assert "no masked-LM head" in result.stdout
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    other = augment(rte_slice, tmp_path / "c.tsv", "--n-aug", "4", "--prob", "0.5", "--seed", "8")
    assert other.returncode == 0 and (tmp_path / "c.tsv").read_bytes() != (tmp_path / "a.tsv").read_bytes()

    task = get_task("rte")
    original = read_glue_examples(task, rte_slice / "train.tsv")
    augmented = read_glue_examples(task, tmp_path / "a.tsv")
    assert len(augmented) == 5 * len(original)
    vocab = load_tokenizer(resolve_model_path(None)).get_vocab()
    changed = 0
    for k, row in enumerate(augmented[len(original):]):
        source = original[k // 4]
        assert row.label == source.label
        for new_text, old_text in ((row.text_a, source.text_a), (row.text_b, source.text_b)):
            new_words, old_words = new_text.split(" "), old_text.split(" ")
            assert len(new_words) == len(old_words)
            for new, old in zip(new_words, old_words):
                if new != old:
                    changed += 1
                    assert re.fullmatch(r"[A-Za-z]+", new) and new.lower() in vocab, new
                    assert not new.startswith("##") and new.lower() != old.lower()
    assert changed > 100


def test_existing_output_is_refused(rte_slice, tmp_path):
    (tmp_path / "aug.tsv").write_text("keep me")
    result = augment(rte_slice, tmp_path / "aug.tsv")
    assert result.returncode == 2 and "exists" in result.stderr
    assert (tmp_path / "aug.tsv").read_text() == "keep me"


def test_a_row_without_its_fields_is_refused_with_its_line_and_nothing_is_written(rte_slice, tmp_path):
    """An RTE row whose second sentence lost its tab would be augmented with its label read as text."""
    lines = (rte_slice / "train.tsv").read_text(encoding="utf-8").splitlines()
    index, s1, s2, label = lines[2].split("\t")
    lines[2] = "\t".join([index, f"{s1} {s2}", label])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = augment(tmp_path / "data", tmp_path / "aug.tsv")
    assert result.returncode == 2 and "train.tsv:3:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "aug.tsv").exists() and not (tmp_path / "aug.tsv.tmp").exists()


def test_an_export_is_refused_in_one_line_and_nothing_is_written(rte_slice, tiny_teacher, tmp_path):
    """augment draws words from a Hugging Face folder's masked-LM or input embeddings; an export's are compressed."""
    assert run_cli("export", tiny_teacher, tmp_path / "exp").returncode == 0
    result = augment(rte_slice, tmp_path / "aug.tsv", "--model", str(tmp_path / "exp"))
    assert result.returncode == 2 and "a compressed export; augment reads the Hugging Face folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "aug.tsv").exists()
