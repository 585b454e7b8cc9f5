"""SSR: Structured Spectral Reasoning for frequency-adaptive multimodal recommendation (Yang et al., NeurIPS 2025).

Pipeline (docs/ssr.md, our notation):

* Backbone - per branch m ∈ {id} ∪ content modalities: H⁰_m = row-L2-normalise([P_m ; X_m]) with X_id an item
  table and X_m = MLP(F_m) for content; Z_m = Σ_{l=0..L} Â^l H⁰_m. Node representation R: items [Z_id|Z_1|...],
  users [w_u1 Z_id | w_u2 Z_1 | ...] with per-user branch weights w_u (a free parameter initialised as a softmax,
  used linearly, as in the reference). Side signal Q: items S_mm^n R_item
  (S_mm = Σ_m α_m S_m, the frozen kNN item graphs; α: ``mm_modality_weights``, else the reference's
  0.1 image / 0.9 text when the dataset has exactly those, else uniform), users [P_id | P_1 | ...]. Signal X = R + Q.
* (i) X is split into M graph-frequency bands that sum to X (:mod:`recbole_ssr.model.spectral`, ``band_method``).
* (ii) training only: whole bands dropped per node (``mask_rate``) and a consistency loss between the masked and
  the full pass (``mask_consistency: representation | prediction``; ``mask_fill: zero | noise``).
* (iii) G-HSNO band operator and band gating (separate modules for users and items), ``out_mode``
  ``aggr`` (score ⟨h_u, h_i⟩), ``spec`` (per-band embeddings) or ``mix`` (both).
* (iv) band-wise cross-modal InfoNCE over every pair of content modalities; ``cl_self_negative`` and ``cl_rows``
  choose between the reference's form (the anchor itself among its negatives, every batch row) and ours.
* Opt-in extensions beyond the paper (docs/ssr.md, "Extensions"; off by default): ``band_scale`` multiplies each
  band before stage (iii), in training and evaluation (e.g. ``[1, 1, 0.5]`` attenuates the high band);
  ``eval_band_scale`` does the same at evaluation only (training unchanged; chosen on validation after training);
  ``align_weight`` adds an ID↔content InfoNCE on the node representation R (the ID branch against the mean of the
  content branches), as MGCN and SMORE align their ID and content views.

Loss: BCE with one mean over the 2B logits of the batch (B positives labelled 1, B sampled negatives labelled 0)
+ reg_weight·Ω (Ω counted once per side, users' and items' modules, in each pass: clean, and masked when masking
is on) + mask_weight·L_mask + cl_weight·L_cl, as in the authors' reference. Ablation switches: ``use_operator``, ``use_gate``, ``mask_rate``/``mask_weight`` = 0,
``cl_weight`` = 0, ``use_modalities`` (any subset, [] = ID only), ``band_num``, ``band_method``, ``out_mode``.
The training step (:meth:`SSR.calculate_loss`) needs the whole-graph signal X (gradients need it) but only the
batch's rows of the bands: the band filter returns just those rows and back-propagates row-sparse gradients
(:meth:`SpectralBandDecomposer.bands_at`), and stage (iii) runs once per distinct user/item of the batch, with the
node-only terms (s(x), the gate's x-part) shared between the clean and the masked pass. A band mask is drawn per
distinct node. Evaluation runs one whole-graph forward and caches it.
"""

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
        width = len(self.branches) * self.dim

        # Backbone: preference tables P_m, item inputs X_m, per-user branch weights w_u.
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
        # Opt-in extensions (off by default): per-band multipliers, ID↔content alignment.
        self.band_scale = self.band_multipliers(config["band_scale"], "band_scale")
        self.eval_band_scale = self.band_multipliers(config["eval_band_scale"], "eval_band_scale")
        self.align_weight, self.align_temperature = float(config["align_weight"]), float(config["align_temperature"])
        # Diagnostics (recbole_ssr.experiments.analysis; never used in training): a band zeroed at inference, last gate weights.
        self.inference_drop_band = None
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
    def graph_signal(self):
        """(X = R + Q [N, D], R [N, D]): node representation plus side signal, users first."""
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

    # -- stages (ii)-(iv) ------------------------------------------------------------------------------------------
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

    def node_rows(self, interaction):
        users = interaction[self.USER_ID]
        return users, interaction[self.ITEM_ID] + self.n_users, interaction[self.NEG_ITEM_ID] + self.n_users

    @property
    def masking(self):
        return self.mask_rate > 0 and self.mask_weight > 0

    def calculate_loss(self, interaction):
        signal, node = self.graph_signal()
        users, pos, neg = self.node_rows(interaction)
        batch = len(users)
        # the batch's distinct nodes, sorted: users (< n_users) first, then items; `inverse` maps batch rows to them
        rows, inverse = torch.unique(torch.cat([users, pos, neg]), return_inverse=True)
        num_users = int(torch.searchsorted(rows, self.n_users))
        bands = self.scaled(self.decomposer.bands_at(signal, rows))  # (i) at these rows only: [R, M, D]
        keep = draw_band_keep(len(rows), self.num_bands, self.mask_rate, rows.device) if self.masking else None
        clean, masked, omega = self.reason_rows(bands, node[rows], num_users, keep)
        batch_rows = inverse.split(batch)  # users, positives, negatives

        full = [(clean[0][index], clean[1][index]) for index in batch_rows]
        pos_scores, neg_scores = self.score(full[0], full[1]), self.score(full[0], full[2])
        logits = torch.cat([pos_scores, neg_scores])
        labels = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)])
        loss = F.binary_cross_entropy_with_logits(logits, labels) + self.reg_weight * omega
        if masked is not None:
            masked_rows = [(masked[0][index], masked[1][index]) for index in batch_rows]
            loss = loss + self.mask_weight * self.mask_consistency_loss(full, masked_rows)
        if self.cl_weight > 0 and len(self.chunk_slices) >= 2:
            if self.cl_rows == "batch":  # every batch row, repeats included (the reference)
                node_sets = [batch_rows[0], batch_rows[1]]
            else:
                node_sets = [torch.arange(num_users, device=rows.device), torch.unique(batch_rows[1])]
            loss = loss + self.cl_weight * self.contrastive_loss(bands, node_sets)
        if self.align_weight > 0 and self.chunk_slices:
            user_rows = torch.arange(num_users, device=rows.device)
            loss = loss + self.align_weight * self.alignment_loss(node[rows], [user_rows, torch.unique(batch_rows[1])])
        return loss

    def reason_rows(self, bands, node, num_users, keep=None):
        """(iii) once per distinct node: ``bands`` [R, M, D] / ``node`` [R, D] of users (the first ``num_users``
        rows) then items. Returns ((h, h_spec) of the clean pass, the same of the masked pass with band mask
        ``keep`` [R, M] (None without masking), Ω = Σ over passes of (Ω_user + Ω_item))."""
        clean, masked, omega = [], [], bands.new_zeros(())
        for side, span in (("user", slice(0, num_users)), ("item", slice(num_users, None))):
            side_bands, side_node = bands[span], node[span]
            terms = self.node_terms(side_node, side)
            h, h_spec, regularizer, _ = self.reason(side_bands, side_node, side, terms)
            clean.append((h, h_spec))
            omega = omega + regularizer
            if keep is not None:
                dropped = mask_bands(side_bands, self.mask_rate, self.mask_fill, keep=keep[span])[0]
                h, h_spec, regularizer, _ = self.reason(dropped, side_node, side, terms)
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

    def contrastive_loss(self, bands, node_sets):
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

    def alignment_loss(self, node, node_sets):
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
        signal, node = self.graph_signal()
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
        signal, _ = self.graph_signal()
        return self.decomposer(signal, state=self.decomposer.new_state()).transpose(0, 1), signal
