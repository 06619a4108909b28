"""`cluster`: weight sharing by per-layer k-means (Deep Compression's "trained quantization", Han et al. 2016).

Each conv/linear layer's non-zero weights are clustered into 2**bits values (scikit-learn's ``KMeans`` on
the 1-D weights, initialised linearly between the layer's min and max, at the quantiles of its weight
distribution ("density") or at random weights, as the paper compares); zeros left by `sparsify` stay zero
and are not a cluster. Then the shared values (centroids) are fine-tuned with KD: each layer's weight is
``centroids[index] * mask`` (a ``torch.nn.utils.parametrize`` parametrization, so autograd sums the gradients
of the weights of each cluster into its centroid, the paper's update), and finally the weights are written
back dense, so the result is an ordinary module that every backend lowers.

Batch norm is folded into the convolutions first (``fold_bn``: torch's ``fuse_conv_bn_eval`` on the pairs torch.fx
finds): the exporters fold it
anyway, and a per-channel BN scale applied after clustering would turn each layer's 16 values into 16 per
output channel, which no longer compresses.

The metrics give the model's size as Deep Compression counts it (``edgeship.pipeline.coding``: sparse
relative indices and cluster indices Huffman-coded, codebooks, other floats at 32 bits) beside its FP32
size and its zipped FP32 state dict; each target's zip size is in the run record (``Target.zip_bytes``).
What runs on a device is the dense artifact: the clustering shrinks the download, not the runtime's memory.

Hand-written: the centroid parametrization (a few lines; no library fine-tunes shared weights on a torch
module) and the three initialisations (the k-means itself is scikit-learn's).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
import torch.nn.utils.parametrize as parametrize
from pydantic import Field
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.graph import TraceError, fold_batch_norm
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.coding import deep_compression_size, weight_layers, zipped_fp32_bytes
from edgeship.pipeline.training import TrainConfig, evaluate, finetune

NOTE = ("weights are shared per layer but stored dense: the artifacts run at the dense model's speed and the "
        "compression shows in the zip size a device downloads and in Deep Compression's coded size")


class ClusterConfig(PassConfig):
    bits: int = Field(4, ge=1, le=8, description="each conv layer's non-zero weights share 2**bits values")
    linear_bits: int | None = Field(None, ge=1, le=8, description="for Linear layers (default: bits)")
    init: Literal["linear", "density", "random"] = Field("linear", description="k-means initialisation")
    fold_bn: bool = Field(True, description="fold batch norm into the convolutions before clustering")
    fine_tune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, lr=1e-4),
                                   description="fine-tune the shared values (and biases) with KD")


class SharedWeights(nn.Module):
    """A parametrization: the layer's weight is ``centroids[index] * mask`` (the original is ignored)."""

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids)
        self.register_buffer("index", index)
        self.register_buffer("mask", mask)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.index] * self.mask


def initial_centroids(values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """The paper's three initialisations: linear (evenly spaced between min and max), density (at the
    quantiles of the weights' distribution) and random (k of the weights)."""
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    return np.random.default_rng(seed).choice(values, k, replace=False)


def kmeans_1d(values: np.ndarray, k: int, init: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, index of each value) from scikit-learn's KMeans on the 1-D values."""
    from sklearn.cluster import KMeans  # heavy: imported when a model is clustered

    k = min(k, len(np.unique(values)))
    start = np.unique(initial_centroids(values, k, init, seed))  # density quantiles can coincide
    km = KMeans(n_clusters=len(start), init=start.reshape(-1, 1), n_init=1, max_iter=300, random_state=seed)
    labels = km.fit_predict(values.reshape(-1, 1).astype(np.float64))
    return km.cluster_centers_.reshape(-1), labels


def cluster_layers(model: nn.Module, config: ClusterConfig, seed: int) -> dict[str, int]:
    """Attach a SharedWeights parametrization to every conv/linear layer (in place); returns clusters per layer."""
    clusters = {}
    for i, (name, m) in enumerate(weight_layers(model)):
        w = m.weight.detach()
        mask = (w != 0).to(w.dtype)
        values = w[w != 0].cpu().numpy()
        if values.size == 0:
            continue
        bits = config.linear_bits if isinstance(m, nn.Linear) and config.linear_bits else config.bits
        centroids, labels = kmeans_1d(values, 1 << bits, config.init, seed + i)
        index = torch.zeros(w.shape, dtype=torch.long)
        index[w != 0] = torch.from_numpy(labels).long()
        parametrize.register_parametrization(
            m, "weight", SharedWeights(torch.tensor(centroids, dtype=w.dtype), index, mask), unsafe=True)
        m.parametrizations.weight.original.requires_grad_(False)  # only the centroids (and biases) train
        clusters[name] = len(centroids)
    return clusters


def make_dense(model: nn.Module) -> None:
    """Write each shared weight back as an ordinary dense parameter (in place)."""
    for _, m in weight_layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            m.weight.requires_grad_(True)


class Cluster(Pass):
    name = "cluster"
    Config = ClusterConfig
    example = {"bits": 3, "fine_tune": {"epochs": 1, "samples": 256}}
    needs_module = "weight clustering"

    def run(self, model: nn.Module, config: ClusterConfig, ctx: PassContext) -> PassResult:
        before = deep_compression_size(model)
        model, folded = copy.deepcopy(model).eval(), 0
        if config.fold_bn:
            try:
                model, folded = fold_batch_norm(model)
            except TraceError as e:
                raise EdgeshipError(f"{ctx.stage}: cannot fold batch norm: torch.fx failed to trace the model ({e})",
                                    "set fold_bn: false in the cluster pass") from None
        clusters = cluster_layers(model, config, ctx.seed)
        if not clusters:
            raise EdgeshipError(f"{ctx.stage}: the model has no conv or linear weights to cluster",
                                "drop the cluster pass for this model")
        clustered_top1 = evaluate(model, ctx.data["val"])
        hist = finetune(model, config.fine_tune, ctx, ctx.teacher)
        make_dense(model)
        size = deep_compression_size(model)
        metrics = {"bits": config.bits, "linear_bits": config.linear_bits or config.bits, "init": config.init,
                   "batch_norms_folded": folded, "clusters": clusters, "val_top1_clustered": clustered_top1,
                   "deep_compression": size, "deep_compression_bytes_before": before["bytes"],
                   "deep_compression_ratio": size["ratio"], "zip_fp32_bytes": zipped_fp32_bytes(model),
                   "note": NOTE, **hist}
        return PassResult(model, metrics)
