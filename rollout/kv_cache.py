"""A KV cache allocated once for a whole generation, whose rows can be copied out to samples and dropped.

transformers' `DynamicCache` concatenates each step's keys and values onto the cache, so a decode of T tokens
copies the cache T times. `PreallocatedLayer` writes each step into a buffer sized for the prompt plus the
largest completion and hands attention a view of the filled part; it is still a `DynamicLayer` to the rest of
transformers (masks, sequence length), so any Hugging Face decoder runs with it unchanged. Selecting batch rows
(`Cache.batch_select_indices`) both expands a prompt's cache to its samples (repeated indices) and compacts it to
the rows still decoding.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, dim = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(rows, heads, self.capacity, dim)
        self.value_buffer = value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1])
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; this step needs {end}")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) the rows `indices`, copying only the filled part of the buffer."""
        if self.is_initialized:
            length = self.keys.shape[-2]
            self.key_buffer = _select_rows(self.key_buffer, self.keys, indices)
            self.value_buffer = _select_rows(self.value_buffer, self.values, indices)
            self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            rows = torch.arange(self.key_buffer.shape[0], device=self.device)
            self.batch_select_indices(rows.repeat_interleave(repeats))


def _select_rows(buffer: torch.Tensor, filled: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    selected = buffer.new_empty(len(indices), *buffer.shape[1:])
    selected[:, :, :filled.shape[-2]] = filled[indices]
    return selected


def preallocated_cache(num_layers: int, capacity: int) -> Cache:
    """A cache for `num_layers` decoder layers holding up to `capacity` positions per row."""
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(num_layers)])
