"""SSR: Structured Spectral Reasoning for frequency-adaptive multimodal recommendation (Yang et al., NeurIPS 2025).

docs/ssr.md describes the method stage by stage, its objective, how the training step is computed and where this
implementation differs from the authors' code. This file follows it section by section:

=============================  =================================================  =================================
docs/ssr.md                    here                                               building blocks
=============================  =================================================  =================================
Backbone                       :meth:`SSR.signal` (X = R + Q, and R)              ``graph.propagate``
Stage (i) - bands              :meth:`SSR.bands`                                  ``spectral.SpectralBandDecomposer``
Stage (ii) - band masking      :meth:`SSR.draw_mask`, :meth:`SSR.mask`,           ``ssr_layers.mask_bands``
                               :meth:`SSR.mask_consistency`
Stage (iii) - operator, gate   :meth:`SSR.reason`                                 ``ssr_layers.BandOperator``,
                                                                                  ``ssr_layers.BandGate``
Stage (iv) - contrast          :meth:`SSR.contrast`                               ``ssr_layers.band_contrastive_loss``
Objective                      :meth:`SSR.calculate_loss`
How the training step is       :class:`BatchNodes` (the batch's distinct nodes),
computed                       :meth:`SSR.reason_passes` (clean and masked pass)
Extensions                     :meth:`SSR.scaled` (``band_scale``, ``eval_band_scale``), :meth:`SSR.align`
Evaluation                     :meth:`SSR.forward` (whole graph, cached by the base class)
=============================  =================================================  =================================
"""

import torch
import torch
import torch.nn.functional as F
from torch import nn

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.abstract import MultimodalRecommender
from recbole_ssr.model.graph import csr_transpose, propagate, sparse_to_csr
from recbole_ssr.model.losses import info_nce
from recbole_ssr.model.spectral import SpectralBandDecomposer
from recbole_ssr.model.ssr_layers import (BandGate, BandOperator, band_contrastive_loss, draw_band_keep,
                                          gate_and_rescale, mask_bands)

OUT_MODES = ("aggr", "spec", "mix")
CL_ROWS = ("distinct", "batch")
WEIGHTS_BY = ("name", "slot")
PREFERENCE_INITS = ("uniform", "normal")


class BatchNodes:
    """The distinct nodes of a training batch: ``rows`` (graph rows, sorted: the ``num_users`` users first, then
    items), and for each batch row where its user, positive and negative item are among them (``users``,
    ``positives``, ``negatives``: indices into ``rows``). Stage (iii) runs once per distinct node; :meth:`pick`
    gathers its outputs back to the batch rows."""

    def __init__(self, users, positives, negatives, n_users):
        """``users``, ``positives``, ``negatives``: graph rows of a batch (items offset by ``n_users``)."""
        self.size = len(users)
        self.rows, inverse = torch.unique(torch.cat([users, positives, negatives]), return_inverse=True)
        self.num_users = int(torch.searchsorted(self.rows, n_users))
        self.users, self.positives, self.negatives = inverse.split(self.size)

    def pick(self, outputs):
        """``outputs`` (a tuple of per-distinct-node tensors) -> [the same at the batch's users, positives,
        negatives]."""
        return [tuple(part[index] for part in outputs) for index in (self.users, self.positives, self.negatives)]

    def contrast_sets(self, every_row):
        """The user and item rows stage (iv) contrasts: every batch row with its repeats (``every_row``, the
        reference's ``cl_rows: batch``) or each distinct user and positive item once."""
        if every_row:
            return [self.users, self.positives]
        return [torch.arange(self.num_users, device=self.rows.device), torch.unique(self.positives)]


