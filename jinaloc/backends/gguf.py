"""GGUF backend: llama.cpp through llama-cpp-python's low-level API, one model per task file.

Jina ships one GGUF per task (the LoRA adapter is merged), so each task is its own llama.cpp
model. Models open on first use of their task and stay open: switching back is free.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals

from ..errors import JinalocError
from ..registry import ModelSpec
from .base import Backend
from .threads import default_threads

log = logging.getLogger("jinaloc")
llama_log = logging.getLogger("jinaloc.llama")  # llama.cpp's own chatter, at debug level

ARCHITECTURES = ("eurobert", "qwen3")
POOLING_LAST = 3
# Inputs up to LONG_TOKENS use exact attention (F32 scores, O(n^2) memory: 13 MB for nano at
# 512 tokens, 3 GB at 8192); longer ones run alone with flash attention (O(n) memory, K/V
# rounded to F16: ~6e-4 on the F32 fixtures).
LONG_TOKENS = 512
# Short inputs are packed into one decode up to this many tokens; llama.cpp masks the other
# sequences, so packed equals one-by-one (1e-6 on the fixtures). Measured on full-size
# random-weight F16 models, 1 thread, CPU time: 64 x 12-token inputs packed by 128 were 14%
# (nano) and 40% (small) faster than one by one, by 512 only 0% / 23%; 16 x 128 tokens packed
# by 512 were 21% / 6% slower, since masked attention and llama.cpp's mask fill still cost
# (sum of lengths)^2. On the tiny fixtures a budget of 128 is even, 512 is 35% slower.
PACK_TOKENS = 128
MAX_SEQS = llama_cpp.llama_max_parallel_sequences()
# Smallest context created: tiny contexts would only be re-created at once.
MIN_CONTEXT = 64
# KV cache of the exact-attention context: F32. F16 moves small's F32-fixture vectors by 3e-4,
# F32 by 4e-7; it costs +60 MB for the real small at 512 tokens and no time (measured: 9%
# faster on a full-size small, within noise). The flash-attention context
# keeps llama.cpp's F16 (flash attention rounds K/V to F16 anyway; F32 there gains nothing).
F32_KV = 0  # GGML_TYPE_F32


# --- llama.cpp logging: chatter goes to debug, errors become part of our exceptions ---

_errors: list[str] | None = None  # collects error lines inside _guard()


# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line.
# (llama-cpp-python's own callback maps 3 to ERROR, hence the pooling warning it prints.)
_ERROR, _CONT = 4, 5
_last_level = 0


@llama_cpp.llama_log_callback
def _on_log(level, text, _user_data):
    global _last_level
    msg = text.decode("utf-8", "replace").rstrip()
    if level == _CONT:
        level = _last_level
    _last_level = level
    if level == _ERROR and msg:
        if _errors is not None:
            _errors.append(msg)
        else:
            log.error("llama.cpp: %s", msg)
    elif msg:
        llama_log.debug("%s", msg)


_backend_ready = False


def _init_llama() -> None:
    """Route llama.cpp's log (which llama-cpp-python prints to stderr) through logging."""
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_on_log, None)
        llama_cpp.llama_backend_init()
        _backend_ready = True


@contextmanager
def _guard(what: str):
    """Turn a failing llama.cpp call into a one-line JinalocError with its error lines."""
    global _errors
    _errors = []
    try:
        yield
    except (ValueError, RuntimeError) as e:
        detail = "; ".join(m for m in _errors if m) or str(e)
        raise JinalocError(f"{what}: {detail}") from None
    else:
        for msg in _errors:  # the call worked: still show what llama.cpp complained about
            log.warning("llama.cpp: %s", msg)
    finally:
        _errors = None


# --- GGUF header: checked in Python so that a wrong file never reaches the C loader ---

# GGUF value types 0-7 and 10-12 are fixed-size scalars (struct formats); 8 string, 9 array.
_SCALARS = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True))
_STRING, _ARRAY = 8, 9


