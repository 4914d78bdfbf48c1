"""Padding-free attention for the train stage: `attn_implementation="varlen_sdpa"`.

On GPU, flash-attn's varlen kernel attends within each packed document. CPU ranks (and GPUs without
flash-attn) have no such kernel; these functions give SDPA the same per-document semantics, so the
padding-free path trains the same model everywhere.
"""

from __future__ import annotations

from typing import Any


def varlen_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple:
    """Padding-free attention on CPU: SDPA per packed document (like flash-attn's varlen kernel on GPU).

    Plain SDPA on a padding-free row attends over the whole flattened batch under a block-diagonal mask:
    quadratic in the row, most of it masked. Here each document (from the collator's `cu_seq_lens_q`, or
    the restarts of `position_ids`) gets its own causal SDPA, so cost is the sum of the squares of the
    document lengths. Same loss and gradients as SDPA with the mask (checked); a padded batch goes to SDPA.
    """
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    pos = kwargs.get("position_ids")
    if cu is None and pos is not None and attention_mask is None and query.shape[2] == key.shape[2]:
        starts = (pos[0] == 0).nonzero().flatten()
        cu = torch.cat([starts, torch.tensor([pos.shape[-1]], device=starts.device)])
    if cu is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = cu.tolist()
    gqa = query.shape[1] != key.shape[1]
    with _sdpa_backends(query.device.type):
        outs = [
            F.scaled_dot_product_attention(
                query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=kwargs.get("scaling"),
                enable_gqa=gqa,
            )
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
            if e > s
        ]  # fmt: skip
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def varlen_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0, **kwargs: Any
) -> Any:
    """No mask for one unpadded row without a cache: `varlen_sdpa` finds the documents itself.

    Building the block-causal mask of a packed row (which `varlen_sdpa` never reads) cost ~2 ms a step on
    the toy student, 5% of its step; every other case gets SDPA's mask.
    """
    from transformers.masking_utils import sdpa_mask

    square = q_length == kv_length and q_offset == 0 and kv_offset == 0
    if batch_size == 1 and square and kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset, **kwargs)


def _sdpa_backends(device_type: str) -> Any:
    """On GPU, flash first: cuDNN's SDPA builds a plan per new sequence length, and packed documents all
    differ in length, so it spent ~2.5 ms of CPU per call (measured on an H200: 7x the GPU time)."""
    import contextlib

    if device_type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def register_varlen_sdpa() -> None:
    """Makes `attn_implementation="varlen_sdpa"` loadable (SDPA's masks where a batch is padded)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register("varlen_sdpa", varlen_sdpa)
    AttentionMaskInterface.register("varlen_sdpa", varlen_mask)