class SSR(MultimodalRecommender):
    min_modalities = 0
    config_ranges = {
        "band_num": ("int", 1, None), "cheb_order": ("int", 1, None), "k_poly": ("int", 0, None),
        "eigen_max_nodes": ("int", 0, None), "band_refresh_every": ("int", 0, None),
        "band_col_chunk": ("int?", 1, None),
        "mlp_hidden_size": ("int", 1, None), "cp_rank": ("int", 1, None), "cl_max_nodes": ("int?", 1, None),
        "mask_rate": ("float", 0.0, 1.0, "[)"), "mask_weight": ("float", 0.0, None), "cl_weight": ("float", 0.0, None),
        "align_weight": ("float", 0.0, None), "align_temperature": ("float", 0.0, None, "()"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.read_settings(config)
        adjacency = self.build_backbone(config)
        self.build_stages(config, adjacency)
        self.build_extensions(config)

    def read_settings(self, config):
        self.dim, self.num_bands = config["embedding_size"], config["band_num"]
        self.num_layers, self.n_mm_layers = config["num_layers"], config["n_mm_layers"]
        self.out_mode = config["out_mode"]
        if self.out_mode not in OUT_MODES:
            raise ConfigError(f"out_mode '{self.out_mode}' is unknown: use one of {', '.join(OUT_MODES)}.")
        self.mask_rate, self.mask_weight = float(config["mask_rate"]), float(config["mask_weight"])
        self.mask_consistency, self.mask_fill = config["mask_consistency"], config["mask_fill"]
        self.cl_weight, self.temperature = float(config["cl_weight"]), float(config["tau"])
        self.cl_max_nodes = config["cl_max_nodes"]
        self.cl_self_negative = bool(config["cl_self_negative"])
        self.cl_rows = self.choice(config, "cl_rows", CL_ROWS)
        self.reg_weight = float(config["reg_weight"])
        self.use_operator, self.use_gate = bool(config["use_operator"]), bool(config["use_gate"])
        self.branches = ["id"] + self.modality_names
        self.width = len(self.branches) * self.dim  # of X: one chunk of embedding_size per branch

    def build_backbone(self, config):
        """Preference tables P_m, item inputs X_m (ID table, content MLPs), per-user branch weights w_u, Â and the
        kNN item graph S_mm (buffers, so ``model.to(device)`` moves them); returns Â (sparse COO)."""
        self.user_preference = nn.ModuleDict({m: nn.Embedding(self.n_users, self.dim) for m in self.branches})
        self.item_id_embedding = nn.Embedding(self.n_items, self.dim)
        preference_init = {"uniform": nn.init.xavier_uniform_, "normal": nn.init.xavier_normal_}[
            self.choice(config, "preference_init", PREFERENCE_INITS)]
        for table in self.user_preference.values():
            preference_init(table.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.raw_features = nn.ParameterDict({
            m: nn.Parameter(self.modality_feature(m).clone(), requires_grad=bool(config["finetune_features"]))
            for m in self.modality_names})
        hidden = config["mlp_hidden_size"]
        self.content_encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(self.raw_features[m].shape[1], hidden), nn.LeakyReLU(), nn.Linear(hidden, self.dim))
            for m in self.modality_names})
        # w_u: initialised as softmax(xavier-normal) over the branches (≈ uniform), then a free parameter that is
        # used linearly (not re-normalised at each forward), as in the reference.
        self.user_branch_weights = nn.Parameter(torch.softmax(
            nn.init.xavier_normal_(torch.empty(self.n_users, len(self.branches), 1)), dim=1).squeeze(-1))

        adjacency = self.norm_adj_matrix()
        self.register_buffer("adjacency", sparse_to_csr(adjacency), persistent=False)
        self.register_buffer("item_graph", None, persistent=False)  # buffers: moved by model.to(device)
        if self.modality_names:  # S_mm = Σ_m α_m S_m (α: mm_modality_weights)
            weights = self.item_graph_weights(config)
            self.item_graph = sparse_to_csr(self.mixed_item_graph(config["knn_k"], weights))
        self.register_buffer("item_graph_t", None, persistent=False)
        self.item_graph_t = csr_transpose(self.item_graph) if self.item_graph is not None else None  # kNN: directed
        return adjacency

    def build_stages(self, config, adjacency):
        """(i) the band decomposer of Â; (iii) the operators and gates, one each for users and items."""
        self.decomposer = SpectralBandDecomposer(
            adjacency.cpu(), num_bands=self.num_bands, method=config["band_method"], k_poly=config["k_poly"],
            cheb_order=config["cheb_order"], eigen_max_nodes=config["eigen_max_nodes"],
            refresh_every=config["band_refresh_every"], track_edges=config["band_track_edges"],
            col_chunk=config["band_col_chunk"])
        rank = config["cp_rank"]
        self.operators = nn.ModuleDict({s: BandOperator(self.num_bands, self.width, rank) for s in ("user", "item")})
        self.gates = nn.ModuleDict({s: BandGate(self.num_bands, self.width) for s in ("user", "item")})
        self.chunk_slices = [slice(k * self.dim, (k + 1) * self.dim) for k in range(1, len(self.branches))]

    def build_extensions(self, config):
        """Opt-in extensions (off by default): per-band multipliers, ID↔content alignment; and the diagnostics'
        state (recbole_ssr.experiments.analysis; never used in training)."""
        self.band_scale = self.band_multipliers(config["band_scale"], "band_scale")
        self.eval_band_scale = self.band_multipliers(config["eval_band_scale"], "eval_band_scale")
        self.align_weight, self.align_temperature = float(config["align_weight"]), float(config["align_temperature"])
        self.inference_drop_band = None  # a band zeroed at inference; the last gate weights
        self.gate_weights = {}

    @staticmethod
    def choice(config, key, allowed):
        value = config[key]
        if value not in allowed:
            raise ConfigError(f"{key} '{value}' is unknown: use one of {', '.join(allowed)} (properties/model/SSR.yaml).")
        return value

    def item_graph_weights(self, config):
        """α of S_mm: ``mm_modality_weights`` when set; else ``reference_modality_weights`` matched to the dataset's
        modalities by ``mm_weights_by``: ``name`` (only when the names are exactly the reference's, else uniform)
        or ``slot`` (the reference, whose image and text slots take whatever two modalities it is given: a modality
        named like a slot takes that slot's weight, the others the remaining slots' weights in order; uniform when
        the dataset has not as many modalities as there are slots)."""
        reference = config["reference_modality_weights"]
        if (self.choice(config, "mm_weights_by", WEIGHTS_BY) == "slot" and config["mm_modality_weights"] is None
                and reference and len(reference) == len(self.modality_names)):
            free = iter(w for name, w in reference.items() if name not in self.modality_names)
            weights = [reference[m] if m in reference else next(free) for m in self.modality_names]
            return self.modality_weights(weights, key="reference_modality_weights")
        return self.modality_weights(key="mm_modality_weights")

    # -- backbone ------------------------------------------------------------------------------------------------
    def signal(self):
        """Backbone: (X = R + Q [N, D], R [N, D]), the node representation plus the side signal, users first."""
        user_inputs = [self.user_preference[m].weight for m in self.branches]
        item_inputs = [self.item_id_embedding.weight] + [
            self.content_encoders[m](self.raw_features[m]) for m in self.modality_names]
        h0 = torch.cat([torch.cat([F.normalize(u, dim=1), F.normalize(i, dim=1)], dim=0)
                        for u, i in zip(user_inputs, item_inputs)], dim=1)
        z = propagate(self.adjacency, h0, self.num_layers, combine="sum", transpose=self.adjacency)  # Σ_l Â^l H⁰
        z_users, z_items = z[: self.n_users], z[self.n_users:]
        branch_weights = self.user_branch_weights.repeat_interleave(self.dim, dim=1)
        r_users = z_users * branch_weights
        q_users = torch.cat(user_inputs, dim=1)
        if self.item_graph is not None:  # S_mm^n Z_items
            q_items = propagate(self.item_graph, z_items, self.n_mm_layers, transpose=self.item_graph_t)
        else:
            q_items = torch.zeros_like(z_items)
        r = torch.cat([r_users, z_items], dim=0)
        return r + torch.cat([q_users, q_items], dim=0), r

    # -- stages (i)-(iv) -------------------------------------------------------------------------------------------
    def bands(self, signal, rows):
        """(i) the bands of ``signal`` at graph rows ``rows`` only: [R, M, D] (times ``band_scale``); the filter
        back-propagates row-sparse gradients (:meth:`SpectralBandDecomposer.bands_at`)."""
        return self.scaled(self.decomposer.bands_at(signal, rows))

    def draw_mask(self, rows):
        """(ii) which bands each node of ``rows`` keeps in the masked pass: [R, M] (``mask_rate``)."""
        return draw_band_keep(len(rows), self.num_bands, self.mask_rate, rows.device)

    def mask(self, bands, keep):
        """(ii) ``bands`` [R, M, D] with the bands ``keep`` [R, M] drops zeroed or noised (``mask_fill``)."""
        return mask_bands(bands, self.mask_rate, self.mask_fill, keep=keep)[0]

    def node_terms(self, node, side):
        """The stage-(iii) terms that depend on the node only (s(x), the gate's x-part), for reuse across passes."""
        terms = {}
        if self.use_operator:
            terms["scale"] = self.operators[side].node_scale(node)
        if self.use_gate:
            terms["gate"] = self.gates[side].node_logits(node)
        return terms

    def reason(self, bands, node, side, terms=None):
        """(iii): bands [B, M, D] of one side -> (h, h_spec, Ω, gate weights w [B, M]); ``terms`` from
        :meth:`node_terms` of ``node`` if already computed."""
        terms = {} if terms is None else terms
        regularizer = bands.new_zeros(())
        if self.use_operator:
            bands = self.operators[side](bands, node, node_scale=terms.get("scale"))
            regularizer = self.operators[side].regularizer()
        if self.use_gate:
            h, h_spec, weights = self.gates[side](bands, node, node_logits=terms.get("gate"))
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

    def batch_nodes(self, interaction):
        """The :class:`BatchNodes` of a training batch."""
        return BatchNodes(interaction[self.USER_ID], interaction[self.ITEM_ID] + self.n_users,
                          interaction[self.NEG_ITEM_ID] + self.n_users, self.n_users)

    @property
    def masking(self):
        return self.mask_rate > 0 and self.mask_weight > 0

    def calculate_loss(self, interaction):
        """The objective (docs/ssr.md): BCE over the batch's positive and negative scores + reg_weight·Ω
        + mask_weight·L_mask (ii) + cl_weight·L_cl (iv) (+ align_weight·L_align, an extension)."""
        signal, node = self.signal()
        batch = self.batch_nodes(interaction)
        bands = self.bands(signal, batch.rows)  # (i)
        keep = self.draw_mask(batch.rows) if self.masking else None  # (ii)
        clean, masked, omega = self.reason_passes(bands, node[batch.rows], batch.num_users, keep)  # (iii)
        full = batch.pick(clean)  # (h, h_spec) of the batch's users, positives, negatives
        pos_scores, neg_scores = self.score(full[0], full[1]), self.score(full[0], full[2])
        logits = torch.cat([pos_scores, neg_scores])
        labels = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)])
        loss = F.binary_cross_entropy_with_logits(logits, labels) + self.reg_weight * omega
        if masked is not None:  # (ii): the masked pass agrees with the clean one
            loss = loss + self.mask_weight * self.mask_consistency_loss(full, batch.pick(masked))
        if self.cl_weight > 0 and len(self.chunk_slices) >= 2:  # (iv)
            loss = loss + self.cl_weight * self.contrast(bands, batch.contrast_sets(self.cl_rows == "batch"))
        if self.align_weight > 0 and self.chunk_slices:
            loss = loss + self.align_weight * self.align(node[batch.rows], batch.contrast_sets(every_row=False))
        return loss

    def reason_passes(self, bands, node, num_users, keep=None):
        """(iii) once per distinct node, for the clean pass and (with ``keep`` [R, M], (ii)) the masked pass:
        ``bands`` [R, M, D] / ``node`` [R, D] of users (the first ``num_users`` rows) then items. Returns
        ((h, h_spec) of the clean pass, the same of the masked pass (None without masking), Ω = Σ over passes of
        (Ω_user + Ω_item)). The node-only terms (:meth:`node_terms`) are computed once for both passes."""
        clean, masked, omega = [], [], bands.new_zeros(())
        for side, span in (("user", slice(0, num_users)), ("item", slice(num_users, None))):
            side_bands, side_node = bands[span], node[span]
            terms = self.node_terms(side_node, side)
            h, h_spec, regularizer, _ = self.reason(side_bands, side_node, side, terms)
            clean.append((h, h_spec))
            omega = omega + regularizer
            if keep is not None:
                h, h_spec, regularizer, _ = self.reason(self.mask(side_bands, keep[span]), side_node, side, terms)
                masked.append((h, h_spec))
                omega = omega + regularizer

        def joined(parts):
            return tuple(torch.cat(pair, dim=0) for pair in zip(*parts))
        return joined(clean), (joined(masked) if keep is not None else None), omega

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

    def contrast(self, bands, node_sets):
        """(iv) on the pre-operator bands ``bands`` [R, M, D] of the batch's distinct nodes; ``node_sets`` are row
        indices into them (users, positive items: the distinct ones, or every batch row with ``cl_rows: batch``;
        users weight 1.0), each capped at ``cl_max_nodes`` rows drawn at random."""
        total = bands.new_zeros(())
        for index in node_sets:
            if self.cl_max_nodes and len(index) > self.cl_max_nodes:
                index = index[torch.randperm(len(index), device=index.device)[: self.cl_max_nodes]]
            total = total + band_contrastive_loss(bands[index], self.chunk_slices, self.temperature,
                                                  self_negative=self.cl_self_negative)
        return total

    def align(self, node, node_sets):
        """(extension) symmetric InfoNCE between the ID branch of R and the mean of its content branches, for the
        batch's distinct users and positive items (rows of ``node`` [R, D]), each capped at ``cl_max_nodes``."""
        total = node.new_zeros(())
        for index in node_sets:
            if self.cl_max_nodes and len(index) > self.cl_max_nodes:
                index = index[torch.randperm(len(index), device=index.device)[: self.cl_max_nodes]]
            rows = node[index]
            ids = rows[:, : self.dim]
            content = torch.stack([rows[:, part] for part in self.chunk_slices]).mean(dim=0)
            total = total + (info_nce(ids, content, self.align_temperature)
                             + info_nce(content, ids, self.align_temperature)) / 2
        return total

    def band_multipliers(self, value, key):
        """``band_scale`` / ``eval_band_scale`` (named ``key`` in errors): None, or one non-negative multiplier per
        band -> a [M, 1] tensor."""
        if value is None:
            return None
        values = list(value) if isinstance(value, (list, tuple)) else None
        if (values is None or len(values) != self.num_bands
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values)):
            raise ConfigError(f"{key}: expected ~ or a list of {self.num_bands} non-negative numbers (one per "
                              f"band, low to high; band_num is {self.num_bands}), got {value!r}. E.g. "
                              f"{[1.0] * (self.num_bands - 1) + [0.5]} attenuates the highest band.")
        return torch.tensor(values, dtype=torch.float32).unsqueeze(-1)

    def scaled(self, bands, scale=None):
        """Bands [R, M, D] times ``band_scale`` and, when given, the multipliers ``scale`` [M, 1]."""
        for multipliers in (self.band_scale, scale):
            if multipliers is not None:
                bands = bands * multipliers.to(bands.device, bands.dtype)
        return bands

    def set_eval_band_scale(self, value):
        """Score with ``eval_band_scale`` = ``value`` (a list of M multipliers, or None for the trained model);
        training is unaffected. For choosing it on validation after training (recbole_ssr/experiments/eval_band_scale.py)."""
        self.eval_band_scale = self.band_multipliers(value, "eval_band_scale")
        self._eval_cache = None

    # -- evaluation --------------------------------------------------------------------------------------------------
    def pre_epoch_processing(self, epoch):
        self.decomposer.refresh()  # an exact band-edge estimate at the start of every epoch

    @torch.no_grad()
    def forward(self):
        """Whole-graph user and item representations for scoring (no masking), by ``out_mode``."""
        self.decomposer.refresh()
        signal, node = self.signal()
        bands = self.scaled(self.decomposer(signal).transpose(0, 1), self.eval_band_scale)
        if self.inference_drop_band is not None:  # diagnostics: one band removed before stage (iii)
            bands = bands.clone()
            bands[:, self.inference_drop_band] = 0
        outputs = []
        for side, span in (("user", slice(0, self.n_users)), ("item", slice(self.n_users, None))):
            h, h_spec, _, weights = self.reason(bands[span], node[span], side)
            self.gate_weights[side] = weights.detach()
            outputs.append({"aggr": h, "spec": h_spec, "mix": torch.cat([h, h_spec], dim=1)}[self.out_mode])
        return tuple(outputs)

    # -- diagnostics (recbole_ssr.experiments.analysis) ------------------------------------------------------------------------
    @torch.no_grad()
    def mixing_matrices(self):
        """{side: (S [M, M] as nested lists, distance from uniform)} of the G-HSNO operators; the distance is
        max |S - 1/M| (0 = every band gets the mean of all bands, i.e. the operator mixes nothing)."""
        if not self.use_operator:
            return {}
        summary = {}
        for side, operator in self.operators.items():
            mixing = operator.mixing().detach().cpu()
            summary[side] = {"S": mixing.tolist(), "max_abs_from_uniform": float((mixing - 1 / self.num_bands).abs().max())}
        return summary

    def results_summary(self):
        """Written into the results file after training (best-valid weights): the band-mixing matrices S."""
        return {"mixing": self.mixing_matrices()}

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
        edges for this signal (as in evaluation). The bands are cut with a fresh band-edge state, so the
        decomposer's own state (and so training) is left unchanged."""
        signal, _ = self.signal()
        return self.decomposer(signal, state=self.decomposer.new_state()).transpose(0, 1), signal
