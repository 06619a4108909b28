"""The size of a model as Deep Compression counts it (Han et al., ICLR 2016, sections 2-4): each conv/linear
weight tensor stored sparse with relative indices, its non-zero values as indices into a per-layer codebook,
both index streams Huffman-coded, the codebooks as 32-bit floats; every other float tensor (biases, batch
norm) at 32 bits. Beside it, the zip (deflate) sizes a device downloads are measured on real files.

The storage format, per layer (the weight tensor flattened in PyTorch's order):

- each non-zero is an entry (gap, code): ``gap`` = distance from the previous entry (1..2**b, stored as
  gap - 1 in b bits), ``code`` = its value's index in the layer's codebook (its distinct non-zero values);
  a run of zeros longer than 2**b is bridged by filler entries (gap 2**b, the extra code "zero"), as in the
  paper's Figure 2; b is chosen per layer (1..8 bits), the cheapest after coding;
- a layer with few zeros is cheaper dense: codes only (zero is then one more codebook value), no positions; a
  layer with more distinct values than sharing would leave (not clustered) is counted as raw 32-bit floats;
- both streams Huffman-coded, each with its code table (one byte per symbol of its alphabet: the canonical
  Huffman code lengths), the codebook at 32 bits per value.

Written here, not taken from a library: nothing in the pinned set counts this format (zlib's deflate is a
byte-level LZ77 + Huffman coder, which is what the zip sizes measure). The Huffman code lengths come from
the textbook heap construction; ``huffman_lengths`` is checked against Kraft's equality and a known case in
tests/pipeline/test_cluster.py.
"""

from __future__ import annotations

import heapq
import io
import zipfile

import numpy as np
import torch
from torch import nn

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
MAX_POSITION_BITS = 8
FLOAT_BITS = 32


def huffman_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Optimal prefix-code length of each symbol with a non-zero count (a lone symbol gets 1 bit)."""
    items = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items())) if c > 0]
    if len(items) == 1:
        return {items[0][2][0]: 1}
    lengths = {s: 0 for _, _, (s,) in items}
    heapq.heapify(items)
    tie = len(items)
    while len(items) > 1:
        c1, _, a = heapq.heappop(items)
        c2, _, b = heapq.heappop(items)
        for s in a + b:  # every symbol under the merged node moves one level deeper
            lengths[s] += 1
        heapq.heappush(items, (c1 + c2, tie, a + b))
        tie += 1
    return lengths


def huffman_bits(symbols: np.ndarray) -> tuple[int, int]:
    """(bits of the Huffman-coded stream, bits of its code table: one byte per distinct symbol)."""
    if symbols.size == 0:
        return 0, 0
    values, counts = np.unique(symbols, return_counts=True)
    lengths = huffman_lengths(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    payload = int(sum(lengths[v] * c for v, c in zip(values.tolist(), counts.tolist(), strict=True)))
    return payload, 8 * len(values)


def sparse_entries(flat: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps - 1, is_filler) of the relative-index entries of ``flat`` with ``bits``-bit gaps: one entry per
    non-zero, plus a filler wherever the distance to the previous entry exceeds 2**bits."""
    nz = np.flatnonzero(flat)
    span = 1 << bits
    gaps = np.diff(np.concatenate([[-1], nz]))  # >= 1
    fillers = (gaps - 1) // span
    total = int(len(nz) + fillers.sum())
    is_filler = np.zeros(total, bool)
    stored = np.full(total, span - 1, np.int64)  # a filler's gap is the full span
    ends = np.cumsum(fillers + 1) - 1  # the position of each non-zero's own entry
    stored[ends] = gaps - fillers * span - 1
    is_filler[:] = True
    is_filler[ends] = False
    return stored, is_filler


def code_layer(w: np.ndarray) -> dict:
    """One weight tensor in Deep Compression's format (the cheaper of sparse and dense), with its parts."""
    flat = np.ascontiguousarray(w, np.float32).reshape(-1)
    codebook, codes = np.unique(flat[flat != 0], return_inverse=True)
    nnz = int(codes.size)
    row = {"weights": int(flat.size), "nonzero": nnz, "clusters": int(codebook.size)}
    # dense: every weight is a code (zero one more value when there are zeros)
    dense_codes = np.unique(flat, return_inverse=True)[1]
    payload, table = huffman_bits(dense_codes)
    book = FLOAT_BITS * (codebook.size + int(nnz < flat.size))
    best = {"layout": "dense", "code_bits": payload + table, "position_bits": 0, "gap_bits": None,
            "codebook_bits": book, "fillers": 0}
    raw = {"layout": "float32", "code_bits": FLOAT_BITS * flat.size, "position_bits": 0, "gap_bits": None,
           "codebook_bits": 0, "fillers": 0}  # an unclustered layer: its floats as they are
    best = raw if _total(raw) < _total(best) else best
    for bits in range(1, MAX_POSITION_BITS + 1):
        if nnz == flat.size:
            break
        gaps, filler = sparse_entries(flat, bits)
        entry_codes = np.full(gaps.size, codebook.size, np.int64)  # "zero", the fillers' code
        entry_codes[~filler] = codes
        c_payload, c_table = huffman_bits(entry_codes)
        g_payload, g_table = huffman_bits(gaps)
        cand = {"layout": "sparse", "code_bits": c_payload + c_table, "position_bits": g_payload + g_table,
                "gap_bits": bits, "codebook_bits": FLOAT_BITS * codebook.size, "fillers": int(filler.sum())}
        if _total(cand) < _total(best):
            best = cand
    row.update(best)
    row["bytes"] = (_total(best) + 7) // 8
    row["bits_per_weight"] = round(_total(best) / max(flat.size, 1), 3)
    return row


def _total(part: dict) -> int:
    return int(part["code_bits"] + part["position_bits"] + part["codebook_bits"])


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def deep_compression_size(model: nn.Module) -> dict:
    """Bytes of ``model`` in Deep Compression's format, against its FP32 size (4 bytes per float), with
    the per-layer breakdown. Buffers that inference does not read (``num_batches_tracked``) are left out."""
    coded = {f"{n}.weight" for n, _ in weight_layers(model)}
    layers = {n: code_layer(m.weight.detach().cpu().numpy()) for n, m in weight_layers(model)}
    other = sum(t.numel() for k, t in model.state_dict().items()
                if k not in coded and t.is_floating_point())
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    total = sum(r["bytes"] for r in layers.values()) + other * FLOAT_BITS // 8
    fp32 = floats * FLOAT_BITS // 8
    return {"bytes": int(total), "fp32_bytes": int(fp32), "ratio": round(fp32 / total, 2) if total else None,
            "coded_weight_bytes": int(sum(r["bytes"] for r in layers.values())),
            "other_float_bytes": int(other * FLOAT_BITS // 8), "layers": layers}


def zipped_fp32_bytes(model: nn.Module) -> int:
    """Size of the float32 state dict after zip (deflate) compression."""
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("weights.pt", raw.getvalue())
    return len(out.getvalue())
