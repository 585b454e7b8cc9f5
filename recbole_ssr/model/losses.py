"""Losses shared by the models."""

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores, neg_scores):
    """Bayesian personalised ranking: mean of -log σ(s⁺ − s⁻) (Rendle et al., 2009)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_penalty(*embeddings):
    """Σ‖e‖² / batch size over the given batch embeddings (the usual BPR regulariser)."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / batch


def bpr_l2(users, positives, negatives, weight):
    """BPR on the inner products ⟨u, i⁺⟩ vs ⟨u, i⁻⟩ of batch embeddings + ``weight`` · :func:`l2_penalty` of the
    three: the loss of the BPR baselines."""
    return bpr_loss((users * positives).sum(-1), (users * negatives).sum(-1)) + weight * l2_penalty(
        users, positives, negatives)


def batch_mean_square(users, pos_items, neg_items):
    """mean(e_u²) + ½ (mean(e_i⁺²) + mean(e_i⁻²)): MMGCN's and GRCN's regulariser of the batch's ID embeddings (the
    mean over the batch users, each repeated twice, and the interleaved positive and negative items)."""
    return users.pow(2).mean() + 0.5 * (pos_items.pow(2).mean() + neg_items.pow(2).mean())


def info_nce(anchors, positives, temperature, normalize=True):
    """InfoNCE: row i of ``positives`` is the positive of anchor i, every other row a negative; logits are the
    cosines / temperature (both sides L2-normalised), or the raw inner products / temperature (``normalize=False``,
    SLMRec's FAC task). Mean over the anchors."""
    if normalize:
        anchors, positives = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    logits = anchors @ positives.T / temperature
    return F.cross_entropy(logits, torch.arange(anchors.shape[0], device=anchors.device))