def _read(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("file ends early")
    return data


def _read_str(f) -> bytes:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > 1 << 24:  # a corrupt length must not become a huge allocation
        raise EOFError(f"string of {n} bytes")
    return _read(f, n)


def _value(f, vtype: int):
    """A scalar or string value; arrays are skipped (None)."""
    if vtype == _STRING:
        return _read_str(f).decode("utf-8", "replace")
    if vtype == _ARRAY:
        etype, count = struct.unpack("<IQ", _read(f, 12))
        if etype in (_STRING, _ARRAY):
            for _ in range(count):
                _value(f, etype)
        else:
            f.seek(count * struct.calcsize(_SCALARS[etype]), os.SEEK_CUR)
        return None
    fmt = "<" + _SCALARS[vtype]
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def gguf_header(path: Path, architectures: tuple[str, ...] = ARCHITECTURES) -> dict:
    """Architecture, hidden size and training context from a GGUF header (JinalocError if
    it is no GGUF or of another architecture). The tokenizer-only llama.cpp load used for
    tokenizing reports neither."""
    found: dict = {}
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise JinalocError(f"{path}: not a GGUF file")
            _version, _n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            for _ in range(n_kv):
                key = _read_str(f).decode("utf-8", "replace")
                (vtype,) = struct.unpack("<I", _read(f, 4))
                found[key] = _value(f, vtype)
                arch = found.get("general.architecture")
                if {f"{arch}.embedding_length", f"{arch}.context_length"} <= found.keys():
                    break  # the rest is mostly the vocabulary
    except FileNotFoundError:
        raise JinalocError(f"GGUF file not found: {path}") from None
    except (OSError, EOFError, KeyError, struct.error) as e:
        raise JinalocError(
            f"{path}: unreadable or corrupt GGUF ({e or type(e).__name__})"
        ) from None
    arch = found.get("general.architecture")
    if not isinstance(arch, str):
        raise JinalocError(f"{path}: GGUF has no general.architecture")
    if arch not in architectures:
        what = "a Jina v5 model" if architectures == ARCHITECTURES else "supported here"
        raise JinalocError(
            f"{path.name}: GGUF architecture {arch!r} is not {what}"
            f" (expected {' or '.join(architectures)})"
        )
    try:
        return {
            "architecture": arch,
            "n_embd": int(found[f"{arch}.embedding_length"]),
            "n_ctx_train": int(found[f"{arch}.context_length"]),
        }
    except (KeyError, TypeError, ValueError):
        raise JinalocError(f"{path}: GGUF lacks {arch}.embedding_length/context_length") from None


# --- models ---


def _meta(model: _internals.LlamaModel, key: str) -> str | None:
    buf = (llama_cpp.ctypes.c_char * 256)()
    n = llama_cpp.llama_model_meta_val_str(model.model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def load_model(
    path: Path | None, vocab_only: bool, architectures: tuple[str, ...] = ARCHITECTURES
) -> tuple[_internals.LlamaModel, dict]:
    """A llama.cpp model (vocab_only: tokenizer only, no weights) and its header facts."""
    if path is None:
        raise JinalocError("no GGUF file for this task")
    path = Path(path)
    info = gguf_header(path, architectures)
    _init_llama()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    # verbose=True only means "don't redirect fd 2 while loading": our log callback is quiet.
    with _guard(f"cannot load {path}"):
        model = _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
    info["n_vocab"] = model.n_vocab()
    info["pooling"] = _meta(model, f"{info['architecture']}.pooling_type")
    return model, info


def _load(path: Path | None, vocab_only: bool) -> tuple[_internals.LlamaModel, dict]:
    """An embedding model: its declared pooling type is overridden by last-token pooling."""
    model, info = load_model(path, vocab_only)
    # Jina's GGUFs may lack pooling_type; LAST is passed explicitly either way.
    if info["pooling"] not in (None, str(POOLING_LAST)):
        name = Path(path).name
        log.warning("%s declares pooling type %s; using last-token pooling", name, info["pooling"])
    return model, info


class Context:
    """A llama.cpp context and batch for one attention kind, grown on demand.

    `pooling`: the pooling type whose per-sequence output `run` returns (LAST for the
    embedders, RANK for a reranker's cls head), or None for the last token's logits."""

    def __init__(
        self,
        model: _internals.LlamaModel,
        threads: int,
        flash: bool,
        pooling: int | None = POOLING_LAST,
    ):
        self.model = model
        self.threads = threads
        self.flash = flash
        self.pooling = pooling
        self.ctx: _internals.LlamaContext | None = None
        self.batch: _internals.LlamaBatch | None = None
        self.tokens = 0  # tokens one decode may hold (n_batch == n_ubatch)
        self.seqs = 0  # sequences one decode may hold

    def ensure(self, n_tokens: int, limit: int) -> None:
        """Sized to the next power of two >= the largest decode (at least MIN_CONTEXT, at
        most `limit`), re-created larger when a bigger decode arrives, never shrunk; the
        weights are never reloaded. n_ctx == n_batch == n_ubatch: the encoder (nano) must
        see a whole decode in one ubatch, a causal model (small) a whole one in its KV cache."""
        if n_tokens <= self.tokens:
            return
        size = max(n_tokens, min(max(MIN_CONTEXT, 1 << (n_tokens - 1).bit_length()), limit))
        self.close()
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = p.n_batch = p.n_ubatch = size
        p.n_seq_max = min(size, MAX_SEQS)
        p.kv_unified = True
        p.n_threads = p.n_threads_batch = self.threads
        p.embeddings = self.pooling is not None
        if self.pooling is not None:
            p.pooling_type = self.pooling
        p.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.flash
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        p.no_perf = True
        if not self.flash:
            p.type_k = p.type_v = F32_KV
        with _guard(f"cannot create a llama.cpp context of {size} tokens"):
            self.ctx = _internals.LlamaContext(model=self.model, params=p, verbose=False)
            self.batch = _internals.LlamaBatch(n_tokens=size, embd=0, n_seq_max=1, verbose=False)
        c = self.ctx.ctx
        # llama.cpp may adjust what was asked for: trust what it reports.
        self.tokens = min(size, llama_cpp.llama_n_batch(c), llama_cpp.llama_n_ubatch(c))
        if self.ctx.memory is not None:  # causal: the KV cache must hold the decode too
            self.tokens = min(self.tokens, llama_cpp.llama_n_ctx(c))
        self.seqs = llama_cpp.llama_n_seq_max(c)

    def _fill(self, parts: list[tuple[int, list[int], int]], outputs: str) -> list[int]:
        """The batch holds each (seq id, tokens, first position); `outputs`: "all" tokens,
        each part's "last" or "none". Returns the batch index of each part's last token."""
        b = self.batch.batch
        n, ends = 0, []
        for sid, ids, start in parts:
            for k, token in enumerate(ids):
                b.token[n], b.pos[n], b.n_seq_id[n] = token, start + k, 1
                b.seq_id[n][0] = sid
                b.logits[n] = outputs == "all"
                n += 1
            b.logits[n - 1] = outputs != "none"
            ends.append(n - 1)
        b.n_tokens = n
        return ends

    def _decode(self, outputs: bool = True) -> None:
        """`outputs` False: a pooled context decodes without any output (llama.cpp makes every
        token an output while embeddings are on), so it computes no output head."""
        c = self.ctx.ctx
        quiet = not outputs and self.pooling is not None
        with _guard("llama.cpp decode failed"):
            if quiet:
                llama_cpp.llama_set_embeddings(c, False)
            try:
                self.ctx.decode(self.batch)
            finally:
                if quiet:
                    llama_cpp.llama_set_embeddings(c, True)

    def share_prefix(self, ids: list[int]) -> None:
        """Decode `ids` once as the start of every sequence (causal models): `run(...,
        start=len(ids))` then decodes only what follows it."""
        if len(ids) > self.tokens or self.ctx.memory is None:
            raise JinalocError(f"internal: a prefix of {len(ids)} tokens cannot be shared")
        self.ctx.kv_cache_clear()
        self._fill([(0, ids, 0)], "none")
        self._decode(outputs=False)
        for sid in range(1, self.seqs):  # tags the same KV cells, copies nothing
            self.ctx.kv_cache_seq_cp(0, sid, -1, -1)

    def run(self, seqs: list[list[int]], width: int, start: int = 0) -> np.ndarray:
        """Per sequence, its pooled output (`width` floats) or, with pooling None, its last
        token's logits (`width` = n_vocab); the sequences are decoded together, each with
        its own seq id. `start`: they continue the prefix that share_prefix() decoded."""
        total = sum(len(s) for s in seqs)
        # llama.cpp asserts (SIGABRT) on these, so they are checked here first.
        if start + total > self.tokens or len(seqs) > self.seqs:
            raise JinalocError(f"internal: {total} tokens exceed the context ({self.tokens})")
        if start:  # drop the previous decode's tokens, keep the shared prefix
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, -1, start, -1)
        else:
            self.ctx.kv_cache_clear()
        parts = [(sid, ids, start) for sid, ids in enumerate(seqs)]
        if self.pooling is not None and self.ctx.memory is not None:
            # Causal: all but each sequence's last token go first, without outputs. In
            # embedding mode llama.cpp makes every token an output and runs the output head
            # (small's tied 151936 x 1024 lm_head, 22% of its time) and the last layer on
            # each; the KV cache holds the same values either way.
            body = [(sid, ids[:-1], start) for sid, ids, start in parts if len(ids) > 1]
            if body:
                self._fill(body, "none")
                self._decode(outputs=False)
            parts = [(sid, ids[-1:], start + len(ids) - 1) for sid, ids, start in parts]
        ends = self._fill(parts, "all" if self.pooling is not None else "last")
        self._decode()
        out = np.empty((len(seqs), width), np.float32)
        for i, end in enumerate(ends):
            if self.pooling is None:
                ptr = llama_cpp.llama_get_logits_ith(self.ctx.ctx, end)
            else:
                ptr = self.ctx.get_embeddings_seq(i)
            if not ptr:
                raise JinalocError("llama.cpp returned no output for a sequence")
            out[i] = np.ctypeslib.as_array(ptr, shape=(width,))
        return out

    def close(self) -> None:
        for obj in (self.batch, self.ctx):
            if obj is not None:
                obj.close()
        self.ctx = self.batch = None
        self.tokens = self.seqs = 0


class _TaskModel:
    """One task's weights and its two contexts: `short` (exact attention, several inputs per
    decode) and `long` (flash attention, one input per decode)."""

    def __init__(self, model: _internals.LlamaModel, threads: int):
        self.model = model
        self.short = Context(model, threads, flash=False)
        self.long = Context(model, threads, flash=True)

    def close(self) -> None:
        self.short.close()
        self.long.close()
        self.model.close()


class GGUFBackend(Backend):
    name = "gguf"

    def __init__(
        self,
        path_for: Callable[[str], Path],
        spec: ModelSpec,
        threads: int | None = None,
        pack_tokens: int = PACK_TOKENS,
        long_tokens: int = LONG_TOKENS,
        task: str | None = None,
    ):
        self.path_for = path_for
        self.spec = spec
        # The task whose file gives the tokenizer before any is used: the caller's, so that
        # a classify-only user never needs the retrieval file.
        self.first_task = task or spec.tasks[0]
        self.threads = threads or default_threads()
        self.pack_tokens = pack_tokens  # token budget of a packed decode (0: no packing)
        self.long_tokens = long_tokens  # longer inputs use flash attention
        self._models: dict[str, _TaskModel] = {}
        self._vocab: _internals.LlamaModel | None = None  # the tokenizer
        self._info: dict = {}  # n_embd, n_ctx_train, n_vocab of that same file
        self._vocab_only: _internals.LlamaModel | None = None

    # Tokenizer and shapes come from the first file opened (every task file has the same
    # vocab). Before any task is used, that is `first_task`'s file, opened vocab-only.
    def _tokenizer(self) -> _internals.LlamaModel:
        if self._vocab is None:
            self._vocab_only, self._info = _load(self.path_for(self.first_task), True)
            self._vocab = self._vocab_only
        return self._vocab

    @property
    def hidden_size(self) -> int:
        self._tokenizer()
        return self._info["n_embd"]

    @property
    def max_tokens(self) -> int:
        self._tokenizer()
        n = self._info["n_ctx_train"]
        return min(n, self.spec.max_tokens) if self.spec.max_tokens else n

    @property
    def loaded_tasks(self) -> list[str]:
        return list(self._models)

    def context_tokens(self, task: str) -> dict[str, int]:
        """Tokens one decode of each of this task's contexts holds (0: not created yet)."""
        tm = self._models.get(task)
        return {"short": tm.short.tokens if tm else 0, "long": tm.long.tokens if tm else 0}

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        vocab = self._tokenizer()
        # The GGUF says which specials llama.cpp adds; cut the text, never the specials.
        head = [vocab.token_bos()] if vocab.add_bos_token() else []
        tail = [vocab.token_eos()] if vocab.add_eos_token() else []
        room = self.max_tokens - len(head) - len(tail)
        ids, lengths = [], []
        for text in texts:
            # special=True: special-token text is parsed as in the reference HF tokenizer.
            body = vocab.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True)
            ids.append(head + body[:room] + tail)
            lengths.append(len(head) + len(body) + len(tail))
        return ids, lengths

    def _task_model(self, task: str) -> _TaskModel:
        if task not in self._models:
            path = self.path_for(task)
            model, info = _load(path, vocab_only=False)
            if self._vocab is None:
                self._vocab, self._info = model, info
            elif any(info[k] != self._info[k] for k in ("n_embd", "n_vocab", "architecture")):
                model.close()
                raise JinalocError(f"{Path(path).name} does not match the model's other tasks")
            self._models[task] = _TaskModel(model, self.threads)
        return self._models[task]

    def _packs(self, lengths: list[int]) -> list[list[int]]:
        """Indices of the inputs within the pack budget, grouped in order up to it."""
        budget = min(self.pack_tokens, self.long_tokens)
        packs: list[list[int]] = []
        used = 0
        for i, n in enumerate(lengths):
            if n > self.long_tokens:
                continue
            if packs and used + n <= budget and len(packs[-1]) < MAX_SEQS:
                packs[-1].append(i)
                used += n
            else:
                packs.append([i])
                used = n
        return packs

    def embed_tokens(self, batch: list[list[int]], task: str) -> np.ndarray:
        n_embd = self.hidden_size
        if not batch:
            return np.zeros((0, n_embd), np.float32)
        lengths = [len(s) for s in batch]
        if min(lengths) == 0:
            raise JinalocError("cannot embed an empty token sequence")
        if max(lengths) > self.max_tokens:
            raise JinalocError(f"input of {max(lengths)} tokens exceeds {self.max_tokens}")
        if min(map(min, batch)) < 0 or max(map(max, batch)) >= self._info["n_vocab"]:
            raise JinalocError(f"token id outside the vocabulary (0..{self._info['n_vocab'] - 1})")
        tm = self._task_model(task)
        out = np.empty((len(batch), n_embd), np.float32)
        packs = self._packs(lengths)
        if packs:
            tm.short.ensure(max(sum(lengths[i] for i in p) for p in packs), self.long_tokens)
        for p in packs:
            out[p] = tm.short.run([batch[i] for i in p], n_embd)
        long = [i for i, n in enumerate(lengths) if n > self.long_tokens]
        if long:
            tm.long.ensure(max(lengths[i] for i in long), self.max_tokens)
        for i in long:
            out[i] = tm.long.run([batch[i]], n_embd)[0]
        return out

    def close(self) -> None:
        for tm in self._models.values():
            tm.close()
        if self._vocab_only is not None:
            self._vocab_only.close()
        self._models.clear()
        self._vocab = self._vocab_only = None
        self._info = {}
