"""`cluster` (Deep Compression's weight sharing) and the size accounting beside it (edgeship.pipeline.coding): the
Huffman lengths are optimal, the sparse format decodes back, the pass leaves at most 2**bits shared values per
layer with the pruned zeros in place, and the clustered model exports to every format with its shared values
intact and a smaller zip."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeship.models.graph import fold_batch_norm
from edgeship.pipeline.cluster import Cluster, ClusterConfig, initial_centroids
from edgeship.pipeline.coding import code_layer, deep_compression_size, huffman_bits, huffman_lengths, sparse_entries
from edgeship.pipeline.sparsify import Sparsify, SparsifyConfig
from edgeship.pipeline.training import evaluate


def test_huffman_lengths_textbook_case():
    """CLRS's example (a:45 b:13 c:12 d:16 e:9 f:5): lengths 1,3,3,3,4,4, 224 bits, a complete code."""
    counts = {0: 45, 1: 13, 2: 12, 3: 16, 4: 9, 5: 5}
    lengths = huffman_lengths(counts)
    assert lengths == {0: 1, 1: 3, 2: 3, 3: 3, 4: 4, 5: 4}
    assert sum(2.0 ** -n for n in lengths.values()) == 1.0  # Kraft's equality
    symbols = np.repeat(list(counts), list(counts.values()))
    assert huffman_bits(symbols) == (224, 8 * 6)
    assert huffman_lengths({7: 3}) == {7: 1}


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_sparse_entries_decode_back(bits):
    rng = np.random.default_rng(bits)
    flat = np.where(rng.random(5000) < 0.07, rng.normal(size=5000), 0.0)
    flat[[0, 4999]] = [1.5, -2.0]
    gaps, filler = sparse_entries(flat, bits)
    assert gaps.min() >= 0 and gaps.max() < 2 ** bits
    positions = np.cumsum(gaps + 1) - 1
    assert np.array_equal(positions[~filler], np.flatnonzero(flat))
    assert filler.sum() == sum((g - 1) // 2 ** bits for g in np.diff(np.concatenate([[-1], np.flatnonzero(flat)])))


def test_code_layer_picks_the_cheaper_layout():
    rng = np.random.default_rng(0)
    dense = rng.choice([-0.5, -0.1, 0.1, 0.5], size=(64, 32, 3, 3)).astype(np.float32)
    row = code_layer(dense)
    assert row["layout"] == "dense" and row["clusters"] == 4 and 1.9 < row["bits_per_weight"] <= 2.1
    sparse = np.where(rng.random(dense.shape) < 0.9, 0, dense).astype(np.float32)
    row = code_layer(sparse)
    assert row["layout"] == "sparse" and row["nonzero"] == int((sparse != 0).sum())
    assert row["bits_per_weight"] < 1.2  # ~10 % non-zeros, each a ~2-bit code plus a short gap
    assert row["bytes"] * 8 >= row["code_bits"] + row["position_bits"] + row["codebook_bits"]


def test_initialisations():
    v = np.random.default_rng(0).normal(size=10_000)
    assert np.allclose(initial_centroids(v, 4, "linear", 0), np.linspace(v.min(), v.max(), 4))
    d = initial_centroids(v, 4, "density", 0)
    assert np.allclose(d, np.quantile(v, [0.125, 0.375, 0.625, 0.875]))
    assert set(initial_centroids(v, 4, "random", 0)) <= set(v)


def test_fold_batch_norm_keeps_outputs(digits_ctx):
    model, ctx = digits_ctx
    folded, n = fold_batch_norm(model)
    assert n == 3 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert type(folded) is type(model)  # the model's own class, picklable into the stage cache
    x = ctx.data["val"].x[:32]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("init", ["linear", "density"])
def test_cluster_shares_values_and_keeps_zeros(init, digits_ctx):
    model, ctx = digits_ctx
    sparse = Sparsify().run(model, SparsifyConfig(sparsity=0.6, fine_tune={"epochs": 2, "lr": 3e-3}), ctx).model
    out = Cluster().run(sparse, ClusterConfig(bits=3, init=init, fine_tune={"epochs": 2, "lr": 3e-3}), ctx)
    m = out.metrics
    folded, _ = fold_batch_norm(sparse)
    for name, layer in out.model.named_modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            w = layer.weight.detach()
            assert len(torch.unique(w[w != 0])) <= 8, name
            assert torch.equal(w == 0, folded.get_submodule(name).weight == 0), name  # pruned zeros stay zero
    assert m["batch_norms_folded"] == 3 and set(m["clusters"].values()) <= set(range(1, 9))
    # the fine-tuned centroids recover what sharing lost, and the coded size is what the rows add up to
    assert m["val_top1"] >= m["val_top1_clustered"] - 0.01  # 150 validation images: one is 0.0067
    assert evaluate(out.model, ctx.data["val"]) >= evaluate(model, ctx.data["val"]) - 0.03
    dc = m["deep_compression"]
    assert dc["bytes"] == sum(r["bytes"] for r in dc["layers"].values()) + dc["other_float_bytes"]
    assert m["deep_compression_ratio"] > 8 and dc["ratio"] == round(dc["fp32_bytes"] / dc["bytes"], 2)
    assert m["deep_compression_bytes_before"] > 4 * dc["bytes"]
    assert deep_compression_size(out.model)["bytes"] == dc["bytes"]


@pytest.mark.slow
def test_cluster_then_export_to_every_format(tmp_path, digits_recipe):
    """sparsify + cluster through `edgeship export`: every format lowers, runs and keeps the shared values; the
    zipped artifacts are smaller than the dense model's."""
    from edgeship.api import export

    targets = [{"name": "onnx", "format": "onnx", "precision": "fp32"},
               {"name": "ov", "format": "openvino", "precision": "fp32"},
               {"name": "tfl", "format": "tflite", "precision": "fp32"}]
    passes = [{"name": "sparsify", "sparsity": 0.7, "fine_tune": {"epochs": 2, "lr": 3e-3}},
              {"name": "cluster", "bits": 3, "fine_tune": {"epochs": 1, "lr": 3e-3}}]
    record = export(digits_recipe(passes=passes, targets=targets), quiet=True, measure=False)
    assert record.ok, [t.error for t in record.targets]
    base = export(digits_recipe(targets=targets[:1], output=str(tmp_path / "runs" / "dense")), quiet=True,
                  measure=False)
    dense_zip = base.targets[0].zip_bytes
    onnx_t = record.target("onnx")
    assert onnx_t.zip_bytes < 0.5 * dense_zip and onnx_t.zip_bytes < onnx_t.size_bytes
    assert all(t.zip_bytes and t.verify.agreement > 0.97 for t in record.targets)
    g = onnx.load(str(record.run_dir / onnx_t.artifact)).graph
    weights = [numpy_helper.to_array(i) for i in g.initializer if len(i.dims) >= 2]
    assert len(weights) == 4 and all(len(np.unique(w[w != 0])) <= 8 for w in weights)
    stage = json.loads(record.stages[1].model_dump_json())
    assert stage["metrics"]["deep_compression"]["bytes"] < stage["size_fp32_bytes"] / 10


def test_cluster_refuses_what_it_cannot_trace(digits_ctx):
    from edgeship.errors import EdgeshipError

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 10)

        def forward(self, x):
            x = self.bn(self.conv(x))
            if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
                x = x * 2
            return self.fc(x.mean((2, 3)))

    _, ctx = digits_ctx
    with pytest.raises(EdgeshipError, match="cannot fold batch norm.*set fold_bn: false"):
        Cluster().run(Branchy(), ClusterConfig(), ctx)
    out = Cluster().run(Branchy(), ClusterConfig(fold_bn=False, fine_tune={"epochs": 0}), ctx)
    assert out.metrics["batch_norms_folded"] == 0 and len(torch.unique(out.model.conv.weight)) <= 16


def test_unclustered_layer_counts_as_raw_floats():
    w = np.random.default_rng(0).normal(size=(32, 16, 3, 3)).astype(np.float32)
    row = code_layer(w)
    assert row["layout"] == "float32" and row["bytes"] == w.size * 4 and row["bits_per_weight"] == 32
