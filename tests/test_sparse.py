import json
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

import sparsebert
from sparsebert.errors import UserError
from sparsebert.models import load_tokenizer
from sparsebert.pruning import build_pruner, find_targets
from sparsebert.sparse import calibration, kernels, rounding
from sparsebert.sparse.engine import from_hf_model
from sparsebert.sparse.format import export_model, load_exported
from sparsebert.sparse.kernels import KERNEL, CsrMatrix, add_layernorm, dense_to_csr, packed_attention, spmm
from sparsebert.sparse.numba_kernel import csr_linear
from sparsebert.tasks import get_task, load_split

from conftest import run_cli


@pytest.mark.parametrize("tokens,in_f,out_f", [(1, 16, 8), (20, 64, 96), (37, 64, 96), (200, 96, 40), (130, 384, 1536)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 0.99, 1.0])
def test_kernels_match_the_dense_product(tokens, in_f, out_f, sparsity):
    rng = np.random.default_rng(tokens + out_f)
    weight = rng.standard_normal((out_f, in_f)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0
    weight[: out_f // 4] = 0  # empty rows
    x = rng.standard_normal((tokens, in_f)).astype(np.float32)
    bias = rng.standard_normal(out_f).astype(np.float32)
    expected = x @ weight.T + bias
    np.testing.assert_allclose(csr_linear(x, *dense_to_csr(weight), bias), expected, atol=1e-4, rtol=1e-4)
    fp32 = CsrMatrix.from_dense(weight, bias)
    np.testing.assert_allclose(spmm(torch.from_numpy(x), fp32).numpy(), expected, atol=1e-4, rtol=1e-4)
    gelu = spmm(torch.from_numpy(x), fp32, gelu=True)
    torch.testing.assert_close(gelu, torch.nn.functional.gelu(torch.from_numpy(expected)), atol=1e-4, rtol=1e-4)
    # int8 values: exactly the product of the weights they stand for, and near the fp32 one
    int8 = CsrMatrix.from_dense(weight, bias, "int8")
    assert int8.values.dtype == np.int8 and np.abs(int8.values).max(initial=0) <= 127
    stood_for = int8.dense_weight().numpy()
    assert (stood_for[weight == 0] == 0).all()  # pruned weights stay zero (a tiny one may round to zero too)
    np.testing.assert_allclose(spmm(torch.from_numpy(x), int8).numpy(), x @ stood_for.T + bias, atol=1e-4, rtol=1e-4)
    assert np.abs(stood_for - weight).max(initial=0) <= np.abs(weight).max(initial=0) / 254 + 1e-6


def feed_forward(x, up, down):
    """The fused block where every thread gets whole strips, else its two products, as the engine runs them."""
    fused = kernels.fused_ffn(x, up, down, torch.empty(len(x), down.out_features))
    return fused if fused is not None else spmm(spmm(x, up, gelu=True), down)


@pytest.mark.skipif(KERNEL == "numba", reason="the C kernel is not built here")
@pytest.mark.parametrize("tokens", [1, 20, 37, 128, 300])  # strips of 32 or 64 tokens: fewer than, as many as, more
# than threads; a last strip of 1, 2, 3 or 4 registers' worth of tokens
def test_every_kernel_width_gives_the_same_answers_bit_for_bit(tokens):
    """AVX-512 (where the processor has it) and AVX2 run the same sums in the same order: choosing the width
    changes the speed, never the answer (products, GELU, the fused FFN, attention); asking for a width the
    processor lacks runs the narrower one."""
    rng = np.random.default_rng(tokens)
    x = torch.from_numpy(rng.standard_normal((tokens, 128)).astype(np.float32))
    # Every token's largest activations and a row's largest weights meet in one block: the int8 1x4 kernel's
    # integers at their extremes, which AVX2's 16-bit pair sums must hold as VNNI's 32-bit sums do.
    x[:, :4] = 5.0
    extreme = np.zeros((8, 128), np.float32)
    extreme[:, :4] = 1.0
    matrices = [CsrMatrix.from_dense(extreme, None, "int8", block=4)]
    for sparsity in (0.0, 0.9, 1.0):
        weight = rng.standard_normal((256, 128)).astype(np.float32)
        weight[rng.random(weight.shape) < sparsity] = 0
        blocked = weight * np.repeat(rng.random((256, 32)) >= sparsity, 4, axis=1)
        bias = rng.standard_normal(256).astype(np.float32)
        matrices += [CsrMatrix.from_dense(weight, bias), CsrMatrix.from_dense(weight, bias, "int8"),
                     CsrMatrix.from_dense(blocked, bias, "int8", block=4)]
    down = [CsrMatrix.from_dense(rng.standard_normal((128, 256)).astype(np.float32), None, values, block)
            for values, block in (("fp32", 1), ("int8", 4))]
    lengths = [tokens, 5, 33, 1]  # sequences packed one after another, as the engine stores a batch
    starts = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    qkv = {head_dim: torch.from_numpy(rng.standard_normal((sum(lengths), 3 * 4 * head_dim)).astype(np.float32))
           for head_dim in (8, 32, 40)}  # 4 heads
    answers = {}
    try:
        for width in ("avx2", "avx512"):
            in_use = kernels.use_kernel(width)
            assert in_use == width or (width == "avx512" and "avx512_vnni" not in calibration.instruction_sets())
            answers[width] = [spmm(x, m, gelu=gelu) for m in matrices for gelu in (False, True)]
            answers[width] += [feed_forward(x, up, d) for up, d in ((matrices[4], down[0]), (matrices[6], down[1]))]
            answers[width] += [packed_attention(q, starts, 4, torch.empty(len(q), q.shape[1] // 3)) for q in qkv.values()]
    finally:
        kernels.use_kernel(KERNEL)
    for avx2, avx512 in zip(answers["avx2"], answers["avx512"]):
        assert torch.equal(avx2, avx512)
    with pytest.raises(ValueError, match="avx2 or avx512"):
        kernels.use_kernel("sse")

@pytest.mark.skipif(KERNEL == "numba", reason="the C kernel is not built here")
@pytest.mark.parametrize("up_kind,down_kind", [(("fp32", 1), ("int8", 4)), (("int8", 4), ("fp32", 1)),
                                               (("int8", 1), ("int8", 4))])
@pytest.mark.parametrize("tokens", [256, 20])  # 4 strips or more; one short strip, small enough for one thread
def test_the_fused_block_of_two_kinds_of_matrix_gives_its_two_products(up_kind, down_kind, tokens):
    """Calibration may keep one matrix of a block in CSR and export the other in 1x4 blocks: fused, the block
    gives what its two products give apart."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((tokens, 128)).astype(np.float32))
    up_weight = rng.standard_normal((512, 128)).astype(np.float32) * np.repeat(rng.random((512, 32)) >= 0.9, 4, 1)
    down_weight = rng.standard_normal((128, 512)).astype(np.float32) * np.repeat(rng.random((128, 128)) >= 0.9, 4, 1)
    up = CsrMatrix.from_dense(up_weight, rng.standard_normal(512).astype(np.float32), *up_kind)
    down = CsrMatrix.from_dense(down_weight, rng.standard_normal(128).astype(np.float32), *down_kind)
    fused = kernels.fused_ffn(x, up, down, torch.empty(tokens, 128))
    assert fused is not None
    torch.testing.assert_close(fused, spmm(spmm(x, up, gelu=True), down), atol=1e-5, rtol=1e-5)



def on_every_width(run) -> dict:
    """{width: run()} for each width of the C kernel this processor has (none without the C library), the
    kernel in use restored after."""
    widths = [w for w in ("avx512", "avx2") if KERNEL != "numba" and kernels.use_kernel(w) == w]
    answers = {}
    try:
        for width in widths:
            kernels.use_kernel(width)
            answers[width] = run()
        return answers
    finally:
        if KERNEL != "numba":
            kernels.use_kernel(KERNEL)


def rounded_to_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 to the nearest bfloat16, ties to even, by its bits (independent of the engine's conversions)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("head_dim", [32, 64, 40])  # vdpbf16ps where the processor has it; fp32 products for 40
def test_attention_in_bf16_is_one_definition_on_every_kernel_and_the_fall_back(head_dim):
    """An int8 model attends in bfloat16: Q * scale, K, V and the softmax's exponentials rounded to bfloat16, the
    products summed in fp32, the softmax's sum taken before rounding. Every width of the kernel and PyTorch's
    fall-back give that definition (computed here in float64) within fp32 rounding, and it is not fp32 attention."""
    rng = np.random.default_rng(head_dim)
    lengths, heads = [70, 1, 33], 2
    qkv = rng.standard_normal((sum(lengths), 3 * heads * head_dim)).astype(np.float32) * 2
    starts = np.concatenate([[0], np.cumsum(lengths)])
    expected, fp32 = np.empty((sum(lengths), heads * head_dim)), np.empty((sum(lengths), heads * head_dim))
    for s, e in zip(starts[:-1], starts[1:]):
        q, k, v = qkv[s:e].reshape(e - s, 3, heads, head_dim).transpose(1, 2, 0, 3).astype(np.float64)
        scale = np.float32(head_dim ** -0.5)
        scores = rounded_to_bf16(q * scale) @ rounded_to_bf16(k).transpose(0, 2, 1)
        exps = np.exp(scores - scores.max(-1, keepdims=True))
        out = rounded_to_bf16(exps) @ rounded_to_bf16(v) / exps.sum(-1, keepdims=True)
        expected[s:e] = out.transpose(1, 0, 2).reshape(e - s, -1)
        exact = np.exp(q @ k.transpose(0, 2, 1) * scale)
        fp32[s:e] = (exact / exact.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(e - s, -1)
    assert np.abs(expected - fp32).max() > 1e-3  # the rounding is there to be seen
    x = torch.from_numpy(qkv)
    got = on_every_width(lambda: packed_attention(x, torch.tensor(starts), heads,
                                                  torch.empty(len(x), heads * head_dim), bf16=True))
    for s, e in zip(starts[:-1], starts[1:]):  # the fall-back, one sequence at a time
        q, k, v = x[s:e].view(e - s, 3, heads, head_dim).permute(1, 2, 0, 3)
        got.setdefault("pytorch", torch.empty(len(x), heads * head_dim))[s:e] = (
            kernels.bf16_attention(q, k, v).transpose(0, 1).reshape(e - s, -1))
    for name, answer in got.items():
        error = np.abs(answer.numpy() - expected)
        # fp32 rounding, but where a score's last bits move an exponential across a bfloat16 rounding boundary
        # (rare; the order of a path's sums decides it): that weight then moves by 2^-8 of itself
        assert np.mean(error <= 2e-6 + 1e-5 * np.abs(expected)) > 0.99, name
        assert error.max() < 1e-2, name


def test_attention_in_bf16_runs_on_vdpbf16ps_where_the_processor_has_it():
    if KERNEL != "avx512" or "avx512_bf16" not in calibration.instruction_sets():
        pytest.skip("no AVX-512 BF16 here")
    assert kernels.bf16_products(32) == kernels.bf16_products(64) == "vdpbf16ps"
    assert kernels.bf16_products(40) == "fp32 products"  # the kernel's pairs of 32 columns do not fit
    try:
        kernels.use_kernel("avx2")
        assert kernels.bf16_products(32) == "fp32 products"
    finally:
        kernels.use_kernel(KERNEL)


def test_an_int8_model_attends_alike_in_the_kernel_and_in_pytorchs_fall_back(tiny_model, monkeypatch):
    """Left padding (or no C library) sends attention to PyTorch: an int8 model attends in bfloat16 there too."""
    from sparsebert.sparse import engine as engine_module

    engine = from_hf_model(pruned_tiny(tiny_model), values="int8", engine="sparse")
    assert engine.summary()["attention"].startswith("bf16")
    inputs = batch_of_mixed_lengths()
    kernel = engine(**inputs, output_hidden_states=True).hidden_states[-1]
    monkeypatch.setattr(engine_module, "packed_attention", lambda *args, **kwargs: None)
    fall_back = engine(**inputs, output_hidden_states=True).hidden_states[-1]
    # the same but where an exponential crosses a bfloat16 rounding boundary (see bf16_attention): one head of
    # one token then moves by about 1e-3
    error = (fall_back - kernel).abs()
    assert float((error <= 1e-4).float().mean()) > 0.98 and float(error.max()) < 1e-2
    engine.attention_bf16 = False  # and the rounding shows: fp32 attention is further away
    fp32 = engine(**inputs, output_hidden_states=True).hidden_states[-1]
    assert float(((fp32 - kernel).abs() > 1e-4).float().mean()) > 0.1


def test_attention_in_bf16_rounds_to_nearest_even_on_every_kernel_and_the_fall_back():
    """A sequence of one token attends only to itself, so its output is its V rounded to bfloat16: the rounding
    itself, checked bit for bit on values of every magnitude and on exact ties (the low 16 bits 0x8000, either
    parity), which round to even."""
    rng = np.random.default_rng(0)
    heads, head_dim, tokens = 2, 32, 512
    v = (rng.standard_normal(tokens * heads * head_dim) * 10.0 ** rng.integers(-20, 20, tokens * heads * head_dim))
    bits = v.astype(np.float32).view(np.uint32)
    bits[::3] = (bits[::3] & 0xFFFF0000) | 0x8000  # ties
    v = bits.view(np.float32).reshape(tokens, heads * head_dim)
    qkv = torch.from_numpy(np.concatenate([np.ones_like(v), np.ones_like(v), v], axis=1))
    starts = torch.arange(tokens + 1)  # every sequence one token long
    expected = rounded_to_bf16(v).astype(np.float32)
    outputs = on_every_width(lambda: packed_attention(qkv, starts, heads, torch.empty(tokens, heads * head_dim),
                                                      bf16=True))
    q = torch.ones(tokens, heads, 1, head_dim)
    outputs["pytorch"] = kernels.bf16_attention(q, q, torch.from_numpy(v).view(tokens, heads, 1, head_dim))
    for name, out in outputs.items():
        np.testing.assert_array_equal(out.reshape(tokens, -1).numpy(), expected, err_msg=name)


def test_fused_kernels_match_pytorch():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 384, generator=rng) * 3, torch.randn(300, 384, generator=rng)
    weight, bias = torch.randn(384, generator=rng), torch.randn(384, generator=rng)
    out = add_layernorm(a, b, weight, bias, 1e-12, torch.empty(300, 384))
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(a + b, (384,), weight, bias, 1e-12),
                               atol=1e-5, rtol=1e-5)
    # packed attention: three sequences of different lengths against PyTorch's attention one by one, with head
    # sizes that take each of the kernels' column groups (8 alone, 16s, 16s and a last 8, whole 32s)
    lengths, heads = [5, 33, 17], 4
    starts = torch.tensor([0, 5, 38, 55])
    for head_dim in (8, 16, 40, 64):
        qkv = torch.randn(sum(lengths), 3 * heads * head_dim, generator=rng)
        got = packed_attention(qkv, starts, heads, torch.empty(sum(lengths), heads * head_dim))
        if got is None:
            pytest.skip("the C kernel is not built here")
        for s, e in zip(starts[:-1], starts[1:]):
            q, k, v = qkv[s:e].view(e - s, 3, heads, head_dim).permute(1, 2, 0, 3)
            expected = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(e - s, -1)
            torch.testing.assert_close(got[s:e], expected, atol=1e-5, rtol=1e-5, msg=f"head size {head_dim}")


def scaled_with_biases(model, scale):
    """A random model made to look trained: its linear weights scaled up (else its logits are near zero) and
    biases drawn at random (they start at zero, which would hide an engine that drops them)."""
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in find_targets(model).values():
            m.weight.mul_(scale)
            m.bias.copy_(torch.randn(m.bias.shape, generator=rng) * 0.5)
    return model


def pruned_tiny(tiny_model, sparsity=0.9):
    model = scaled_with_biases(AutoModelForSequenceClassification.from_pretrained(tiny_model).eval(), 20)
    build_pruner(find_targets(model), sparsity, 0, 0, 1).step(0)
    return model


def batch_of_mixed_lengths(batch=4, length=19, seed=0, left_padded_row=None):
    ids = torch.randint(1000, 30522, (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 3 * row:] = 0  # lengths 19, 16, 13, 10
    if left_padded_row is not None:
        mask[left_padded_row] = 0
        mask[left_padded_row, 4:] = 1
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def assert_same_as_dense(model, engine, inputs, atol):
    with torch.no_grad():
        expected = model(**inputs, output_hidden_states=True)
    got = engine(**inputs, output_hidden_states=True)
    real = inputs["attention_mask"].bool()
    assert len(got.hidden_states) == len(expected.hidden_states)
    for e, g in zip(expected.hidden_states, got.hidden_states):  # padded positions are not computed
        torch.testing.assert_close(g[real], e[real], atol=atol, rtol=atol)
    assert expected.logits.abs().max() > 1e-3
    torch.testing.assert_close(got.logits, expected.logits, atol=atol, rtol=atol)


@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("left_padded_row", [None, 2])
def test_engine_hidden_states_match_the_dense_model(tiny_model, mode, left_padded_row):
    model = pruned_tiny(tiny_model)
    engine = from_hf_model(model, engine=mode)
    assert_same_as_dense(model, engine, batch_of_mixed_lengths(left_padded_row=left_padded_row), 1e-4)
    single = {k: v[:1, :7] for k, v in batch_of_mixed_lengths().items()}  # batch 1
    assert_same_as_dense(model, engine, single, 1e-4)


@pytest.mark.parametrize("values", ["fp32", "int8"])
def test_a_layer_in_one_call_gives_the_hidden_states_of_a_call_per_step_bit_for_bit(tiny_model, values):
    """A layer whose matrices all run sparse runs in one C call: the same kernels in the same order as the
    engine's call per step, so the same hidden states, in a batch of mixed lengths and in a batch of one."""
    engine = from_hf_model(pruned_tiny(tiny_model), values=values, engine="sparse")
    assert all(layer.one_call is not None for layer in engine.layers)
    batches = [batch_of_mixed_lengths(), {k: v[:1, :7] for k, v in batch_of_mixed_lengths().items()}]
    one_call = [engine(**inputs, output_hidden_states=True).hidden_states for inputs in batches]
    for layer in engine.layers:
        layer.one_call = None
    for inputs, expected in zip(batches, one_call):
        got = engine(**inputs, output_hidden_states=True).hidden_states
        assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_a_layer_in_one_call_shares_a_short_batchs_rows_between_threads_as_the_steps_do(monkeypatch):
    """A batch too short for a strip per thread, with products big enough for two: the layer's products share
    their rows out between the threads and the FFN runs as two products (not fused), in one call as in steps."""
    from sparsebert.sparse import engine as engine_module

    config = AutoConfig.for_model("bert", vocab_size=500, hidden_size=256, num_attention_heads=4,
                                  num_hidden_layers=2, intermediate_size=1024, num_labels=2)
    model = scaled_with_biases(AutoModelForSequenceClassification.from_config(config).eval(), 2)
    build_pruner(find_targets(model), 0.5, 0, 0, 1).step(0)
    inputs = {k: v[:1, :20] for k, v in batch_of_mixed_lengths().items()}
    inputs["input_ids"] = inputs["input_ids"] % 500
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine = from_hf_model(model, values="int8", engine="sparse")
        calls = []
        monkeypatch.setattr(engine_module, "encoder_layer", lambda *args: calls.append(1) or kernels.encoder_layer(*args))
        one_call = engine(**inputs, output_hidden_states=True)
        assert len(calls) == 2
        for layer in engine.layers:
            layer.one_call = None
        in_steps = engine(**inputs, output_hidden_states=True)
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(a, b) for a, b in zip(one_call.hidden_states, in_steps.hidden_states))
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.testing.assert_close(one_call.logits, expected, atol=2e-2 * float(expected.abs().max()), rtol=0)


@pytest.mark.parametrize("model_type,head_dim", [("bert", 64), ("roberta", 32), ("xlm-roberta", 64), ("electra", 32)])
def test_every_family_the_engine_accepts_gives_hugging_faces_hidden_states_on_every_kernel(model_type, head_dim,
                                                                                           monkeypatch):
    """Tiny random models of each accepted family (ELECTRA with embeddings narrower than its layers), sequences
    up to 512 tokens, right-padded: the same hidden states as Hugging Face through each kernel this machine can
    run (AVX-512, AVX2, the numba fall-back without the C library)."""
    hidden = 2 * head_dim
    config = AutoConfig.for_model(model_type, vocab_size=500, hidden_size=hidden, num_attention_heads=2,
                                  num_hidden_layers=2, intermediate_size=4 * hidden, max_position_embeddings=514,
                                  num_labels=2, **({"embedding_size": head_dim} if model_type == "electra" else {}))
    torch.manual_seed(0)
    model = scaled_with_biases(AutoModelForSequenceClassification.from_config(config).eval(), 5)
    build_pruner(find_targets(model), 0.8, 0, 0, 1).step(0)
    lengths = [512, 300, 37, 1]
    ids = torch.randint(5, 500, (len(lengths), 512), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(512)[None, :] < torch.tensor(lengths)[:, None]).long()
    inputs = {"input_ids": ids.masked_fill(mask == 0, config.pad_token_id), "attention_mask": mask}
    def every_engine():
        for engine in ("sparse", "auto"):  # auto: each matrix timed both ways first, as load_sparse runs
            assert_same_as_dense(model, from_hf_model(model, engine=engine), inputs, 2e-4)

    on_every_width(every_engine)
    monkeypatch.setattr(kernels, "_C", None)
    assert_same_as_dense(model, from_hf_model(model, engine="sparse"), inputs, 2e-4)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_a_row_of_padding_only_gives_what_hugging_face_gives_never_nan(tiny_model, mode):
    model = pruned_tiny(tiny_model)
    inputs = batch_of_mixed_lengths()
    inputs["attention_mask"][1] = 0
    got = from_hf_model(model, engine=mode)(**inputs).logits
    with torch.no_grad():
        expected = model(**inputs).logits
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "gelu_new", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_the_engine_runs_the_models_own_activation(tmp_path, activation, mode):
    from conftest import make_tiny_model

    folder = make_tiny_model(tmp_path / activation)
    config = AutoConfig.from_pretrained(folder)
    config.hidden_act = activation
    model = AutoModelForSequenceClassification.from_pretrained(folder, config=config)
    model.save_pretrained(folder)
    model = pruned_tiny(folder)
    assert_same_as_dense(model, from_hf_model(model, engine=mode), batch_of_mixed_lengths(), 1e-4)


def test_an_activation_the_engine_does_not_run_is_refused_at_load_and_export_writes_nothing(tiny_model, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    model.config.hidden_act = "silu"
    with pytest.raises(UserError, match="the sparse engine runs the activations gelu, gelu_new, gelu_pytorch_tanh, "
                                        "relu; this model's hidden_act is 'silu'"):
        from_hf_model(model)
    model.save_pretrained(tmp_path / "silu")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "silu")
    refused = run_cli("export", str(tmp_path / "silu"), str(tmp_path / "exp"))
    assert refused.returncode == 2 and "hidden_act is 'silu'" in refused.stderr
    assert not (tmp_path / "exp").exists()  # no export that looks finished


def test_engine_int8_values_stay_near_fp32(tiny_model):
    model = pruned_tiny(tiny_model)
    inputs = batch_of_mixed_lengths()
    fp32, int8 = from_hf_model(model, engine="sparse"), from_hf_model(model, values="int8", engine="sparse")
    a, b = fp32(**inputs).logits, int8(**inputs).logits
    assert (a - b).abs().max() < 2e-2 * a.abs().max()


def test_calibration_runs_each_matrix_the_way_that_was_faster(monkeypatch):
    """The choice follows the timings, whichever way they fall (timed here with stand-ins that sleep, so the
    test does not depend on the machine's speed or load; the real speeds are benchmarks/kernel_speed.py's)."""
    import time

    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    matrix = CsrMatrix.from_dense(weight)
    slow = lambda *a, **k: time.sleep(0.05)  # far beyond either product on this small matrix
    monkeypatch.setattr(calibration, "spmm", slow)
    assert not calibration.measure(matrix, repeats=2)  # the kernel slower: dense
    monkeypatch.setattr(calibration, "spmm", lambda *a, **k: None)
    monkeypatch.setattr(calibration.torch, "addmm", slow)
    assert calibration.measure(matrix, repeats=2)  # the dense product slower: sparse


def test_calibration_tells_apart_processors_that_share_a_model_name(monkeypatch, tmp_path):
    """ "AMD EPYC" names Zen 4 and Zen 5 alike: an answer measured on one must not be reused on the other."""
    zen = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {}\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n\n"
    matrix = CsrMatrix.from_dense(np.eye(64, dtype=np.float32))
    keys = []
    for family, model in ((25, 17), (26, 2)):
        (tmp_path / "cpuinfo").write_text(zen.format(family, model))
        monkeypatch.setattr(calibration, "CPUINFO", tmp_path / "cpuinfo")
        calibration.processor.cache_clear()
        calibration.instruction_sets.cache_clear()
        keys.append(calibration.key(matrix))
    monkeypatch.undo()  # the real /proc/cpuinfo again, and nothing cached from the fake one
    calibration.processor.cache_clear()
    calibration.instruction_sets.cache_clear()
    assert keys[0] != keys[1] and all("AMD EPYC" in k for k in keys)


@pytest.fixture
def one_thread():
    """Timings that a second thread would make depend on what else the machine is doing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_calibration_is_cached_on_disk(tmp_path, monkeypatch):
    cache = tmp_path / "calibration.json"
    monkeypatch.setenv("SPARSEBERT_CALIBRATION", str(cache))
    monkeypatch.setattr(calibration, "_answers", {})
    matrix = CsrMatrix.from_dense(np.eye(64, dtype=np.float32))
    calibration.runs_faster_sparse(matrix)
    stored = json.loads(cache.read_text())
    assert list(stored) == [calibration.key(matrix)]
    # a later process reads the answer instead of measuring again
    monkeypatch.setattr(calibration, "_answers", {})
    monkeypatch.setattr(calibration, "measure", lambda m: pytest.fail("measured again"))
    assert calibration.runs_faster_sparse(matrix) == stored[calibration.key(matrix)]
    # a damaged cache (not an object of answers) is measured again and written anew, not a failure of every load
    for damaged in ("null", "[1]", '"x"', '{"a key": "not an answer"}'):
        cache.write_text(damaged)
        monkeypatch.setattr(calibration, "_answers", {})
        monkeypatch.setattr(calibration, "measure", lambda m: True)
        assert calibration.runs_faster_sparse(matrix) is True
        assert json.loads(cache.read_text()) == {calibration.key(matrix): True}


@pytest.mark.parametrize("values", ["fp32", "fp16", "int8"])
def test_export_round_trip(tiny_model, tmp_path, values):
    model = pruned_tiny(tiny_model)
    report = export_model(model, load_tokenizer(str(tiny_model)), tmp_path / values, values, embeddings_dtype=values)
    restored = load_exported(tmp_path / values).state_dict()
    for name, tensor in model.state_dict().items():
        if values == "fp32":
            assert torch.equal(restored[name], tensor), name
        else:
            # int8: half a step of the row's scale (its largest magnitude / 127) at most
            atol = float(tensor.abs().max()) / 254 * 1.001 if values == "int8" else 1e-4
            assert torch.allclose(restored[name], tensor, rtol=0 if values == "int8" else 1e-3, atol=atol), name
        if name.endswith("weight"):
            assert ((restored[name] == 0) >= (tensor == 0)).all(), name  # pruned weights stay zero
    assert report["pruned_dense_bytes"] == sum(m.weight.numel() * 4 for m in find_targets(model).values())
    # per matrix: 4 B row offsets (out + 1), 2 B index and 1, 2 or 4 B value per non-zero, int8's 4 B row scales
    value_bytes = {"int8": 1, "fp16": 2, "fp32": 4}[values]
    expected = sum(4 * (w.shape[0] + 1) + int((w != 0).sum()) * (2 + value_bytes) + 4 * w.shape[0] * (values == "int8")
                   for w in (m.weight for m in find_targets(model).values()))
    assert report["pruned_compressed_bytes"] == expected


def test_export_says_when_int8_values_move_the_logits_past_their_tolerance(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    with torch.no_grad():  # a large weight in every row: its int8 steps are coarse for the others
        for m in find_targets(model).values():
            m.weight[:, 0] = m.weight.abs().max() * 1000
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    moved = {}
    for values in ("int8", "fp32"):
        result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / values), "--values", values)
        assert result.returncode == 0, result.stderr
        moved[values] = json.loads((tmp_path / values / "export_report.json").read_text())["max_logit_diff_vs_dense"]
        assert json.loads((tmp_path / values / "export_report.json").read_text())["checked_on"] == "three sample pairs"
        noted = "note: this int8 export moves the model's logits" in result.stdout
        assert noted == (moved[values] > 1e-2 and values == "int8"), (values, moved[values], result.stdout)
    assert moved["int8"] > 1e-2 > moved["fp32"]


def test_compensated_int8_rounding_keeps_the_grid_and_the_zeros_and_moves_the_product_less_than_nearest():
    rng = np.random.default_rng(0)
    # inputs that vary together, as a transformer's do
    x = rng.standard_normal((2000, 16)) @ rng.standard_normal((16, 96)) + 0.1 * rng.standard_normal((2000, 96))
    weight = rng.standard_normal((64, 96)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.7] = 0
    nearest = CsrMatrix.from_dense(weight, values="int8")
    compensated = CsrMatrix.from_dense(weight, values="int8", rounding=rounding.compensated(x.T @ x))
    # the same non-zeros on the same grid: one scale per row, int8 steps
    assert np.array_equal(compensated.row_offsets, nearest.row_offsets)
    assert np.array_equal(compensated.col_indices, nearest.col_indices)
    np.testing.assert_array_equal(compensated.scales, nearest.scales)
    assert compensated.values.dtype == np.int8 and np.abs(compensated.values.astype(int)).max() <= 127

    def product_error(m):
        return np.linalg.norm(x @ (weight - m.dense_weight().numpy()).T)
    assert product_error(compensated) < 0.7 * product_error(nearest)


def test_compensated_rounding_rounds_each_row_as_gptq_does_on_its_non_zeros():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 40)) + 0.1 * rng.standard_normal((500, 40))
    weight = rng.standard_normal((30, 40)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.6] = 0
    gram = x.T @ x
    got = CsrMatrix.from_dense(weight, values="int8", rounding=rounding.compensated(gram))
    # the textbook form: the largest value first, then each value's error spread over the rest through the upper
    # Cholesky factor of the inverse (damped) Gram matrix of the row's inputs
    damped = gram + rounding.DAMPING * np.mean(np.diag(gram)) * np.eye(len(gram))
    expected = []
    for row, scale in zip(weight, got.scales):
        cols = np.flatnonzero(row)
        order = np.arange(len(cols))
        top = np.argmax(np.abs(row[cols]))
        order[0], order[top] = top, 0
        values, cols = row[cols][order].astype(np.float64), cols[order]
        upper = np.linalg.cholesky(np.linalg.inv(damped[np.ix_(cols, cols)])).T
        steps = np.zeros(len(cols))
        for i in range(len(cols)):
            steps[i] = np.clip(np.rint(values[i] / scale), -127, 127)
            values[i + 1:] -= (values[i] - steps[i] * scale) / upper[i, i] * upper[i, i + 1:]
        expected.extend(steps[np.argsort(order)])
    assert np.sum(got.values != np.array(expected)) <= 1  # a tie may fall either way in the last bit


def test_input_grams_are_each_linears_input_products_over_real_tokens(tiny_model):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    batch = batch_of_mixed_lengths()
    names = [f"bert.encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value")]
    grams = rounding.input_grams(model, [batch], names)
    with torch.no_grad():
        embedded = model(**batch, output_hidden_states=True).hidden_states[0]
    x = embedded[batch["attention_mask"].bool()].double()
    for name in names:  # the three read the same input, and padding is left out
        np.testing.assert_allclose(grams[name], (x.T @ x).numpy(), rtol=1e-5, atol=1e-5)


def test_export_rounds_int8_values_calibrated_on_the_task_the_model_records_or_on_a_file(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.config.sparsebert_data = {"max_seq_length": 64, "task": "MRPC"}  # as prune records them
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a cat sat on the mat\ndogs bark at night\nthe rain in spain\n")
    expected = {(): "compensated, on the first 256 MRPC training examples", ("--calibration", "none"): "nearest",
                ("--calibration", str(sentences)): f"compensated, on the first 3 rows of {sentences}"}
    exported = {}
    for number, (flags, rounding_said) in enumerate(expected.items()):
        out = tmp_path / f"export-{number}"
        result = run_cli("export", str(tmp_path / "pruned"), str(out), *flags)
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "export_report.json").read_text())
        assert report["rounding"] == rounding_said
        assert report["max_logit_diff_vs_dense"] < 1e-2
        # checked on the task's dev examples, whatever it was calibrated on
        assert report["checked_on"] == "the first 256 MRPC dev examples"
        exported[flags] = out
    # the check's figures are the engine's on those examples, as a user running the export would find them
    dev = load_split(get_task("mrpc"), None, "dev")[:256]
    inputs = load_tokenizer(str(tiny_model))([e.text_a for e in dev], [e.text_b for e in dev], truncation=True,
                                             max_length=64, padding=True, return_tensors="pt")
    report = json.loads((exported[()] / "export_report.json").read_text())
    with torch.no_grad():
        dense, sparse = model(**inputs).logits, sparsebert.load_sparse(exported[()])(**inputs).logits
    assert report["max_logit_diff_vs_dense"] == pytest.approx(float((sparse - dense).abs().max()), rel=1e-3)
    assert report["predictions_changed"] == int((sparse.argmax(-1) != dense.argmax(-1)).sum())
    # calibrated on other inputs, the values land on other steps of the same grid
    assert not torch.equal(load_exported(exported[()]).state_dict()["bert.encoder.layer.0.intermediate.dense.weight"],
                           load_exported(exported[("--calibration", "none")]).state_dict()[
                               "bert.encoder.layer.0.intermediate.dense.weight"])
    # a model that records no task is checked on the file's rows
    del model.config.sparsebert_data
    model.save_pretrained(tmp_path / "no-task")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "no-task")
    assert run_cli("export", str(tmp_path / "no-task"), str(tmp_path / "no-task-export"), "--calibration",
                   str(sentences)).returncode == 0
    report = json.loads((tmp_path / "no-task-export" / "export_report.json").read_text())
    assert report["rounding"] == f"compensated, on the first 3 rows of {sentences}"
    assert report["checked_on"] == f"the first 3 rows of {sentences}" and report["checked_examples"] == 3
    # the block kernel quantizes its activations too: its values are rounded to nearest
    blocks = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    build_pruner(find_targets(blocks), 0.75, 0, 0, 1, pattern="1x4").step(0)
    blocks.config.sparsebert_data = {"max_seq_length": 64, "task": "MRPC"}
    blocks.save_pretrained(tmp_path / "blocks")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "blocks")
    assert run_cli("export", str(tmp_path / "blocks"), str(tmp_path / "blocks-export")).returncode == 0
    assert json.loads((tmp_path / "blocks-export" / "export_report.json").read_text())["rounding"] == \
        "nearest (1x4 blocks)"
    missing = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "refused"), "--calibration",
                      str(tmp_path / "missing.txt"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "--calibration" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "refused").exists()


def test_export_of_a_model_trained_on_own_files_calibrates_and_checks_on_the_files_its_run_names(tiny_model,
                                                                                                tmp_path):
    files = tmp_path / "data"
    files.mkdir()
    for name, rows in (("train.csv", 300), ("dev.csv", 20)):  # sentences of mixed lengths, a verdict each
        (files / name).write_text("id,sentence,verdict\n" + "".join(
            f"{i},{' '.join(['word'] * (1 + i % 9))} number {i},{'yes' if i % 2 else 'no'}\n" for i in range(rows)))
    model = pruned_tiny(tiny_model)
    model.config.sparsebert_data = {"task": "verdicts", "text_columns": "sentence", "label_column": "verdict",
                                    "metric": "accuracy", "max_seq_length": 64}  # as prune records own files
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    (tmp_path / "pruned" / "config.yaml").write_text(f"train_file: {files / 'train.csv'}\n"
                                                     f"validation_file: {files / 'dev.csv'}\n")
    assert run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "export")).returncode == 0
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    train_rows = f"the first 256 rows of {files / 'train.csv'} (the model's training file)"
    assert report["rounding"] == f"compensated, on {train_rows}"
    assert report["checked_on"] == f"the first 20 rows of {files / 'dev.csv'} (the model's validation file)"
    assert report["checked_examples"] == 20 and report["max_logit_diff_vs_dense"] < 1e-2
    # moved away from the files its run names, the export says what to give instead of guessing
    (files / "train.csv").rename(files / "moved.csv")
    assert run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "export-2")).returncode == 0
    report = json.loads((tmp_path / "export-2" / "export_report.json").read_text())
    assert report["rounding"] == (f"nearest ({files / 'train.csv'}, the train_file that {tmp_path / 'pruned'}/"
                                  "config.yaml names, is not found here: give --calibration FILE)")
    assert report["checked_on"] == f"the first 20 rows of {files / 'dev.csv'} (the model's validation file)"
    # a training file with no rows: refused where it would calibrate, not read where nothing is calibrated
    (files / "train.csv").write_text("id,sentence,verdict\n")
    refused = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "export-3"))
    assert refused.returncode != 0 and "no rows to calibrate" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "export-3").exists()
    assert run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "export-4"), "--values", "fp16").returncode == 0


def test_load_sparse_is_called_like_a_hugging_face_classifier(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    engine = sparsebert.load_sparse(tmp_path / "pruned")
    inputs = engine.tokenizer(["a cat sat", "dogs bark at night"], ["on a mat", "loudly"], padding=True,
                              return_tensors="pt")
    output = engine(**inputs)
    assert isinstance(output, SequenceClassifierOutput) and isinstance(output.logits, torch.Tensor)
    with torch.no_grad():
        torch.testing.assert_close(output.logits, model(**inputs).logits, atol=1e-4, rtol=1e-4)
    assert output.logits.softmax(-1).shape == (2, model.config.num_labels)
    assert engine.summary()["matrices"] == 8


def test_export_load_sparse_predict_round_trip(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.config.sparsebert_data = {"max_seq_length": 64}  # as prune records the length it trained with
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "exp"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert report["values_dtype"] == "int8" and report["embeddings_dtype"] == "int8"
    assert report["folder_compression"] == pytest.approx(report["dense_folder_bytes"] / report["folder_bytes"], rel=0.01)
    assert report["max_logit_diff_vs_dense"] < 2e-2

    # the export runs through load_sparse as the model it came from, within int8's tolerance
    engine = sparsebert.load_sparse(tmp_path / "exp")
    inputs = batch_of_mixed_lengths()
    with torch.no_grad():
        expected = model(**inputs).logits
    assert (engine(**inputs).logits - expected).abs().max() < 2e-2 * expected.abs().max()

    # an export is exported no further; bench times it as the model it came from
    result = run_cli("export", str(tmp_path / "exp"), str(tmp_path / "again"))
    assert result.returncode == 2 and "already a compressed export" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "again").exists()
    result = run_cli("finetune", "--model", str(tmp_path / "exp"), "--output", str(tmp_path / "tuned"))
    assert result.returncode == 2 and "a compressed export is for inference; train from a Hugging Face folder" in \
        result.stderr and not (tmp_path / "tuned").exists()
    result = run_cli("bench", "--model", str(tmp_path / "exp"), "--engines", "pytorch-fp32,sparsebert-fp32",
                     "--batch-sizes", "2", "--seq-length", "16", "--threads", "1", "--repeats", "1", "--warmup", "1",
                     "--dev-task", "none", "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "bench.json").read_text())
    assert {r["engine"] for r in records} == {"pytorch-fp32", "sparsebert-fp32"}
    # the export's own model, once: not the embedded MiniLM pruned to each of --sparsities
    assert [r["sparsity"] for r in records if r["engine"] == "sparsebert-fp32"] == [pytest.approx(0.9, abs=1e-3)]

    (tmp_path / "in.jsonl").write_text('{"text_a": "a cat", "text_b": "a dog"}\n\n{"sentence1": "hello", "sentence2": "hi"}\n')
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "sparse engine" in result.stderr
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    assert [l["line"] for l in lines] == [1, 3]
    assert all(abs(sum(l["probabilities"].values()) - 1) < 1e-5 for l in lines)
    (tmp_path / "bad.jsonl").write_text('{"text_a": "ok"}\n{"text_a": \n')
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "bad.jsonl"))
    assert result.returncode == 2 and "bad.jsonl:2: not valid JSON" in result.stderr

    # predictions never replace their input, nor an existing file unless asked
    original = (tmp_path / "in.jsonl").read_bytes()
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.jsonl"),
                     "--output", str(tmp_path / "." / "in.jsonl"), "--overwrite")
    assert result.returncode == 2 and "is the input file" in result.stderr
    assert (tmp_path / "in.jsonl").read_bytes() == original
    (tmp_path / "old.jsonl").write_text("keep me\n")
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.jsonl"),
                     "--output", str(tmp_path / "old.jsonl"))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "old.jsonl").read_text() == "keep me\n"
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.jsonl"),
                     "--output", str(tmp_path / "old.jsonl"), "--overwrite")
    assert result.returncode == 0 and len((tmp_path / "old.jsonl").read_text().splitlines()) == 2


def test_evaluate_on_the_sparse_engine_gives_the_dense_metrics(tiny_teacher, tmp_path):
    dense = run_cli("evaluate", str(tiny_teacher), "--json", str(tmp_path / "dense.json"))
    sparse = run_cli("evaluate", str(tiny_teacher), "--engine", "sparse", "--json", str(tmp_path / "sparse.json"))
    assert dense.returncode == 0 and sparse.returncode == 0, sparse.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("dense.json", "sparse.json"))
    assert (a["accuracy"], a["f1"]) == (b["accuracy"], b["f1"])
    # an unpruned teacher: every matrix is faster dense, and the engine says so
    assert b["engine_summary"]["dense_matrices"] == 8 and "0 of 8 matrices run sparse" in sparse.stdout


def test_bench_times_every_engine_in_one_run(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    result = run_cli("bench", "--model", str(tmp_path / "pruned"), "--batch-sizes", "1,2", "--seq-length", "16",
                     "--threads", "1", "--rounds", "3", "--repeats", "2", "--warmup", "1", "--dev-task", "none",
                     "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "bench.json").read_text())
    assert all(r["rounds"] == 3 and r["ms_min"] <= r["ms"] <= r["ms_max"] for r in records)
    engines = {r["engine"] for r in records}
    assert engines == {"pytorch-fp32", "pytorch-int8", "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-fused",
                       "sparsebert-fp32", "sparsebert-int8"}
    for r in records:
        assert r["batch_size"] in (1, 2) and r["seq_length"] == 16 and r["threads"] == 1
        if r["engine"] != "pytorch-fp32":  # the reference the others are measured against
            assert r["max_logit_diff"] < (1e-4 if r["engine"] == "sparsebert-fp32" else 0.1), r
    assert [r["sparsity"] for r in records if r["engine"].startswith("sparsebert")] == pytest.approx([0.9] * 4, abs=1e-3)
    import matplotlib.image

    assert min(matplotlib.image.imread(tmp_path / "bench.png").shape[:2]) > 100  # a picture, not an empty file
    assert "avx2" in records[0]["machine"]["instruction_sets"] or records[0]["machine"]["kernel"] == "numba"
    table = (tmp_path / "bench.md").read_text()
    assert table.count("| sparsebert-fp32 | 0.9") == 1 and "| pytorch-fp32 | any |" in table
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "x int8)" in rows["sparsebert-int8"] and "int8)" not in rows["onnxruntime-fp32"]  # sparse against int8


def test_bench_rounds_take_every_engine_in_turn_and_compare_with_the_fastest_int8():
    """A machine that slows down half-way slows every engine alike when they take turns; the int8 ratio is
    against whichever int8 engine was fastest at that batch."""
    from sparsebert.benchmarking import add_speedups, interleaved_rounds

    calls = []
    runs = [(name, {"b1": lambda name=name: calls.append(name) or len(calls)}) for name in ("a", "b")]
    figures = interleaved_rounds(runs, 3)
    assert calls == ["a", "b"] * 3 and figures == {"a": {"b1": [1, 3, 5]}, "b": {"b1": [2, 4, 6]}}

    def record(engine, ms):
        return {"engine": engine, "threads": 2, "batch_size": 32, "ms": ms}

    records = [record("pytorch-fp32", 600), record("pytorch-int8", 240), record("onnxruntime-int8", 160),
               record("onnxruntime-int8-fused", 200), record("sparsebert-int8", 80)]
    add_speedups(records)
    sparse = records[-1]
    assert (sparse["speedup_vs_pytorch_fp32"], sparse["speedup_vs_fastest_int8"], sparse["fastest_int8"]) == \
        (7.5, 2.0, "onnxruntime-int8")


def test_bench_as_the_readme_runs_it_prunes_the_embedded_minilm_and_times_the_mrpc_dev_set(tmp_path):
    """`sparsebert bench` with no model: the embedded MiniLM magnitude-pruned to each sparsity, its int8 export's
    logits within 1e-2 of PyTorch's, and the 408 MRPC dev pairs timed at their own lengths."""
    result = run_cli("bench", "--sparsities", "0.95", "--engines", "pytorch-fp32,sparsebert-int8", "--batch-sizes", "1",
                     "--seq-length", "16", "--threads", "1", "--repeats", "1", "--warmup", "1",
                     "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "bench.json").read_text())
    timed = {(r["engine"], r.get("dataset", r.get("batch_size"))): r for r in records}
    assert set(timed) == {("pytorch-fp32", 1), ("pytorch-fp32", "mrpc"), ("sparsebert-int8", 1),
                          ("sparsebert-int8", "mrpc")}
    assert timed["sparsebert-int8", 1]["sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert timed["sparsebert-int8", 1]["max_logit_diff"] < 1e-2
    assert timed["sparsebert-int8", "mrpc"]["examples"] == timed["pytorch-fp32", "mrpc"]["examples"] == 408


def test_a_missing_onnxruntime_is_reported_before_anything_is_written(tiny_model, tmp_path, monkeypatch):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as where it is not installed
    result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "exp"), "--onnx")
    assert result.returncode == 2 and "pip install 'sparsebert[onnx]'" in result.stderr
    assert not (tmp_path / "exp").exists()
    result = run_cli("bench", "--model", str(tmp_path / "pruned"), "--engines", "onnxruntime-int8",
                     "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 2 and "not installed" in result.stderr
    assert not (tmp_path / "bench.json").exists()


def test_onnx_export_matches_pytorch(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "exp"), "--onnx")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert (tmp_path / "exp" / "model.onnx").is_file()
    assert report["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4


def emulated_int8_blocks(x: np.ndarray, m: CsrMatrix) -> np.ndarray:
    """What the int8 1x4 kernel computes, in numpy: activations quantized per token to 7 bits with a zero point
    (zero kept exact), times the int8 weights, rescaled."""
    lo, hi = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)
    scale = np.where(hi > lo, (hi - lo) / 127, 1).astype(np.float32)
    zero = np.rint(-lo / scale)
    q = np.clip(np.rint(x / scale[:, None] + zero[:, None]), 0, 127)
    weights = (m.dense_weight().numpy() / m.scales[:, None]).round()  # the int8 values, in place
    return scale[:, None] * m.scales[None, :] * (q @ weights.T - zero[:, None] * weights.sum(1)[None, :]) + m.bias


@pytest.mark.parametrize("tokens", [1, 37, 130])
def test_int8_block_kernel_matches_its_arithmetic_and_stays_near_fp32(tokens):
    rng = np.random.default_rng(tokens)
    weight = rng.standard_normal((96, 64)).astype(np.float32)
    weight *= np.repeat(rng.random((96, 16)) >= 0.8, 4, axis=1)  # 80% of 1x4 blocks removed
    weight[:5] = 0
    bias = rng.standard_normal(96).astype(np.float32)
    m = CsrMatrix.from_dense(weight, bias, "int8", block=4)
    assert m.block == 4 and np.abs(m.values.astype(np.int16)).max() == 127 and len(m.values) == 4 * len(m.col_indices)
    assert (m.dense_weight().numpy()[weight == 0] == 0).all()
    x = rng.standard_normal((tokens, 64)).astype(np.float32)
    got = spmm(torch.from_numpy(x), m).numpy()
    if KERNEL == "avx2":  # the fall-back runs fp32 products of the same weights
        np.testing.assert_allclose(got, emulated_int8_blocks(x, m), atol=1e-3, rtol=1e-3)
    exact = x @ weight.T + bias
    assert np.linalg.norm(got - exact) <= 0.02 * np.linalg.norm(exact)


def test_a_model_pruned_in_1x4_blocks_runs_and_exports_in_int8_blocks(tiny_model, tmp_path):
    model = scaled_with_biases(AutoModelForSequenceClassification.from_pretrained(tiny_model).eval(), 20)
    build_pruner(find_targets(model), 0.75, 0, 0, 1, pattern="1x4").step(0)
    engine = from_hf_model(model, values="int8", engine="sparse")
    assert engine.summary()["int8_block_matrices"] == 8
    assert from_hf_model(model, values="fp32").summary()["int8_block_matrices"] == 0
    inputs = batch_of_mixed_lengths()
    with torch.no_grad():
        expected = model(**inputs).logits
    # int8 weights and activations, and attention in bfloat16 on scores this large (weights scaled by 20)
    assert (engine(**inputs).logits - expected).abs().max() < 0.04 * expected.abs().max()
    report = export_model(model, load_tokenizer(str(tiny_model)), tmp_path / "exp")
    assert report["pattern"] == "1x4"
    exported = sparsebert.load_sparse(tmp_path / "exp", engine="sparse")
    assert exported.summary()["int8_block_matrices"] == 8
    torch.testing.assert_close(exported(**inputs).logits, engine(**inputs).logits, atol=2e-2, rtol=2e-2)


def test_one_model_called_from_several_threads_at_once_gives_each_its_own_answer(tiny_model):
    from concurrent.futures import ThreadPoolExecutor

    model = pruned_tiny(tiny_model)
    engine = from_hf_model(model, engine="sparse")
    batches = [{k: v[:, :length] for k, v in batch_of_mixed_lengths(seed=seed, length=19).items()}
               for seed, length in zip(range(8), (19, 7, 13, 19, 11, 19, 5, 17))]
    alone = [engine(**b).logits.clone() for b in batches]
    with ThreadPoolExecutor(4) as pool:  # the kernels release the GIL: calls overlap
        for _ in range(5):
            together = list(pool.map(lambda b: engine(**b).logits.clone(), batches))
            assert all(torch.equal(a, t) for a, t in zip(alone, together))


@pytest.mark.parametrize("values, damage, words", [
    ("fp32", lambda t, n: t[f"{n}.col_indices"].__setitem__(0, 2000), "has a column index 2000 past its 32 columns"),
    ("fp32", lambda t, n: t[f"{n}.row_offsets"].__setitem__(1, 10 ** 6), "has row offsets that do not run from 0"),
    ("int8", lambda t, n: t[f"{n}.scales"].__setitem__(0, float("inf")), "has row scales of another length, or not"),
    ("fp32", lambda t, n: t.__setitem__(f"{n}.values", t[f"{n}.values"][:-1]), "has .* values for"),
    # arrays of another type: the kernels would read their bytes as int32 offsets, int8 values, fp32 scales
    ("fp32", lambda t, n: t.__setitem__(f"{n}.row_offsets", t[f"{n}.row_offsets"].long()), "has row offsets or column"),
    ("int8", lambda t, n: t.__setitem__(f"{n}.scales", t[f"{n}.scales"].half()), "has int8 values or scales of another"),
    ("int8", lambda t, n: t.__setitem__(f"{n}.values", t[f"{n}.values"].short()), "has int8 values or scales of another"),
    ("int8", lambda t, n: t.pop(f"{n}.scales"), "has int8 values without their scales"),
])
def test_a_damaged_export_is_refused_on_load_never_read_out_of_bounds(tiny_model, tmp_path, values, damage, words):
    from safetensors.torch import load_file, save_file

    export_model(pruned_tiny(tiny_model), load_tokenizer(str(tiny_model)), tmp_path / "export", values, values)
    path = tmp_path / "export" / "model.sparse.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    name = "bert.encoder.layer.0.attention.self.query.weight"
    damage(tensors, name)
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=f"the stored matrix {name} {words}"):
        sparsebert.load_sparse(tmp_path / "export")
    (tmp_path / "pairs.tsv").write_text("A cat.\tA dog.\n")
    refused = run_cli("predict", tmp_path / "export", "--input", tmp_path / "pairs.tsv", "--max-seq-length", "32")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and "the stored matrix" in refused.stderr


@pytest.mark.parametrize("damage, words", [
    # the kernels read a bias and a LayerNorm of the sizes config.json gives: shorter ones would be read past their end
    (lambda t, c: t.__setitem__("bert.encoder.layer.0.intermediate.dense.bias",
                                t["bert.encoder.layer.0.intermediate.dense.bias"][:8].clone()),
     "bert.encoder.layer.0.intermediate.dense.bias is 8, but the model's config.json makes it 64"),
    (lambda t, c: t.__setitem__("bert.encoder.layer.1.output.LayerNorm.weight",
                                t["bert.encoder.layer.1.output.LayerNorm.weight"][:8].clone()),
     "bert.encoder.layer.1.output.LayerNorm.weight is 8, but"),
    (lambda t, c: t.pop("bert.encoder.layer.0.output.LayerNorm.bias"),
     "the model's weights lack bert.encoder.layer.0.output.LayerNorm.bias"),
    (lambda t, c: t.update({k: t[k][:4].clone() for k in t if k.startswith("bert.embeddings.position_embeddings")}),
     "bert.embeddings.position_embeddings.weight is 4 x 32, but the model's config.json makes it"),
    (lambda t, c: t.__setitem__("bert.embeddings.word_embeddings.weight.scales",
                                t["bert.embeddings.word_embeddings.weight.scales"][:10].clone()),
     "the scales of bert.embeddings.word_embeddings.weight are not one fp32 number per row"),
    (lambda t, c: c.__setitem__("matrices", list(c["matrices"])), "sparse_config.json is not as sparsebert export"),
    (lambda t, c: c.__setitem__("matrices", {}), "the model's pruned matrices lack bert.encoder.layer.0"),
])
def test_an_export_whose_other_tensors_or_record_are_damaged_is_refused_on_load(tiny_model, tmp_path, damage, words):
    from safetensors.torch import load_file, save_file

    export_model(pruned_tiny(tiny_model), load_tokenizer(str(tiny_model)), tmp_path / "export", "int8", "int8")
    path, record = tmp_path / "export" / "model.sparse.safetensors", tmp_path / "export" / "sparse_config.json"
    tensors, sparse_config = {k: v.clone() for k, v in load_file(str(path)).items()}, json.loads(record.read_text())
    damage(tensors, sparse_config)
    save_file(tensors, str(path))
    record.write_text(json.dumps(sparse_config))
    with pytest.raises(UserError, match=words):
        sparsebert.load_sparse(tmp_path / "export", engine="sparse")


def test_a_1x4_export_with_values_beyond_the_block_kernels_range_is_refused(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    build_pruner(find_targets(model), 0.75, 0, 0, 1, pattern="1x4").step(0)
    export_model(model, load_tokenizer(str(tiny_model)), tmp_path / "export", "int8", "int8")
    path = tmp_path / "export" / "model.sparse.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    name = "bert.encoder.layer.1.output.dense.weight"
    tensors[f"{name}.values"][3] = -128
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=r"beyond \+-127"):
        sparsebert.load_sparse(tmp_path / "export")
    tensors[f"{name}.values"][3] = 5
    tensors[f"{name}.row_offsets"][3] = 10 ** 6  # the blocks' row sums are taken from the offsets: checked first
    save_file(tensors, str(path))
    with pytest.raises(UserError, match="has row offsets that do not run from 0"):
        sparsebert.load_sparse(tmp_path / "export")


def test_a_1x4_int8_model_gives_one_answer_whichever_way_its_matrices_run(tiny_model, monkeypatch):
    """The kernel, the dense product (what calibration may pick) and the numba fall-back (no C library) all
    compute the int8 1x4 arithmetic: activations quantized per token."""
    from sparsebert.sparse import kernels

    model = scaled_with_biases(AutoModelForSequenceClassification.from_pretrained(tiny_model).eval(), 20)
    build_pruner(find_targets(model), 0.75, 0, 0, 1, pattern="1x4").step(0)
    inputs = batch_of_mixed_lengths()
    answers = {mode: from_hf_model(model, values="int8", engine=mode)(**inputs).logits for mode in ("sparse", "dense")}
    monkeypatch.setattr(kernels, "_C", None)
    answers["numba"] = from_hf_model(model, values="int8", engine="sparse")(**inputs).logits
    scale = float(answers["sparse"].abs().max())
    for mode in ("dense", "numba"):
        torch.testing.assert_close(answers[mode], answers["sparse"], atol=2e-3 * scale, rtol=0)
