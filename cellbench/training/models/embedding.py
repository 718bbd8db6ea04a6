r"""Embedding U-Net: instance segmentation by pixel embeddings (2D and 3D).

A U-Net predicts, per pixel, an embedding vector (``embedding_dim`` channels), a foreground
logit and a seediness logit. Training uses the discriminative loss of De Brabandere, Neven &
Van Gool, "Semantic Instance Segmentation with a Discriminative Loss Function" (2017,
arXiv:1708.02551) on the embeddings of foreground pixels:

.. math::

    L_{var} = \frac{1}{C} \sum_{c=1}^{C} \frac{1}{N_c} \sum_{i=1}^{N_c}
              [\lVert \mu_c - x_i \rVert - \delta_v]_+^2

    L_{dist} = \frac{1}{C(C-1)} \sum_{c_A \ne c_B}
               [2\delta_d - \lVert \mu_{c_A} - \mu_{c_B} \rVert]_+^2

    L_{reg} = \frac{1}{C} \sum_{c=1}^{C} \lVert \mu_c \rVert

    L = \alpha L_{var} + \beta L_{dist} + \gamma L_{reg}

computed per image (vectorised over instances with ``index_add``) and averaged over the images
of the batch that contain instances. The foreground head is trained with binary cross-entropy.
The seediness head regresses a centredness target: for a pixel of instance ``k`` with centroid
``c_k`` and equivalent radius ``r_k`` (radius of the disc/ball of the same area/volume),
``exp(-|p - c_k|^2 / (2 (seed_sigma r_k)^2))``, 0 on background; it peaks at cell centres.

Inference (:func:`cluster_embeddings`) is the paper's seeded thresholding, made deterministic:
take the unassigned foreground pixel of highest seediness (stop when it is below
``seed_threshold``), collect every unassigned foreground pixel whose embedding lies within
``cluster_margin`` of the seed's embedding, move the centre to the mean of those pixels
(``cluster_refine`` times) and collect again, give them a new id, and repeat. With a zero training
loss, pixels lie within ``delta_v`` of their instance mean and means are ``2 delta_d`` apart, so
any margin in ``(2 delta_v, 2 delta_d - 2 delta_v)`` separates instances; the default margin
``delta_d`` is the midpoint. Touching cells are separated by their embeddings; distant cells that
happen to share an embedding are separated afterwards by splitting every cluster into its
spatially connected components. Components smaller than ``min_object_size`` are dropped. The
score of an object is ``max seediness in the object * mean foreground probability``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from cellbench.errors import CellbenchError
from cellbench.training.baseline import Baseline, DataSpec
from cellbench.training.models.common import check_range
from cellbench.training.models.unet import (
    UNetArchConfig,
    UNetBaselineMixin,
    build_unet,
    check_spec_ndim,
)

_EPS = 1e-12


def _norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm with a zero (not NaN) gradient at the origin."""
    return (x * x).sum(dim).clamp_min(_EPS).sqrt()


