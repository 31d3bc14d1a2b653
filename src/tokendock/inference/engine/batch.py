"""A llama.cpp batch over numpy buffers: one `llama_decode` call's tokens, positions, sequence
ids and which rows want logits.

llama-cpp-python's `llama_batch_init` allocates one seq-id array per row, which must then be
written one ctypes call at a time; here every field is a numpy array the struct points into, so
a prompt chunk is written with slice assignments. (Never passed to `llama_batch_free`: the
memory is ours.)
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np


class Batch:
    def __init__(self, llama_cpp: Any, capacity: int):
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        int_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        # seq_id[i] points at seq[i]: each row belongs to exactly one sequence.
        self._seq_ptrs = (int_p * capacity)(
            *(ctypes.cast(base + 4 * i, int_p) for i in range(capacity))
        )
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(int_p),
            embd=None,
            pos=self.pos.ctypes.data_as(int_p),
            n_seq_id=self.n_seq_id.ctypes.data_as(int_p),
            seq_id=ctypes.cast(self._seq_ptrs, ctypes.POINTER(int_p)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self.size = 0

    @property
    def room(self) -> int:
        return self.capacity - self.size

    def clear(self) -> None:
        self.size = 0

    def add(self, seq: int, tokens: Sequence[int], start: int, *, logits: str) -> int:
        """Rows for `tokens` of sequence `seq` at positions start…; `logits`: "none", "last" or
        "all". Returns the first row's index."""
        i, n = self.size, len(tokens)
        end = i + n
        self.token[i:end] = tokens
        self.pos[i:end] = np.arange(start, start + n, dtype=np.int32)
        self.seq[i:end] = seq
        self.logits[i:end] = 1 if logits == "all" else 0
        if logits == "last" and n:
            self.logits[end - 1] = 1
        self.size = end
        return i

    def ready(self) -> Any:
        self.struct.n_tokens = self.size
        return self.struct
