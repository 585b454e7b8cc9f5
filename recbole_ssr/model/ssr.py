"""SSR: Structured Spectral Reasoning for frequency-adaptive multimodal recommendation (Yang et al., NeurIPS 2025).

Pipeline (SSR.md, our notation):

* Backbone - per branch m ∈ {id} ∪ content modalities: H⁰_m = row-L2-normalise([P_m ; X_m]) with X_id an item
  table and X_m = MLP(F_m) for content; Z_m = Σ_{l=0..L} Â^l H⁰_m. Node representation R: items [Z_id|Z_1|...],
  users [w_u1 Z_id | w_u2 Z_1 | ...] with per-user softmax weights w_u. Side signal Q: items S_mm^n R_item
  (S_mm = Σ_m α_m S_m, the frozen kNN item graphs; α: ``mm_modality_weights``, else the reference's
  0.1 image / 0.9 text when the dataset has exactly those, else uniform), users [P_id | P_1 | ...]. Signal X = R + Q.
* (i) X is split into M graph-frequency bands that sum to X (:mod:`recbole_ssr.model.spectral`, ``band_method``).
* (ii) training only: whole bands dropped per node (``mask_rate``) and a consistency loss between the masked and
  the full pass (``mask_consistency: representation | prediction``; ``mask_fill: zero | noise``).
* (iii) G-HSNO band operator and band gating (separate modules for users and items), ``out_mode``
  ``aggr`` (score ⟨h_u, h_i⟩), ``spec`` (per-band embeddings) or ``mix`` (both).
* (iv) band-wise cross-modal InfoNCE over every pair of content modalities.

Loss: BCE on one positive and one sampled negative + reg_weight·Ω (both passes) + mask_weight·L_mask
+ cl_weight·L_cl. Ablation switches: ``use_operator``, ``use_gate``, ``mask_rate``/``mask_weight`` = 0,
``cl_weight`` = 0, ``use_modalities`` (any subset, [] = ID only), ``band_num``, ``band_method``, ``out_mode``.
The whole-graph forward runs once per training batch (gradients need it) and once per evaluation (cached).
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_ssr.errors import ConfigError
from recbole_ssr.model.abstract import MultimodalRecommender
from recbole_ssr.model.spectral import SpectralBandDecomposer
from recbole_ssr.model.ssr_layers import (BandGate, BandOperator, band_contrastive_loss, gate_and_rescale,
                                          mask_bands)

OUT_MODES = ("aggr", "spec", "mix")


def first_occurrences(ids):
    """Positions of the first occurrence of every distinct value of ``ids`` (1-D), in order of the values."""
    distinct, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(len(ids), device=ids.device)
    first = torch.full((len(distinct),), len(ids), dtype=positions.dtype, device=ids.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")


class SSR(MultimodalRecommender):
    min_modalities = 0

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.dim = config["embedding_size"]
        self.num_layers = config["num_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.num_bands = config["band_num"]
        self.out_mode = config["out_mode"]
        if self.out_mode not in OUT_MODES:
            raise ConfigError(f"out_mode '{self.out_mode}' is unknown: use one of {', '.join(OUT_MODES)}.")
        self.mask_rate, self.mask_weight = float(config["mask_rate"]), float(config["mask_weight"])
        self.mask_consistency, self.mask_fill = config["mask_consistency"], config["mask_fill"]
        self.cl_weight, self.temperature = float(config["cl_weight"]), float(config["tau"])
        self.cl_max_nodes = config["cl_max_nodes"]
        self.reg_weight = float(config["reg_weight"])
        self.use_operator, self.use_gate = bool(config["use_operator"]), bool(config["use_gate"])
        self.branches = ["id"] + self.modality_names
        width = len(self.branches) * self.dim

        # Backbone: preference tables P_m, item inputs X_m, per-user branch weights w_u.
        self.user_preference = nn.ModuleDict({m: nn.Embedding(self.n_users, self.dim) for m in self.branches})
        self.item_id_embedding = nn.Embedding(self.n_items, self.dim)
        for table in list(self.user_preference.values()) + [self.item_id_embedding]:
            nn.init.xavier_uniform_(table.weight)
        self.raw_features = nn.ParameterDict({
            m: nn.Parameter(self.modality_feature(m).clone(), requires_grad=bool(config["finetune_features"]))
            for m in self.modality_names})
        hidden = config["mlp_hidden_size"]
        self.content_encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(self.raw_features[m].shape[1], hidden), nn.LeakyReLU(), nn.Linear(hidden, self.dim))
            for m in self.modality_names})
        self.user_branch_logits = nn.Parameter(torch.zeros(self.n_users, len(self.branches)))

        adjacency = self.norm_adj_matrix()
        self.register_buffer("adjacency", adjacency.to_sparse_csr(), persistent=False)
        self.item_graph = self.multimodal_item_graph(config) if self.modality_names else None

        # (i) bands; (iii) operators and gates for users and items.
        self.decomposer = SpectralBandDecomposer(
            adjacency.cpu(), num_bands=self.num_bands, method=config["band_method"], k_poly=config["k_poly"],
            cheb_order=config["cheb_order"], eigen_max_nodes=config["eigen_max_nodes"],
            refresh_every=config["band_refresh_every"], track_edges=config["band_track_edges"],
            col_chunk=config["band_col_chunk"])
        rank = config["cp_rank"]
        self.operators = nn.ModuleDict({s: BandOperator(self.num_bands, width, rank) for s in ("user", "item")})
        self.gates = nn.ModuleDict({s: BandGate(self.num_bands, width) for s in ("user", "item")})
        self.chunk_slices = [slice(k * self.dim, (k + 1) * self.dim) for k in range(1, len(self.branches))]
        # Diagnostics (recbole_ssr.analysis; never used in training): a band zeroed at inference, last gate weights.
        self.inference_drop_band = None
        self.gate_weights = {}

    # -- backbone ------------------------------------------------------------------------------------------------
    def multimodal_item_graph(self, config):
        """S_mm = Σ_m α_m S_m (frozen sym-normalised kNN graphs; α from ``mm_modality_weights``)."""
        weights = self.modality_weights(key="mm_modality_weights")
        graph = None
        for name, alpha in zip(self.modality_names, weights):
            part = self.knn_item_graph(name, config["knn_k"]) * alpha
            graph = part if graph is None else graph + part
        return graph.coalesce().to_sparse_csr()

    def propagate(self, signal):
        """Σ_{l=0..L} Â^l H (LightGCN sum, SSR.md backbone step 1)."""
        total, layer = signal, signal
        for _ in range(self.num_layers):
            layer = torch.sparse.mm(self.adjacency, layer)
            total = total + layer
        return total

    def graph_signal(self):
        """(X = R + Q [N, D], R [N, D]): node representation plus side signal, users first."""
        user_inputs = [self.user_preference[m].weight for m in self.branches]
        item_inputs = [self.item_id_embedding.weight] + [
            self.content_encoders[m](self.raw_features[m]) for m in self.modality_names]
        h0 = torch.cat([torch.cat([F.normalize(u, dim=1), F.normalize(i, dim=1)], dim=0)
                        for u, i in zip(user_inputs, item_inputs)], dim=1)
        z = self.propagate(h0)
        z_users, z_items = z[: self.n_users], z[self.n_users:]
        branch_weights = torch.softmax(self.user_branch_logits, dim=1).repeat_interleave(self.dim, dim=1)
        r_users = z_users * branch_weights
        q_users = torch.cat(user_inputs, dim=1)
        q_items = z_items
        if self.item_graph is not None:
            for _ in range(self.n_mm_layers):
                q_items = torch.sparse.mm(self.item_graph, q_items)
        else:
            q_items = torch.zeros_like(z_items)
        r = torch.cat([r_users, z_items], dim=0)
        return r + torch.cat([q_users, q_items], dim=0), r

    # -- stages (ii)-(iv) ------------------------------------------------------------------------------------------
    def reason(self, bands, node, side):
        """(iii): bands [B, M, D] of one side -> (h, h_spec, Ω, gate weights w [B, M])."""
        regularizer = bands.new_zeros(())
        if self.use_operator:
            bands = self.operators[side](bands, node)
            regularizer = self.operators[side].regularizer()
        if self.use_gate:
            h, h_spec, weights = self.gates[side](bands, node)
        else:
            weights = torch.ones(bands.shape[:2], device=bands.device)
            h, h_spec = gate_and_rescale(bands, weights)
        return h, h_spec, regularizer, weights

    def score(self, user_out, item_out):
        (hu, su), (hi, si) = user_out[:2], item_out[:2]
        if self.out_mode == "aggr":
            return (hu * hi).sum(-1)
        if self.out_mode == "spec":
            return (su * si).sum(-1)
        return (hu * hi).sum(-1) + (su * si).sum(-1)

    def node_rows(self, interaction):
        users = interaction[self.USER_ID]
        return users, interaction[self.ITEM_ID] + self.n_users, interaction[self.NEG_ITEM_ID] + self.n_users

    def calculate_loss(self, interaction):
        signal, node = self.graph_signal()
        bands = self.decomposer(signal)  # [M, N, D]
        users, pos, neg = self.node_rows(interaction)
        batch = len(users)
        # one gather for all batch rows (one dense gradient instead of three); items: positives then negatives
        rows = torch.cat([users, pos, neg])
        picked, picked_node = bands[:, rows].transpose(0, 1), node[rows]
        full, omega = self.reason_batch(picked, picked_node, batch)
        pos_scores, neg_scores = self.score(full[0], full[1]), self.score(full[0], full[2])
        loss = F.binary_cross_entropy_with_logits(pos_scores, torch.ones_like(pos_scores)) + \
            F.binary_cross_entropy_with_logits(neg_scores, torch.zeros_like(neg_scores))
        loss = loss + self.reg_weight * omega

        if self.mask_rate > 0 and self.mask_weight > 0:
            masked_bands = mask_bands(picked, self.mask_rate, self.mask_fill)[0]
            masked, masked_omega = self.reason_batch(masked_bands, picked_node, batch)
            loss = loss + self.reg_weight * masked_omega
            loss = loss + self.mask_weight * self.mask_consistency_loss(full, masked)
        if self.cl_weight > 0 and len(self.chunk_slices) >= 2:
            loss = loss + self.cl_weight * self.contrastive_loss(picked[:batch], users, picked[batch:2 * batch], pos)
        return loss

    def reason_batch(self, bands, node, batch):
        """(iii) for the batch rows ``[users; positives; negatives]`` -> ([(h, h_spec)] of users, positives,
        negatives; Ω counted once per scored node set, as three separate operator calls would)."""
        hu, su, reg_u, _ = self.reason(bands[:batch], node[:batch], "user")
        hi, si, reg_i, _ = self.reason(bands[batch:], node[batch:], "item")
        outputs = [(hu, su), (hi[:batch], si[:batch]), (hi[batch:], si[batch:])]
        return outputs, reg_u + 2 * reg_i

    def mask_consistency_loss(self, full, masked):
        """(ii): MSE between the masked and the (stop-gradient) full pass: representations h of the batch's
        users, positive and negative items (``representation``), or their scores (``prediction``)."""
        if self.mask_consistency == "representation":
            return sum(F.mse_loss(m[0], f[0].detach()) for f, m in zip(full, masked)) / len(full)
        if self.mask_consistency == "prediction":
            pairs = ((0, 1), (0, 2))
            return sum(F.mse_loss(self.score(masked[u], masked[i]), self.score(full[u], full[i]).detach())
                       for u, i in pairs) / len(pairs)
        raise ConfigError(f"mask_consistency '{self.mask_consistency}' is unknown: use representation or prediction.")

    def contrastive_loss(self, user_bands, users, item_bands, items):
        """(iv) on the pre-operator bands of the batch's distinct users and positive items (users weight 1.0).

        ``user_bands`` / ``item_bands`` are the batch rows ``[B, M, D]`` of ``users`` / ``items``; each distinct
        node is used once (at most ``cl_max_nodes`` of them, drawn at random)."""
        total = user_bands.new_zeros(())
        for rows, ids in ((user_bands, users), (item_bands, items)):
            keep = first_occurrences(ids)
            if self.cl_max_nodes and len(keep) > self.cl_max_nodes:
                keep = keep[torch.randperm(len(keep), device=keep.device)[: self.cl_max_nodes]]
            total = total + band_contrastive_loss(rows[keep], self.chunk_slices, self.temperature)
        return total

    # -- evaluation --------------------------------------------------------------------------------------------------
    def pre_epoch_processing(self, epoch):
        self.decomposer.refresh()  # an exact band-edge estimate at the start of every epoch

    @torch.no_grad()
    def forward(self):
        """Whole-graph user and item representations for scoring (no masking), by ``out_mode``."""
        self.decomposer.refresh()
        signal, node = self.graph_signal()
        bands = self.decomposer(signal).transpose(0, 1)
        if self.inference_drop_band is not None:  # diagnostics: one band removed before stage (iii)
            bands = bands.clone()
            bands[:, self.inference_drop_band] = 0
        outputs = []
        for side, span in (("user", slice(0, self.n_users)), ("item", slice(self.n_users, None))):
            h, h_spec, _, weights = self.reason(bands[span], node[span], side)
            self.gate_weights[side] = weights.detach()
            outputs.append({"aggr": h, "spec": h_spec, "mix": torch.cat([h, h_spec], dim=1)}[self.out_mode])
        return tuple(outputs)

    # -- diagnostics (recbole_ssr.analysis) ----------------------------------------------------------------------------
    def remove_band_at_inference(self, band=None):
        """Score with band ``band`` zeroed before stage (iii) (``None`` restores the full model)."""
        if band is not None and not 0 <= int(band) < self.num_bands:
            raise ConfigError(
                f"band {band} does not exist: band_num is {self.num_bands} (bands 0..{self.num_bands - 1}).")
        self.inference_drop_band = None if band is None else int(band)
        self._eval_cache = None

    @torch.no_grad()
    def band_signal(self):
        """(bands [N, M, D] before stage (iii), X [N, D]) of the current parameters, users first, with exact band
        edges for this signal (as in evaluation). The decomposer's edge-tracking state is restored afterwards, so
        calling this between training steps leaves training unchanged."""
        saved = dict(self.decomposer.__dict__)
        try:
            self.decomposer.refresh()
            signal, _ = self.graph_signal()
            return self.decomposer(signal).transpose(0, 1), signal
        finally:
            self.decomposer.__dict__.update(saved)
