"""MMGCN, GRCN, DualGNN, SLMRec and DRAGON: training through run() with 1-3 modalities, falling losses, scoring
recomputed in eval mode, a clear error without modalities, and each model's mechanism - including the adaptations
to RecBole's trainer (SLMRec without sampled negatives, DualGNN/DRAGON's user graph resampled every epoch) and the
parts checked against a dense re-computation (GRCN's routing and refinement, the sparse co-occurrence graph)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from conftest import QUICK, REPO_ROOT, tiny_interactions
from recbole_ssr.config.configurator import Config
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.graph import cooccurrence_neighbours, edge_softmax, neighbour_graph, sample_user_neighbours
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare
from recbole_ssr.config.search_space import load_search_space
from recbole_ssr.training.trainer import MultimodalTrainer
from recbole_ssr.model.registry import get_model

MODELS = ["MMGCN", "GRCN", "DualGNN", "SLMRec", "DRAGON"]
MODALITY_SETS = {1: {"image": 16}, 2: {"image": 16, "text": 8}, 3: {"image": 16, "text": 8, "audio": 5}}


def build(make_mmrec, model, modalities=None, **overrides):
    root, name, _ = make_mmrec(modalities=modalities)
    config, _, (train, valid, _) = prepare(model, name, config_dict=dict(QUICK, data_path=root, **overrides))
    return get_model(model)(config, train.dataset).to(config["device"]), config, train, valid


def dense_training_matrix(net):
    return torch.as_tensor(net.interaction_matrix.toarray(), dtype=torch.float32)


# -- every model -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_trains_and_evaluates_through_run(make_mmrec, model):
    root, name, _ = make_mmrec()
    outcome = run(model, name, config_dict=dict(QUICK, data_path=root, epochs=2))  # RecBole stops on a NaN loss
    assert outcome["epochs_run"] == 2 and outcome["n_params"] > 0
    assert all(0.0 <= v <= 1.0 for v in outcome["test_result"].values())


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_every_modality_of_the_dataset_is_used(make_mmrec, model, n_modalities):
    """Whatever modalities the dataset has, each one's own parameters get a gradient from the loss."""
    net, _, train, _ = build(make_mmrec, model, modalities=MODALITY_SETS[n_modalities])
    assert sorted(net.modality_names) == sorted(MODALITY_SETS[n_modalities])
    loss = net.calculate_loss(next(iter(train)))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    for modality in net.modality_names:
        own = [p for key, p in net.named_parameters() if modality in key.split(".")]
        assert own and any(p.grad is not None and p.grad.abs().sum() > 0 for p in own), modality