def discriminative_loss(
    embedding: torch.Tensor,
    instances: torch.Tensor,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminative loss (De Brabandere et al. 2017) of a batch, in float32.

    Args:
        embedding: ``(B, D, *spatial)`` pixel embeddings.
        instances: ``(B, *spatial)`` instance ids, 0 = background (ignored by the loss).
        delta_v: Pull margin (variance term hinge).
        delta_d: Push margin (cluster means are pushed ``2 delta_d`` apart).
        alpha: Weight of the variance term.
        beta: Weight of the distance term.
        gamma: Weight of the regularisation term.

    Returns:
        The loss (mean over images with at least one instance; 0 with a gradient path when no
        image has one) and its unweighted ``var``, ``dist`` and ``reg`` terms (batch means,
        detached).
    """
    b, d = embedding.shape[:2]
    if instances.shape[0] != b or instances.shape[1:] != embedding.shape[2:]:
        raise CellbenchError(
            f"instances shape {tuple(instances.shape)} does not match embeddings "
            f"{tuple(embedding.shape)} (expected (B, *spatial))"
        )
    emb = embedding.float().reshape(b, d, -1)
    labels = instances.reshape(b, -1)
    terms: dict[str, list[torch.Tensor]] = {"var": [], "dist": [], "reg": []}
    for i in range(b):
        fg = labels[i] > 0
        if not bool(fg.any()):
            continue
        _, inverse = torch.unique(labels[i][fg], return_inverse=True)
        x = emb[i][:, fg].t()  # (N, D)
        k = int(inverse.max()) + 1
        counts = torch.bincount(inverse, minlength=k).to(x.dtype)
        mu = torch.zeros(k, d, dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
        mu = mu / counts[:, None]
        pull = (_norm(x - mu[inverse], 1) - delta_v).clamp_min(0) ** 2
        per_cluster = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inverse, pull)
        terms["var"].append((per_cluster / counts).mean())
        if k > 1:
            gap = _norm(mu[:, None, :] - mu[None, :, :], 2)
            push = (2 * delta_d - gap).clamp_min(0) ** 2
            off_diagonal = ~torch.eye(k, dtype=torch.bool, device=x.device)
            terms["dist"].append(push[off_diagonal].sum() / (k * (k - 1)))
        else:
            terms["dist"].append(x.new_zeros(()))
        terms["reg"].append(_norm(mu, 1).mean())
    if not terms["var"]:
        zero = emb.sum() * 0.0
        return zero, {"var": zero.detach(), "dist": zero.detach(), "reg": zero.detach()}
    means = {name: torch.stack(values).mean() for name, values in terms.items()}
    total = alpha * means["var"] + beta * means["dist"] + gamma * means["reg"]
    return total, {name: value.detach() for name, value in means.items()}


def seed_target(instances: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Centredness target of the seediness head, ``(B, *spatial)`` float32 in ``[0, 1]``.

    For a pixel ``p`` of instance ``k``: ``exp(-|p - c_k|^2 / (2 (sigma r_k)^2))`` with ``c_k``
    the centroid and ``r_k`` the radius of the disc (2D) or ball (3D) with the instance's area
    or volume; 0 on background. Computed on the instances' device without a Python loop over
    instances.
    """
    b = instances.shape[0]
    spatial = instances.shape[1:]
    nd = len(spatial)
    labels = instances.reshape(b, -1).long()
    out = torch.zeros(labels.shape, dtype=torch.float32, device=instances.device)
    grids = torch.meshgrid(
        *[torch.arange(n, dtype=torch.float32, device=instances.device) for n in spatial],
        indexing="ij",
    )
    coords = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (N, nd)
    for i in range(b):
        fg = labels[i] > 0
        if not bool(fg.any()):
            continue
        _, inverse = torch.unique(labels[i][fg], return_inverse=True)
        k = int(inverse.max()) + 1
        p = coords[fg]
        area = torch.bincount(inverse, minlength=k).float()
        centre = torch.zeros(k, nd, device=p.device).index_add_(0, inverse, p) / area[:, None]
        # radius of the disc (2D) or ball (3D) of the same area / volume
        radius = (area / math.pi).sqrt() if nd == 2 else (0.75 * area / math.pi) ** (1.0 / 3.0)
        s = (sigma * radius).clamp_min(0.5)[inverse]
        dist2 = ((p - centre[inverse]) ** 2).sum(1)
        out[i, fg] = torch.exp(-dist2 / (2 * s * s))
    return out.reshape(instances.shape)


@torch.no_grad()
def cluster_embeddings(
    embedding: torch.Tensor,
    foreground: torch.Tensor,
    seediness: torch.Tensor,
    margin: float = 1.5,
    seed_threshold: float = 0.5,
    min_size: int = 1,
    refine: int = 1,
    foreground_prob: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group foreground pixels into instances by seeded thresholding in embedding space.

    Args:
        embedding: ``(D, *spatial)`` embeddings.
        foreground: ``(*spatial)`` bool foreground.
        seediness: ``(*spatial)`` seediness in ``[0, 1]``.
        margin: Embedding distance within which a pixel joins a seed's cluster.
        seed_threshold: Stop when no unassigned foreground pixel has a higher seediness.
        min_size: Objects with fewer pixels (voxels) are dropped.
        refine: Mean-shift steps moving the centre to the mean of its members.
        foreground_prob: ``(*spatial)`` foreground probability for the scores (default 1).

    Returns:
        ``(labels int32 (*spatial), object_ids int64, object_scores float64)`` where a score is
        the object's highest seediness times its mean foreground probability.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree
    from skimage.measure import label as connected_components

    spatial = tuple(foreground.shape)
    if tuple(embedding.shape[1:]) != spatial or tuple(seediness.shape) != spatial:
        raise CellbenchError(
            f"embedding {tuple(embedding.shape)}, foreground {spatial} and seediness "
            f"{tuple(seediness.shape)} must share the spatial shape"
        )
    d = embedding.shape[0]
    flat_fg = np.flatnonzero(foreground.reshape(-1).cpu().numpy())
    e = embedding.reshape(d, -1).float().cpu().numpy()[:, flat_fg].T.astype(np.float64)
    s = seediness.reshape(-1).float().cpu().numpy()[flat_fg]
    assigned = np.zeros(len(flat_fg), dtype=np.int64)
    # seeds in order of decreasing seediness; a k-d tree finds the pixels within the margin of
    # a centre without scanning the whole image for every object
    order = np.argsort(-s, kind="stable")
    order = order[s[order] >= seed_threshold]
    tree = cKDTree(e) if len(order) else None

    def within(centre: np.ndarray) -> np.ndarray:
        assert tree is not None
        found = np.asarray(tree.query_ball_point(centre, margin, return_sorted=False), np.int64)
        return found[assigned[found] == 0]

    next_id = 1
    for j in order:
        if assigned[j]:
            continue
        members = within(e[j])
        for _ in range(refine):
            members = within(e[members].mean(0))
            if not (members == j).any():
                members = np.append(members, j)
        assigned[members] = next_id
        next_id += 1
    clusters = np.zeros(int(np.prod(spatial)), dtype=np.int64)
    clusters[flat_fg] = assigned
    clusters = clusters.reshape(spatial)
    labels = connected_components(clusters, background=0, connectivity=len(spatial))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(1, min_size)
    keep[0] = False
    lut = np.zeros(len(sizes), dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = lut[labels]
    n = int(keep.sum())
    ids = np.arange(1, n + 1, dtype=np.int64)
    if n == 0:
        return labels, ids, np.zeros(0, np.float64)
    seed_np = seediness.float().cpu().numpy()
    peak = np.asarray(ndimage.maximum(seed_np, labels, ids), dtype=np.float64)
    if foreground_prob is None:
        mean_fg = np.ones(n, dtype=np.float64)
    else:
        prob = foreground_prob.float().cpu().numpy().ravel().astype(np.float64)
        mean_fg = np.bincount(labels.ravel(), prob, minlength=n + 1)[1:] / sizes[keep]
    return labels, ids, peak * mean_fg


@dataclass
class EmbeddingUNetConfig(UNetArchConfig):
    """Hyperparameters of the ``embedding-unet`` instance segmentation baseline.

    Attributes:
        embedding_dim: Embedding channels.
        delta_v: Pull margin of the discriminative loss.
        delta_d: Push margin of the discriminative loss (means ``2 delta_d`` apart).
        alpha: Weight of the variance (pull) term.
        beta: Weight of the distance (push) term.
        gamma: Weight of the regularisation term.
        foreground_weight: Weight of the foreground binary cross-entropy.
        seed_weight: Weight of the seediness regression (MSE).
        seed_sigma: Width of the seediness target relative to the cell's equivalent radius.
        foreground_threshold: Foreground probability threshold at inference.
        seed_threshold: Lowest seediness that starts a new object at inference.
        cluster_margin: Embedding distance for joining a seed's cluster (default ``delta_d``).
        cluster_refine: Mean-shift steps of each cluster centre.
        min_object_size: Smallest object kept, in pixels (voxels).
    """

    embedding_dim: int = 8
    delta_v: float = 0.5
    delta_d: float = 1.5
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.001
    foreground_weight: float = 1.0
    seed_weight: float = 1.0
    seed_sigma: float = 0.5
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.3
    cluster_margin: float = 1.5
    cluster_refine: int = 1
    min_object_size: int = 10

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out = super().problems()
        check_range(out, "embedding_dim", self.embedding_dim, 1)
        for name in ("delta_v", "delta_d", "seed_sigma", "cluster_margin"):
            check_range(out, name, getattr(self, name), 1e-6)
        for name in ("alpha", "beta", "gamma", "foreground_weight", "seed_weight"):
            check_range(out, name, getattr(self, name), 0.0)
        for name in ("foreground_threshold", "seed_threshold"):
            check_range(out, name, getattr(self, name), 0.0, 1.0)
        check_range(out, "cluster_refine", self.cluster_refine, 0)
        check_range(out, "min_object_size", self.min_object_size, 0)
        numbers = isinstance(self.delta_v, float | int) and isinstance(self.delta_d, float | int)
        if numbers and self.delta_d <= self.delta_v:
            out.append(f"delta_d ({self.delta_d}) must be larger than delta_v ({self.delta_v})")
        return out


class EmbeddingUNet(UNetBaselineMixin, Baseline):
    """U-Net with embedding, foreground and seediness heads (``embedding-unet``), 2D and 3D.

    ``loss`` = discriminative loss + ``foreground_weight`` BCE + ``seed_weight`` MSE (float32).
    ``predict`` returns ``mask`` (int32 label image), ``object_ids`` and ``object_scores``.
    """

    name = "embedding-unet"
    tasks = ("instance-segmentation",)
    config_class = EmbeddingUNetConfig
    sample_mode = "patch"

    def __init__(self, config: EmbeddingUNetConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: EmbeddingUNetConfig = config
        check_spec_ndim(spec, self.name)
        self._setup()
        self.net = build_unet(config, spec, config.embedding_dim + 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, embedding_dim + 2, *spatial)``: embeddings, foreground logit, seed logit."""
        return self.net(image)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminative + foreground + seediness loss of ``image`` vs ``instances``."""
        c = self.config
        out = self.net(batch["image"]).float()
        instances = batch["instances"].long()
        emb = out[:, : c.embedding_dim]
        fg_logit = out[:, c.embedding_dim]
        seed = torch.sigmoid(out[:, c.embedding_dim + 1])
        disc, terms = discriminative_loss(
            emb, instances, c.delta_v, c.delta_d, c.alpha, c.beta, c.gamma
        )
        fg = nnf.binary_cross_entropy_with_logits(fg_logit, (instances > 0).float())
        seed_loss = nnf.mse_loss(seed, seed_target(instances, c.seed_sigma))
        total = disc + c.foreground_weight * fg + c.seed_weight * seed_loss
        parts = {k: float(v.detach()) for k, v in terms.items()}
        parts.update(discriminative=float(disc.detach()), foreground=float(fg.detach()))
        parts["seed"] = float(seed_loss.detach())
        return total, parts

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Instances of one image ``(1, C, [Z,] Y, X)`` as a label image with scores."""
        c = self.config
        out = self.dense_predict(image)
        prob = torch.sigmoid(out[c.embedding_dim])
        labels, ids, scores = cluster_embeddings(
            out[: c.embedding_dim],
            prob > c.foreground_threshold,
            torch.sigmoid(out[c.embedding_dim + 1]),
            margin=c.cluster_margin,
            seed_threshold=c.seed_threshold,
            min_size=c.min_object_size,
            refine=c.cluster_refine,
            foreground_prob=prob,
        )
        return {"mask": labels, "object_ids": ids, "object_scores": scores}
