"""The sparse encoder engine: a BERT-family classifier's forward of our own, for inference on a CPU.

Per layer: one fused Q/K/V product (the three matrices' rows in one CSR), attention of the packed sequences
(the C kernel; PyTorch's scaled_dot_product_attention on the tokens spread back out where it cannot run), the
output projection, residual + LayerNorm, the FFN up- and down-projections (one fused call with GELU where both run
sparse), residual + LayerNorm. Only real tokens run through the linear layers: a batch's tokens are packed into one (tokens, hidden)
matrix, so padding costs nothing there.

Each matrix runs sparse only where that was measured faster on this machine than the dense product
(`calibration.py`); elsewhere it runs dense (PyTorch's BLAS). Called like a Hugging Face classifier:
`model(input_ids=..., attention_mask=..., token_type_ids=...)` returns an output with `.logits`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import UserError
from . import kernels
from .calibration import runs_faster_sparse
from .kernels import (CsrMatrix, add_layernorm, bf16_attention, c_layer, encoder_layer, fused_ffn, gelu_,
                      packed_attention, quantize_activations, spmm, to_matrices)

ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")  # positions counted from padding_idx + 1
SUPPORTED = ("bert", "electra", *ROBERTA_LIKE)
# The classification heads on the first token: (dense layer name or None, its activation, output layer name)
HEADS = {"bert": ("pooler.dense", torch.tanh, "classifier"),  # pooler under the base model's prefix
         "electra": ("classifier.dense", F.gelu, "classifier.out_proj"),
         **{t: ("classifier.dense", torch.tanh, "classifier.out_proj") for t in ROBERTA_LIKE}}
# The feed-forward activations (config.hidden_act) the engine runs: erf GELU inside the kernels (None), the others
# after the up-projection. Anything else is refused at load rather than run as GELU.
ACTIVATIONS = {"gelu": None,
               "gelu_new": lambda x: x.copy_(F.gelu(x, approximate="tanh")),
               "gelu_pytorch_tanh": lambda x: x.copy_(F.gelu(x, approximate="tanh")),
               "relu": lambda x: F.relu(x, inplace=True)}


def check_engine_runs(config) -> None:
    """Refuses a model the engine would run wrongly (a family, position embedding or activation it lacks), before
    anything is written for it."""
    if config.model_type not in SUPPORTED:
        raise UserError(f"the sparse engine runs {', '.join(SUPPORTED)} encoders, not '{config.model_type}'")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise UserError(f"the sparse engine runs absolute position embeddings, not "
                        f"'{config.position_embedding_type}'")
    if config.hidden_act not in ACTIVATIONS:
        raise UserError(f"the sparse engine runs the activations {', '.join(ACTIVATIONS)}; this model's "
                        f"hidden_act is '{config.hidden_act}' (predict and evaluate run it in PyTorch with --dense "
                        "and --engine dense)")


class EngineLinear:
    """One of the encoder's linear layers: the sparse kernel or the dense product, whichever is faster here."""

    def __init__(self, matrix: CsrMatrix, bias: torch.Tensor, sparse: bool):
        self.bias = bias.float().contiguous()
        self.out_features = matrix.out_features
        self.sparse = sparse
        self.quantized_activations = matrix.block == 4  # int8 blocks: see kernels.quantize_activations
        if sparse:
            matrix.bias = self.bias.numpy()
            self.matrix = matrix
        else:
            self.weight_t = matrix.dense_weight().T.contiguous()

    def __call__(self, x: torch.Tensor, out: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        if self.sparse:
            return spmm(x, self.matrix, gelu, out)
        torch.addmm(self.bias, quantize_activations(x) if self.quantized_activations else x, self.weight_t, out=out)
        return gelu_(out) if gelu else out


@dataclass
class EngineLayer:
    qkv: EngineLinear
    attention_out: EngineLinear
    attention_norm: tuple[torch.Tensor, torch.Tensor]
    ffn_up: EngineLinear
    ffn_down: EngineLinear
    output_norm: tuple[torch.Tensor, torch.Tensor]
    one_call: kernels.CLayer | None = None  # the whole layer in one C call, where it can run so

    def __post_init__(self):
        self.attention_norm = tuple(t.float().contiguous() for t in self.attention_norm)
        self.output_norm = tuple(t.float().contiguous() for t in self.output_norm)


def concat_rows(matrices: list[CsrMatrix]) -> CsrMatrix:
    """One CSR matrix holding the rows of several with the same inputs (Q, K and V)."""
    if len({(m.scales is None, m.block) for m in matrices}) != 1:
        raise ValueError("cannot fuse matrices with different value types or patterns")
    offsets, total = [matrices[0].row_offsets[:1]], 0
    for m in matrices:
        offsets.append(m.row_offsets[1:] + total)
        total += len(m.col_indices)
    return CsrMatrix(np.concatenate(offsets).astype(np.int32), np.concatenate([m.col_indices for m in matrices]),
                     np.concatenate([m.values for m in matrices]),
                     None if matrices[0].scales is None else np.concatenate([m.scales for m in matrices]),
                     None, matrices[0].in_features, matrices[0].block)


class SparseModel(torch.nn.Module):
    """A BERT-family sequence classifier on the sparse engine (inference only; weights are not parameters)."""

    device = torch.device("cpu")

    def __init__(self, config, tensors: dict[str, torch.Tensor], matrices: dict[str, CsrMatrix], tokenizer=None,
                 engine: str = "auto"):
        super().__init__()
        if engine not in ("auto", "sparse", "dense"):
            raise ValueError(f"engine '{engine}': give auto, sparse or dense")
        check_engine_runs(config)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.config, self.tokenizer = config, tokenizer
        self.heads, self.hidden = config.num_attention_heads, config.hidden_size
        self.eps = config.layer_norm_eps
        self.model_type = config.model_type
        prefix = {"bert": "bert", "electra": "electra"}.get(config.model_type, "roberta")
        hidden = config.hidden_size
        width = getattr(config, "embedding_size", hidden)  # ELECTRA's embeddings may be narrower

        def tensor(name: str, *shape: int) -> torch.Tensor:
            """A weight the kernels will read `shape` of: a shorter one would be read past its end."""
            if name not in tensors:
                raise UserError(f"the model's weights lack {name}; save or export the model again")
            if tuple(tensors[name].shape) != shape:
                raise UserError(f"{name} is {' x '.join(map(str, tensors[name].shape))}, but the model's config.json "
                                f"makes it {' x '.join(map(str, shape))}; save or export the model again")
            return tensors[name]

        def norm(name: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            return tensor(f"{name}.weight", size), tensor(f"{name}.bias", size)

        def affine(name: str, out: int, inputs: int):  # a dense layer outside the encoder's pruned matrices
            return tensor(f"{name}.weight", out, inputs), tensor(f"{name}.bias", out)

        emb = f"{prefix}.embeddings."
        self.word = tensor(emb + "word_embeddings.weight", config.vocab_size, width)
        self.position = tensor(emb + "position_embeddings.weight", config.max_position_embeddings, width)
        self.token_type = (tensor(emb + "token_type_embeddings.weight", config.type_vocab_size, width)
                           if emb + "token_type_embeddings.weight" in tensors else None)
        self.embedding_norm = norm(emb + "LayerNorm", width)
        project = f"{prefix}.embeddings_project"  # ELECTRA with embeddings narrower than the hidden size
        self.embeddings_project = affine(project, hidden, width) if project + ".weight" in tensors else None
        self.padding_idx = config.pad_token_id if config.model_type in ROBERTA_LIKE else None

        def linear(names: list[str], shape: tuple[int, int]) -> EngineLinear:
            missing = next((n for n in names if f"{n}.weight" not in matrices), None)
            if missing:
                raise UserError(f"the model's pruned matrices lack {missing}.weight; save or export the model again")
            parts = [matrices[f"{n}.weight"] for n in names]
            for n, part in zip(names, parts):  # the kernels trust these sizes: a wrong one reads out of bounds
                if (part.out_features, part.in_features) != shape:
                    raise UserError(f"{n}.weight is {part.out_features} x {part.in_features}, but the model's "
                                    f"config.json makes it {shape[0]} x {shape[1]}")
            fused = concat_rows(parts) if len(parts) > 1 else parts[0]
            bias = torch.cat([tensor(f"{n}.bias", shape[0]) for n in names])
            sparse = engine == "sparse" or (engine == "auto" and runs_faster_sparse(fused))
            return EngineLinear(fused, bias, sparse)

        self.layers = []
        for i in range(config.num_hidden_layers):
            p = f"{prefix}.encoder.layer.{i}."
            self.layers.append(EngineLayer(
                qkv=linear([p + f"attention.self.{n}" for n in ("query", "key", "value")], (hidden, hidden)),
                attention_out=linear([p + "attention.output.dense"], (hidden, hidden)),
                attention_norm=norm(p + "attention.output.LayerNorm", hidden),
                ffn_up=linear([p + "intermediate.dense"], (config.intermediate_size, hidden)),
                ffn_down=linear([p + "output.dense"], (hidden, config.intermediate_size)),
                output_norm=norm(p + "output.LayerNorm", hidden)))
        if self.activation is None and (hidden // self.heads) % 8 == 0:  # erf GELU, heads the C attention takes
            for layer in self.layers:
                linears = (layer.qkv, layer.attention_out, layer.ffn_up, layer.ffn_down)
                if all(lin.sparse for lin in linears):
                    layer.one_call = c_layer(*(lin.matrix for lin in linears), layer.attention_norm,
                                             layer.output_norm)
        dense_name, self.head_activation, out_name = HEADS[config.model_type]
        if config.model_type == "bert":
            dense_name = f"{prefix}.{dense_name}"
        self.head_dense = affine(dense_name, hidden, hidden) if f"{dense_name}.weight" in tensors else None
        # an encoder alone (a sentence-embedding model) has no task head: it gives `encode`'s embeddings, not logits
        self.head_out = (affine(out_name, config.num_labels, hidden) if f"{out_name}.weight" in tensors else None)
        self.max_seq_length = position_count(config)  # a sentence model's loader sets its own
        self.encode_refusal = None  # why `encode` must refuse: set by the loader of a folder that pools no sentences
        self._outputs = threading.local()  # each calling thread its own buffers: calls may overlap (GIL released)
        self._sentence_tokenizer = None  # ((backend, length, side), a copy of the backend set so), made by encode
        # Attention in bfloat16 where the weights are int8: its error is of the same order as theirs (within the
        # int8 model's tolerance), and it is the engine's largest part that pruning does not shrink.
        self.attention_bf16 = any(m.scales is not None or m.block == 4 for m in matrices.values())
        self.eval()

    def summary(self) -> dict:
        linears = [lin for layer in self.layers
                   for lin in (layer.qkv, layer.attention_out, layer.ffn_up, layer.ffn_down)]
        sparse = [lin for lin in linears if lin.sparse]
        attention = f"bf16 on {kernels.bf16_products(self.hidden // self.heads)}" if self.attention_bf16 else "fp32"
        return {"kernel": kernels.KERNEL, "attention": attention,
                "matrices": len(linears), "sparse_matrices": len(sparse),
                "dense_matrices": len(linears) - len(sparse),
                "int8_block_matrices": sum(lin.matrix.block == 4 for lin in sparse),
                "threads": torch.get_num_threads()}

    def describe(self) -> str:
        s = self.summary()
        blocks = f" ({s['int8_block_matrices']} in int8 1x4 blocks)" if s["int8_block_matrices"] else ""
        return (f"sparse engine ({s['kernel']} kernel, {s['threads']} threads, attention in {s['attention']}): "
                f"{s['sparse_matrices']} of {s['matrices']} matrices run sparse{blocks}, {s['dense_matrices']} dense "
                f"(measured faster here)")

    def _buffer(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """Output buffers reused across layers and calls of one thread (allocated again only for a bigger batch)."""
        buffers = self._outputs.__dict__
        buffer = buffers.get(name)
        if buffer is None or buffer.numel() < rows * cols:
            buffer = buffers[name] = torch.empty(rows * cols, dtype=torch.float32)
        return buffer[: rows * cols].view(rows, cols)

    def _padded_attention(self, qkv, mask, index, out) -> torch.Tensor:
        """Attention through PyTorch's scaled_dot_product_attention, the packed tokens spread out to the
        padded batch and gathered back (left padding, or where the C kernel is not in use)."""
        batch, length = mask.shape
        if index is not None:
            spread = qkv.new_zeros(batch * length, qkv.shape[1])
            spread[index] = qkv
            qkv = spread
        q, k, v = qkv.view(batch, length, 3, self.heads, self.hidden // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if bool(mask.all()) else mask[:, None, None, :]
        attend = bf16_attention if self.attention_bf16 else F.scaled_dot_product_attention
        context = attend(q, k, v, attn_mask=attn_mask)
        context = context.transpose(1, 2).reshape(batch * length, self.hidden)
        return out.copy_(context if index is None else context[index])

    def _layer_in_steps(self, layer: EngineLayer, h: torch.Tensor, attend, out: torch.Tensor) -> torch.Tensor:
        """One encoder layer, a call per step (where a matrix runs dense, the activation is not erf GELU or the
        attention is PyTorch's): the same steps as `encoder_layer` takes in one call."""
        tokens, hidden = h.shape
        qkv_out, context_out, attention_out, attended_out, down = (
            self._buffer(name, tokens, width) for name, width in (
                ("qkv", 3 * hidden), ("context", hidden), ("attention_out", hidden), ("attended", hidden),
                ("ffn_down", hidden)))
        attended = layer.attention_out(attend(layer.qkv(h, qkv_out), context_out), attention_out)
        a = add_layernorm(attended, h, *layer.attention_norm, self.eps, attended_out)
        erf_gelu = self.activation is None  # fused into the kernels
        if not (erf_gelu and layer.ffn_up.sparse and layer.ffn_down.sparse
                and fused_ffn(a, layer.ffn_up.matrix, layer.ffn_down.matrix, down) is not None):
            up = layer.ffn_up(a, self._buffer("ffn_up", tokens, layer.ffn_up.out_features), gelu=erf_gelu)
            if not erf_gelu:
                self.activation(up)
            layer.ffn_down(up, down)
        return add_layernorm(down, a, *layer.output_norm, self.eps, out)

    def _embeddings(self, ids, token_types, positions) -> torch.Tensor:
        # into the reused buffers: on some machines fresh tensors of this size cost more in page faults than
        # the gathers themselves; summed as Hugging Face sums them, (word + token type) + position
        tokens, width = ids.shape[0], self.word.shape[1]
        x = torch.index_select(self.word, 0, ids, out=self._buffer("words", tokens, width))
        if self.token_type is not None:
            x += torch.index_select(self.token_type, 0, token_types, out=self._buffer("token_types", tokens, width))
        at = torch.index_select(self.position, 0, positions, out=self._buffer("positions", tokens, width))
        x = add_layernorm(x, at, *self.embedding_norm, self.eps, self._buffer("embedded", tokens, width))
        if self.embeddings_project is not None:
            x = F.linear(x, *self.embeddings_project)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool = True) -> SequenceClassifierOutput:
        with torch.inference_mode():
            return self._forward(input_ids, attention_mask, token_type_ids, output_hidden_states)

    def encode(self, sentences: list[str], batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Sentence embeddings (len(sentences), hidden) as sentence-transformers' mean pooling gives them: the mean
        of the last layer over each sentence's real tokens (at most `max_seq_length`), normalised to length 1. A
        model loaded from a folder must be a sentence model (its 1_Pooling/config.json says so); one built from a
        model object with `from_hf_model` is pooled so as asked."""
        if self.encode_refusal:
            raise UserError(self.encode_refusal)
        if self.tokenizer is None:
            raise UserError("encode needs the model's tokenizer: load the model with sparsebert.load_sparse(FOLDER)")
        if isinstance(sentences, str):
            raise TypeError("encode takes a list of sentences; for one, give [sentence]")
        out = np.empty((len(sentences), self.hidden), np.float32)
        for start in range(0, len(sentences), batch_size):
            batch = sentences[start:start + batch_size]
            # unpadded: the sentences' tokens go into the engine packed, as the tokenizer gives them
            ids, token_types = self._sentence_tokens([text.strip() for text in batch])  # as sentence-transformers
            lengths = np.fromiter(map(len, ids), np.int64, len(batch))
            if not lengths.all():
                raise UserError(f"sentence {start + int(np.argmin(lengths))} gives no tokens with this tokenizer "
                                "(it adds no special tokens): it has no mean to embed; leave it out")
            starts = np.zeros(len(batch) + 1, np.int32)
            np.cumsum(lengths, out=starts[1:])
            tokens = int(starts[-1])

            def packed(lists):
                return torch.from_numpy(np.fromiter(chain.from_iterable(lists), np.int64, tokens))

            first = self.padding_idx + 1 if self.padding_idx is not None else 0  # RoBERTa's positions
            positions = np.arange(first, first + tokens) - np.repeat(starts[:-1], lengths)
            with torch.inference_mode():
                h, _ = self._encoder(packed(ids), packed(token_types),
                                     torch.from_numpy(positions), torch.from_numpy(starts), None, False)
            pooled = np.add.reduceat(h.numpy(), starts[:-1], axis=0) / lengths[:, None].astype(np.float32)
            if normalize:  # as torch.nn.functional.normalize
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[start:start + len(batch)] = pooled
        return out

    def _sentence_tokens(self, sentences: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Each sentence's token ids and token type ids, truncated to `max_seq_length`, unpadded. A fast tokenizer's
        Rust backend is called directly (a copy of it, set once: the Python wrapper's checks cost more than
        tokenizing one short sentence); any other tokenizer through its wrapper."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            enc = self.tokenizer(sentences, truncation=True, max_length=self.max_seq_length,
                                 return_token_type_ids=True, return_attention_mask=False)
            return enc["input_ids"], enc["token_type_ids"]
        setting = (backend, self.max_seq_length, self.tokenizer.truncation_side)
        if self._sentence_tokenizer is None or self._sentence_tokenizer[0] != setting:
            copy = Tokenizer.from_str(backend.to_str())
            copy.no_padding()
            copy.enable_truncation(self.max_seq_length, direction=self.tokenizer.truncation_side)
            self._sentence_tokenizer = (setting, copy)
        encodings = self._sentence_tokenizer[1].encode_batch(sentences)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def _forward(self, input_ids, attention_mask, token_type_ids, output_hidden_states):
        """A Hugging Face classifier's forward: the batch's tokens packed (padding left out), then the encoder and
        the head on each sequence's first token."""
        if self.head_out is None:
            raise UserError("this model has no task head: it gives sentence embeddings (model.encode(sentences) or "
                            "sparsebert embed), not labels")
        batch, length = input_ids.shape
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.padding_idx is not None:
            real = input_ids != self.padding_idx
            positions = torch.cumsum(real, 1) * real + self.padding_idx
        else:
            positions = torch.arange(length).expand(batch, length)
        # The tokens the linear layers run on: the real ones, and the first of each sequence, which the
        # head reads (a Hugging Face model computes it even where it is padding).
        keep = mask.clone()
        keep[:, 0] = True
        padded = not bool(keep.all())
        index = keep.flatten().nonzero().squeeze(1) if padded else None

        def pack(t):
            return t.flatten()[index] if padded else t.flatten()

        # Sequences whose real tokens come first (right padding) are attended packed, as they are stored; others
        # (left padding) spread out to the padded batch.
        right_padded = bool((mask == keep).all()) and bool((mask[:, 1:] <= mask[:, :-1]).all())
        starts = torch.cat([keep.new_zeros(1, dtype=torch.int32), torch.cumsum(keep.sum(1), 0, dtype=torch.int32)])
        h, states = self._encoder(pack(input_ids), pack(token_type_ids), pack(positions), starts,
                                  None if right_padded else (mask, index), output_hidden_states)
        pooled = h[starts[:-1]]
        if self.head_dense is not None:
            pooled = self.head_activation(F.linear(pooled, *self.head_dense))
        logits = F.linear(pooled, *self.head_out)
        hidden_states = None
        if states is not None:
            def unpack(s):
                full = s.new_zeros(batch * length, self.hidden)
                full[index if padded else slice(None)] = s
                return full.view(batch, length, self.hidden)

            hidden_states = tuple(unpack(s) for s in states)
        return SequenceClassifierOutput(logits=logits, hidden_states=hidden_states)

    def _encoder(self, ids, token_types, positions, starts, padding, output_hidden_states):
        """The encoder on packed sequences (sequence b: rows starts[b] to starts[b + 1] of ids, token_types and
        positions; starts int32); `padding` (mask, index of the packed tokens in the padded batch) where they must be
        spread out to be attended, else None. Returns the last hidden state (tokens, hidden) and, if asked, every
        layer's."""
        h = self._embeddings(ids, token_types, positions)
        lengths = starts[1:] - starts[:-1]
        longest = int(lengths.max())

        def attend(qkv, out):  # packed where the C kernel can, else PyTorch's on the padded batch
            if padding is None and packed_attention(qkv, starts, self.heads, out, longest,
                                                    self.attention_bf16) is not None:
                return out
            return self._padded_attention(qkv, *(padding or right_padding(lengths)), out)

        # every layer writes into the same buffer: each layer's input has been read before it is written
        hidden_out = self._buffer("hidden", h.shape[0], self.hidden)
        states = [h] if output_hidden_states else None
        for layer in self.layers:
            in_one_call = layer.one_call is not None and padding is None and encoder_layer(
                h, layer.one_call, starts, longest, self.heads, self.attention_bf16, self.eps, hidden_out) is not None
            h = hidden_out if in_one_call else self._layer_in_steps(layer, h, attend, hidden_out)
            if states is not None:
                states.append(h.clone())
        return h, states


def right_padding(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, index of the packed tokens in the batch) for sequences of these lengths padded on the right."""
    mask = torch.arange(int(lengths.max())) < lengths[:, None]
    return mask, mask.flatten().nonzero().squeeze(1)


def from_hf_model(model, tokenizer=None, values: str = "fp32", engine: str = "auto") -> SparseModel:
    """The engine for a Hugging Face classifier (its target linears in CSR form, values fp32 or int8)."""
    from .format import named_state

    state, targets = named_state(model)
    state = {k: v.float() for k, v in state.items()}
    matrices = to_matrices({name: state[name] for name in targets}, values)
    return SparseModel(model.config, state, matrices, tokenizer, engine)


def position_count(config) -> int:
    """The positions a model's embeddings hold for tokens (RoBERTa's start after padding_idx)."""
    return config.max_position_embeddings - (config.pad_token_id + 1 if config.model_type in ROBERTA_LIKE else 0)