@pytest.mark.parametrize("model", MODELS)
def test_training_loss_decreases(make_mmrec, model):
    net, config, train, valid = build(make_mmrec, model, epochs=8, learning_rate=0.01)
    assert len(net.modality_names) == 2
    trainer = MultimodalTrainer(config, net)
    trainer.fit(train, valid, saved=False, verbose=False)
    losses = [trainer.train_loss_dict[epoch] for epoch in range(8)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("model", MODELS)
def test_full_sort_predict_equals_predict_and_is_recomputed_in_eval_mode(make_mmrec, model):
    net, config, train, _ = build(make_mmrec, model, learning_rate=0.05)
    users = torch.tensor([1, 5, 17, 33])
    everything = Interaction({net.USER_ID: users})
    pairs = Interaction({net.USER_ID: users.repeat_interleave(net.n_items),
                         net.ITEM_ID: torch.arange(net.n_items).repeat(users.numel())})
    net.eval()
    with torch.no_grad():
        before = net.full_sort_predict(everything)
        assert before.shape == (users.numel() * net.n_items,) and torch.isfinite(before).all()
        assert torch.allclose(net.predict(pairs), before, atol=1e-5)
    net.train()  # one training step changes the parameters ...
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    optimizer.zero_grad()
    net.calculate_loss(next(iter(train))).backward()
    optimizer.step()
    net.eval()  # ... and evaluation scores with them, computed in eval mode (not cached from a training batch)
    with torch.no_grad():
        after = net.full_sort_predict(everything)
        user_e, item_e = net.forward()
    assert not torch.allclose(after, before)
    assert torch.allclose(after, (user_e[users] @ item_e.T).reshape(-1), atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_a_dataset_without_modalities_is_a_clear_error(make_mmrec, model):
    root, name, _ = make_mmrec(modalities={})
    with pytest.raises(ConfigError, match=f"{model} needs at least 1 content modality, but dataset 'tiny' has none"):
        run(model, name, config_dict=dict(QUICK, data_path=root))
    root, name, _ = make_mmrec(name="full")
    with pytest.raises(ConfigError, match=f"use_modalities=\\[\\] selects 0 modalities, but {model} needs at least 1"):
        Config(model, name, config_dict={"data_path": root, "use_modalities": []})


def test_search_spaces_hold_the_authors_grids():
    def values(model, key):
        space = load_search_space(f"{REPO_ROOT}/properties/search/{model}.yaml")
        return sorted(space.params[key].finite_values() if key in space.params else [space.fixed[key]])

    assert values("SMORE", "cl_loss") == [0.001, 0.01, 0.1]  # at 0.01 alone SMORE can collapse
    assert values("MMGCN", "reg_weight") == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1]
    assert values("GRCN", "learning_rate") == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    for model in ("DualGNN", "DRAGON"):
        assert values(model, "learning_rate") == values(model, "reg_weight") == [1e-5, 1e-4, 1e-3, 1e-2, 0.1]
    assert values("SLMRec", "ssl_alpha") == [0.01, 0.05, 0.1, 0.5, 1.0]


# -- MMGCN -------------------------------------------------------------------------------------------------------------
def test_mmgcn_trains_id_embeddings_and_preferences(make_mmrec):
    """The authors' ID embeddings and user preferences are plain tensors that never train; here they are
    parameters that move."""
    net, _, train, _ = build(make_mmrec, "MMGCN")
    parameters = {id(p) for p in net.parameters()}
    tables = [net.user_embedding.weight, net.item_id_embedding.weight] + [g.preference for g in net.gcns.values()]
    assert all(id(t) in parameters for t in tables)
    before = [t.detach().clone() for t in tables]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.calculate_loss(next(iter(train))).backward()
    optimizer.step()
    assert all(not torch.equal(b, t) for b, t in zip(before, tables))
    # the authors' widths: image projected to 256 first, text raw; concatenation in the combination layer
    assert net.gcns["image"].preference.shape[1] == 256 and net.gcns["text"].preference.shape[1] == 8
    assert net.gcns["text"].projection is None and len(net.gcns["text"].combination) == 3
    assert net.gcns["text"].combination[0].in_features == 8 + 64
    mean = net.mean_adj.to_dense()  # mean aggregation: every node with neighbours averages them
    degree = (mean > 0).sum(1)
    assert torch.allclose(mean.sum(1)[degree > 0], torch.ones(int((degree > 0).sum())))


def test_mmgcn_latent_width_per_modality_is_checked(make_mmrec):
    with pytest.raises(ConfigError, match="modality_latent_dim gives no value for modality 'text'"):
        build(make_mmrec, "MMGCN", modality_latent_dim={"image": 256})


# -- GRCN --------------------------------------------------------------------------------------------------------------
def test_grcn_routing_matches_dense_computation(make_mmrec):
    """Prototypical network: p_u <- normalise(p_u + Σ_i softmax_i(p_u·c_i) c_i) over u's training items - checked
    against a dense masked softmax; with n_routing 0 (what the authors' code computes) p_u stays put."""
    net, _, _, _ = build(make_mmrec, "GRCN", n_routing=2)
    R = dense_training_matrix(net)
    with torch.no_grad():
        items = F.normalize(F.leaky_relu(net.content["image"](net.modality_feature("image"))), dim=1)
        start = F.normalize(net.preference["image"], dim=1)
        expected = start
        for _ in range(2):
            scores = (expected @ items.T).masked_fill(R == 0, float("-inf"))
            weights = torch.nan_to_num(torch.softmax(scores, dim=1))  # users without training items: no update
            expected = F.normalize(expected + weights @ items, dim=1)
        assert torch.allclose(net.routed_preference(start, items), expected, atol=1e-5)
        net.n_routing = 0
        assert torch.allclose(net.routed_preference(start, items), start)
        assert not torch.allclose(expected, start, atol=1e-3)


def test_grcn_refinement_matches_dense_computation(make_mmrec):
    """Edge attention is a softmax over each node's neighbours, edge weight = ReLU(max_m α^m κ_source,m), and a
    source whose confidences are all negative sends nothing (pruned); ID propagation e + We + W²e."""
    net, _, _, _ = build(make_mmrec, "GRCN")
    n = net.n_users + net.n_items
    R = dense_training_matrix(net)
    adjacency = torch.zeros(n, n)
    adjacency[:net.n_users, net.n_users:], adjacency[net.n_users:, :net.n_users] = R, R.T
    with torch.no_grad():
        net.confidence[3] = -1.0  # user 3 loses confidence in every modality
        representations, alphas = zip(*(net.content_graph(name) for name in net.modality_names))
        for name, x_out, alpha in zip(net.modality_names, representations, alphas):
            x = torch.cat([F.normalize(net.routed_preference(F.normalize(net.preference[name], dim=1),
                                                             F.normalize(F.leaky_relu(net.content[name](
                                                                 net.modality_feature(name))), dim=1))),
                           F.normalize(F.leaky_relu(net.content[name](net.modality_feature(name))), dim=1)])
            attention = torch.nan_to_num(torch.softmax((x @ x.T).masked_fill(adjacency == 0, float("-inf")), dim=1))
            assert torch.allclose(x_out, x + attention @ x, atol=1e-5)
            dense_alpha = attention[net.edge_targets, net.edge_sources]
            assert torch.allclose(alpha, dense_alpha, atol=1e-6)
        weights = net.refined_edge_weights(list(alphas))
        stacked = torch.stack(alphas, dim=1) * net.confidence[net.edge_sources]
        assert torch.allclose(weights, stacked.max(dim=1).values.clamp(min=0))
        from_user_3 = net.edge_sources == 3
        assert from_user_3.any() and (weights[from_user_3] == 0).all()
        W = torch.zeros(n, n).index_put_((net.edge_targets, net.edge_sources), weights, accumulate=True)
        ids = F.normalize(torch.cat([net.user_embedding.weight, net.item_id_embedding.weight]), dim=1)
        users, items = net.forward()
        id_part = torch.cat([users, items])[:, :net.embedding_size]
        assert torch.allclose(id_part, ids + W @ ids + W @ W @ ids, atol=1e-5)
    assert users.shape[1] == net.embedding_size + 2 * 64  # [ID ‖ image ‖ text]


def test_edge_softmax_groups_by_index():
    scores = torch.tensor([1.0, 2.0, 3.0, 0.5, 100.0])
    index = torch.tensor([0, 0, 1, 0, 2])
    alpha = edge_softmax(scores, index, 4)
    assert torch.allclose(alpha[[0, 1, 3]], torch.softmax(scores[[0, 1, 3]], dim=0))
    assert torch.allclose(alpha[[2, 4]], torch.ones(2))


# -- DualGNN and DRAGON ------------------------------------------------------------------------------------------------
def test_cooccurrence_neighbours_are_the_top_k_of_dense_RRt():
    frame = tiny_interactions()
    train = frame[frame.x_label == 0]
    R = sp.csr_matrix((np.ones(len(train)), (train.userID, train.itemID)), shape=(40, 30))
    dense = torch.as_tensor((R @ R.T).toarray(), dtype=torch.float32)
    dense.fill_diagonal_(0)
    indices, counts = cooccurrence_neighbours(R, 20)
    assert indices.shape == counts.shape == (40, 20)
    assert torch.equal(counts, torch.topk(dense, 20, dim=1).values)  # the k largest counts, sorted
    valid = counts > 0
    assert torch.equal(dense.gather(1, indices)[valid], counts[valid])  # each listed co-user has that count
    assert not (indices[valid] == torch.arange(40).unsqueeze(1).expand(-1, 20)[valid]).any()  # never itself
    chunked_indices, chunked_counts = cooccurrence_neighbours(R, 20, chunk_rows=3)
    assert torch.equal(chunked_counts, counts)


def test_sampled_user_graph_pads_short_lists_and_resamples_them():
    indices = torch.tensor([[1, 2, 3], [0, 2, 0], [0, 0, 0], [1, 0, 0]])
    counts = torch.tensor([[3.0, 2.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    graphs = [neighbour_graph(*sample_user_neighbours(indices, counts)).to_dense() for _ in range(30)]
    expected_full = torch.zeros(4)
    expected_full[[1, 2, 3]] = torch.softmax(torch.tensor([3.0, 2.0, 1.0]), dim=0)
    for graph in graphs:
        assert torch.allclose(graph[0], expected_full)  # k co-users: the same top-k every epoch
        assert graph[2].abs().sum() == 0  # no co-user: no neighbour
        assert torch.allclose(graph[3], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # one co-user fills every slot
        assert torch.isclose(graph[1].sum(), torch.tensor(1.0)) and set(graph[1].nonzero().view(-1).tolist()) == {0, 2}
    # user 1: the third slot copies one of the first two at random, so its weights differ between epochs
    e2, e1 = math.exp(2.0), math.exp(1.0)
    outcomes = {round(float(g[1, 0]), 4) for g in graphs}
    assert outcomes == {round(2 * e2 / (2 * e2 + e1), 4), round(e2 / (e2 + 2 * e1), 4)}


@pytest.mark.parametrize("model", ["DualGNN", "DRAGON"])
def test_user_graph_is_resampled_before_every_epoch(make_mmrec, monkeypatch, model):
    net, config, train, valid = build(make_mmrec, model, user_knn_k=20, epochs=3)
    graphs = []
    original = type(net).pre_epoch_processing

    def recording(self, epoch=None):
        original(self, epoch)
        graphs.append(self.user_graph.to_dense().clone())

    monkeypatch.setattr(type(net), "pre_epoch_processing", recording)
    MultimodalTrainer(config, net).fit(train, valid, saved=False, verbose=False)
    assert len(graphs) == 3  # the trainer's per-epoch hook
    counts = (net.neighbour_counts > 0).sum(dim=1)
    full, short = counts >= 20, (counts > 0) & (counts < 20)
    assert full.any() and short.any()
    for graph in graphs:
        assert torch.allclose(graph.sum(dim=1)[counts > 0], torch.ones(int((counts > 0).sum())), atol=1e-5)
    assert torch.equal(graphs[0][full], graphs[1][full])  # top-k co-users: fixed
    assert not torch.equal(graphs[0][short], graphs[1][short])  # fewer co-users: padding drawn afresh
    net.eval()  # evaluation uses the last epoch's graph, unchanged
    with torch.no_grad():
        first = net.forward()[0].clone()
        net.train()
        net.eval()
        assert torch.equal(net.forward()[0], first)
    assert torch.equal(net.user_graph.to_dense(), graphs[-1])
    # a checkpoint carries its epoch's neighbour lists: loading it restores that graph after later resampling
    state, saved = {key: value.clone() for key, value in net.state_dict().items()}, graphs[-1]
    net.pre_epoch_processing()
    assert not torch.equal(net.user_graph.to_dense(), saved)
    net.load_state_dict(state)
    assert torch.equal(net.user_graph.to_dense(), saved)


def test_dualgnn_and_dragon_fusions(make_mmrec):
    dual, _, _, _ = build(make_mmrec, "DualGNN")
    with torch.no_grad():
        views = dual.modality_views()
        users, items = dual.fuse(views)
        w = dual.user_weights
        assert torch.allclose(users, w[:, :1] * views["image"][0] + w[:, 1:] * views["text"][0])  # weighted sum
        assert torch.allclose(items, views["image"][1] + views["text"][1])  # item: plain sum
    assert torch.allclose(w.sum(dim=1), torch.ones(dual.n_users), atol=1e-5)  # softmax at initialisation
    dragon, config, train, valid = build(make_mmrec, "DRAGON", epochs=2)
    with torch.no_grad():
        views = dragon.modality_views()
        users, items = dragon.fuse(views)
        w = dragon.user_weights
        assert torch.allclose(users, torch.cat([w[:, :1] * views["image"][0], w[:, 1:] * views["text"][0]], 1))
        concatenated = torch.cat([views["image"][1], views["text"][1]], dim=1)
        item_graph = 0.1 * dragon.knn_item_graph("image", 10).to_dense() + 0.9 * dragon.knn_item_graph(
            "text", 10).to_dense()
        assert torch.allclose(dragon.mm_adj.to_dense(), item_graph, atol=1e-6)  # the authors' 0.1 image + 0.9 text
        assert torch.allclose(items, concatenated + item_graph @ concatenated, atol=1e-5)
    before = dragon.mm_adj.to_dense().clone()
    MultimodalTrainer(config, dragon).fit(train, valid, saved=False, verbose=False)
    assert torch.equal(dragon.mm_adj.to_dense(), before)  # frozen


def test_one_modality_has_no_user_weights(make_mmrec):
    for model in ("DualGNN", "DRAGON"):
        net, _, _, _ = build(make_mmrec, model, modalities={"audio": 6})
        assert net.user_weights is None
        with torch.no_grad():
            views = net.modality_views()
            assert torch.equal(net.fuse(views)[0], views["audio"][0])


# -- SLMRec ------------------------------------------------------------------------------------------------------------
def test_slmrec_trains_on_observed_pairs_only(make_mmrec):
    net, config, train, _ = build(make_mmrec, "SLMRec")
    assert train.neg_sample_args["distribution"] == "none"
    for batch in train:
        assert net.NEG_ITEM_ID not in batch.columns and config["LABEL_FIELD"] not in batch.columns
    assert sum(len(batch) for batch in train) == net.interaction_matrix.nnz
    with pytest.raises(ConfigError, match="SLMRec trains without negative items"):
        build(make_mmrec, "SLMRec", train_neg_sample_args={"distribution": "uniform", "sample_num": 1})


def test_slmrec_loss_is_in_batch_infonce_plus_fac(make_mmrec):
    """Main loss: each (user, positive) pair against the batch's other positives (cosine / τ); FAC on raw inner
    products along the chain ID -> image -> text, the last space half as wide."""
    net, _, train, _ = build(make_mmrec, "SLMRec", ssl_alpha=0.5)
    batch = next(iter(train))
    users, items = batch[net.USER_ID], batch[net.ITEM_ID]
    with torch.no_grad():
        views = net.views()
        user_e, item_e = net.forward()
        logits = F.normalize(user_e[users], dim=1) @ F.normalize(item_e[items], dim=1).T / 0.2
        main = F.cross_entropy(logits, torch.arange(len(users)))
        anchor_v = net.anchor_maps["image"](views["_id"][1][items])
        anchor_t = net.anchor_maps["text"](anchor_v)
        fac = sum(F.cross_entropy(a @ net.content_maps[m](views[m][1][items]).T / 0.2, torch.arange(len(items)))
                  for a, m in ((anchor_v, "image"), (anchor_t, "text")))
        assert anchor_v.shape[1] == 64 and anchor_t.shape[1] == 32
        assert net.calculate_loss(batch).item() == pytest.approx((main + 0.5 * fac).item(), rel=1e-5)
        # shared user embeddings: the user rows of every view start from the same table
        base = net.user_embedding.weight
        for view in views.values():
            assert not torch.allclose(view[0], base)  # propagated ...
        net.user_embedding.weight[4] += 1.0
        changed = net.views()
        assert all(not torch.allclose(changed[v][0][4], views[v][0][4]) for v in views)  # ... from one table


@pytest.mark.parametrize("model, key, value", [("SLMRec", "ssl_temp", 0.0), ("SLMRec", "temperature", -0.2),
                                               ("DualGNN", "user_knn_k", 0), ("GRCN", "n_routing", -1)])
def test_out_of_range_settings_are_refused(make_mmrec, model, key, value):
    root, name, _ = make_mmrec()
    with pytest.raises(ConfigError, match=f"{key}={value!r} .* is out of range"):
        Config(model, name, config_dict={"data_path": root, key: value})
