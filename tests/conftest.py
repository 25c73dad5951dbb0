import contextlib
import io
import os
import signal
import subprocess
import time
import traceback
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from sparsebert.models import load_tokenizer, resolve_model_path

torch.set_num_threads(2)
os.environ["SPARSEBERT_CALIBRATION"] = ""  # the engine's measurements stay in memory, not in the user's cache
ROOT = Path(__file__).resolve().parents[1]


def make_tiny_model(folder: Path, *, layers=2, hidden=32, heads=4, num_labels=None, seed=0, dropout=0.1) -> Path:
    """A random BERT with the embedded MiniLM's tokenizer: seconds to train, same code paths."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if num_labels:
        config.num_labels = num_labels
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    load_tokenizer(resolve_model_path(None)).save_pretrained(folder)
    return folder


def make_tiny_encoder(folder: Path, dropout=0.1) -> Path:
    """A tiny random BERT encoder alone (no task head) that pools by the mean over its tokens, as a
    sentence-transformers model is stored."""
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout), add_pooling_layer=False).save_pretrained(folder)
    load_tokenizer(resolve_model_path(None)).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}')
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_model) -> Path:
    """A tiny model fine-tuned briefly on an MRPC slice with `sparsebert finetune`."""
    out = tmp_path_factory.mktemp("tiny-teacher") / "teacher"
    result = run_cli("finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "64",
                     "--epochs", "1", "--batch-size", "16", "--learning-rate", "1e-3")
    assert result.returncode == 0, result.stderr
    return out


def run_cli(*args, cwd=None, launcher=()) -> subprocess.CompletedProcess:
    """`sparsebert ARGS` as a user runs it: in this process (no start-up cost), or in new processes
    under a launcher such as torchrun."""
    if launcher:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, *launcher, "-m", "sparsebert", *args], capture_output=True,
                              text=True, cwd=cwd, env=env, timeout=600)
    from sparsebert.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        os.chdir(cwd or previous)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse errors
                code = e.code
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def kill_once_written(args: list, marker) -> None:
    """Starts `sparsebert ARGS` in a new process and kills it (SIGKILL) as soon as `marker` exists."""
    # the same number of threads as the in-process runs: another reduction order would change the bits
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "sparsebert", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not marker.is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
