"""LATTICE, FREEDOM and BM3: training through run(), scoring, 1/2/3 modalities, and what makes each one itself
(LATTICE's learned graph, FREEDOM's frozen item graph and per-epoch edge pruning, BM3's negative-free training)."""

import math

import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import QUICK
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.graph import (bipartite_adjacency, bipartite_edges, degree_edge_weights,
                                     degree_sensitive_pruning, graph_product, sample_edges)
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare
from recbole_ssr.training.trainer import MultimodalTrainer
from recbole_ssr.model.registry import get_model

MODELS = ["LATTICE", "FREEDOM", "BM3"]
ONE, TWO, THREE = {"image": 16}, {"image": 16, "text": 8}, {"image": 16, "text": 8, "audio": 12}


def build(name, root, dataset, **overrides):
    config, _, (train, valid, test) = prepare(name, dataset, config_dict=dict(QUICK, data_path=root, **overrides))
    model = get_model(name)(config, train.dataset).to(config["device"])
    return config, model, (train, valid, test)


def record_calls(monkeypatch, name):
    """Wrap ``calculate_loss`` of model class ``name``: returns the list of (loss, interaction columns) seen."""
    cls = get_model(name)
    original = cls.calculate_loss
    seen = []

    def wrapped(self, interaction):
        loss = original(self, interaction)
        seen.append((loss.item(), list(interaction.columns)))
        return loss

    monkeypatch.setattr(cls, "calculate_loss", wrapped)
    return seen


def dense(rows, cols, values, n):
    return torch.zeros(n, n).index_put_((rows, cols), values.detach(), accumulate=True)


# -- every model ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_trains_one_epoch_through_run(make_mmrec, monkeypatch, model):
    root, name, _ = make_mmrec()
    seen = record_calls(monkeypatch, model)
    outcome = run(model, name, config_dict=dict(QUICK, data_path=root))
    assert outcome["epochs_run"] == 1 and outcome["n_params"] > 0
    assert seen and all(math.isfinite(loss) for loss, _ in seen)
    assert all(0.0 <= v <= 1.0 for v in outcome["test_result"].values())
    if model == "BM3":  # negative-free: the training batches carry only observed (user, item) pairs
        assert all("neg_item_id" not in columns and "item_id" in columns for _, columns in seen)


@pytest.mark.parametrize("modalities", [ONE, TWO, THREE], ids=["1mod", "2mod", "3mod"])
@pytest.mark.parametrize("model", MODELS)
def test_any_number_of_modalities_and_scores_agree(make_mmrec, model, modalities):
    root, name, _ = make_mmrec(modalities=modalities)
    config, net, (train, valid, _) = build(model, root, name)
    assert sorted(net.modality_names) == sorted(modalities)
    trainer = MultimodalTrainer(config, net)
    trainer.fit(train, valid, saved=False, verbose=False)
    assert trainer.epochs_run == 1 and math.isfinite(trainer.train_loss_dict[0])
    net.eval()
    with torch.no_grad():
        users = torch.tensor([1, 2, 5, 9])
        full = net.full_sort_predict(Interaction({net.USER_ID: users}))
        assert full.shape == (users.numel() * net.n_items,) and torch.isfinite(full).all()
        pairs_u = users.repeat_interleave(net.n_items)
        pairs_i = torch.arange(net.n_items).repeat(users.numel())
        pointwise = net.predict(Interaction({net.USER_ID: pairs_u, net.ITEM_ID: pairs_i}))
    assert torch.allclose(full, pointwise, atol=1e-5)


# -- LATTICE ---------------------------------------------------------------------------------------------------------
def test_lattice_item_graph_equals_the_dense_formula(make_mmrec):
    """Edge-list graph == the authors' dense construction, values and gradients (sparse, never I x I)."""
    root, name, _ = make_mmrec()
    _, net, _ = build("LATTICE", root, name, knn_k=4)
    n, k, lam = net.n_items, 4, net.lambda_coeff
    rows, cols, values = net.item_graph()
    probe = torch.randn(n, n)
    mine = torch.zeros(n, n).index_put((rows, cols), values, accumulate=True)
    (mine_grad,) = torch.autograd.grad((mine * probe).sum(), net.modal_weight)

    def knn_dense(features):  # the padding item 0 is no one's neighbour, its own row a self-loop of weight 1
        normalized = torch.nn.functional.normalize(features, dim=1)
        sims = (normalized @ normalized.T).index_fill(1, torch.tensor([0]), float("-inf"))
        top_values, top_index = torch.topk(sims, k, dim=1)
        adj = torch.zeros(n, n).scatter(1, top_index, top_values)
        return torch.cat([torch.eye(n)[:1], adj[1:]])

    def sym(adj):
        inv = adj.sum(1).pow(-0.5)
        inv[torch.isinf(inv)] = 0
        return inv[:, None] * adj * inv[None, :]

    alpha = torch.softmax(net.modal_weight, dim=0)
    learned = sym(sum(alpha[m] * knn_dense(net.projections[name](net.features[name]))
                      for m, name in enumerate(net.modality_names)))
    original = sum(alpha[m] * sym(knn_dense(net.modality_feature(name)))
                   for m, name in enumerate(net.modality_names))
    expected = (1 - lam) * learned + lam * original
    assert torch.allclose(dense(rows, cols, values, n), expected.detach(), atol=1e-5)
    (expected_grad,) = torch.autograd.grad((expected * probe).sum(), net.modal_weight)
    assert torch.allclose(mine_grad, expected_grad, atol=1e-4)
    x = torch.randn(n, 5)
    assert torch.allclose(graph_product((rows, cols, values.detach()), x), expected.detach() @ x, atol=1e-5)
    assert rows.numel() <= 2 * n * k * len(net.modality_names)


def test_lattice_learned_graph_rebuilt_each_epoch_with_gradient_on_first_batch(make_mmrec):
    root, name, _ = make_mmrec()
    config, net, (train, valid, _) = build("LATTICE", root, name, learning_rate=0.01)
    before = dense(*net.learned_item_graph(), net.n_items)
    original_before = net.original_values.clone()
    net.train()
    net.pre_epoch_processing(0)
    batch = next(iter(train)).to(net.device)
    weight = net.projections["image"].weight
    net.calculate_loss(batch).backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0  # first batch: graph built with gradient
    net.zero_grad(set_to_none=True)
    net.calculate_loss(batch).backward()
    assert weight.grad is None  # later batches reuse the detached graph (the authors' build_item_graph flag)
    trainer = MultimodalTrainer(config, net)
    trainer.fit(train, valid, saved=False, verbose=False)
    after = dense(*net.learned_item_graph(), net.n_items)
    assert not torch.allclose(before, after)
    assert torch.equal(net.original_values, original_before)  # the original graphs stay frozen


# -- FREEDOM ---------------------------------------------------------------------------------------------------------
def test_freedom_prunes_edges_each_epoch(make_mmrec):
    root, name, _ = make_mmrec()
    _, net, _ = build("FREEDOM", root, name, dropout=0.5)
    users, items = bipartite_edges(net.interaction_matrix)
    n_edges = len(users)
    train_edges = set(zip(users.tolist(), items.tolist()))
    kept = []
    for epoch in range(2):
        net.pre_epoch_processing(epoch)
        u, i = net.kept_edges
        edges = set(zip(u.tolist(), i.tolist()))
        assert len(u) == int(n_edges * 0.5) == len(edges) and edges <= train_edges
        expected = bipartite_adjacency(u, i, net.n_users, net.n_items).to_dense()
        assert torch.allclose(net.masked_adj.to_dense(), expected, atol=1e-6)
        kept.append(edges)
    assert kept[0] != kept[1]
    net.eval()  # evaluation propagates over the full graph
    assert torch.equal(net.norm_adj.to_dense(), net.norm_adj_matrix().to_dense())


def test_degree_sensitive_pruning_prefers_low_degree_edges():
    # user 0 and item 0 are hubs; edges between degree-1 nodes have weight 1, hub-hub edge 1/sqrt(d_u d_i)
    users = torch.tensor([0] * 10 + list(range(1, 11)))
    items = torch.tensor(list(range(0, 10)) + [0] * 5 + list(range(10, 15)))
    weights = degree_edge_weights(users, items, 11, 15)
    assert torch.isclose(weights[0], torch.tensor(1 / math.sqrt(10 * 6)))
    counts = torch.zeros(len(users))
    torch.manual_seed(0)
    for _ in range(400):
        u, i = degree_sensitive_pruning(users, items, 11, 15, dropout=0.5)
        assert len(u) == 10
        for a, b in zip(u.tolist(), i.tolist()):
            counts[((users == a) & (items == b)).nonzero()[0, 0]] += 1
    light = counts[15:].mean()  # degree-1 user, degree-1 item
    heavy = counts[0]  # the hub-hub edge
    assert light > 2 * heavy
    assert torch.unique(sample_edges(100, 30, weights=torch.rand(100))).numel() == 30


def test_freedom_item_graph_is_frozen(make_mmrec):
    root, name, _ = make_mmrec()
    config, net, (train, valid, _) = build("FREEDOM", root, name, epochs=2)
    before = net.mm_adj.to_dense().clone()
    assert not net.mm_adj.requires_grad
    assert all(p.data_ptr() != net.mm_adj.values().data_ptr() for p in net.parameters())
    trainer = MultimodalTrainer(config, net)
    trainer.fit(train, valid, saved=False, verbose=False)
    assert torch.equal(net.mm_adj.to_dense(), before)
    expected = 0.1 * net.knn_item_graph("image", 10).to_dense() + 0.9 * net.knn_item_graph("text", 10).to_dense()
    assert torch.allclose(before, expected, atol=1e-6)


@pytest.mark.parametrize("modalities, overrides, expected", [
    (TWO, {}, [0.1, 0.9]),  # the authors' image 0.1 + text 0.9
    (ONE, {}, [1.0]),
    ({"image": 16, "audio": 8}, {}, [0.5, 0.5]),  # not the reference set: equal weights
    (THREE, {}, [1 / 3] * 3),
    (TWO, {"modality_weights": {"image": 1.0, "text": 3.0}}, [0.25, 0.75]),
])
def test_freedom_modality_weights_rule(make_mmrec, modalities, overrides, expected):
    root, name, _ = make_mmrec(modalities=modalities)
    _, net, _ = build("FREEDOM", root, name, **overrides)
    assert net.mm_weights == pytest.approx(expected)


# -- BM3 -------------------------------------------------------------------------------------------------------------
def test_bm3_samples_no_negatives(make_mmrec):
    root, name, _ = make_mmrec()
    config, net, (train, _, _) = build("BM3", root, name)
    assert train.neg_sample_args["distribution"] == "none"
    for batch in train:
        assert net.NEG_ITEM_ID not in batch.columns and config["LABEL_FIELD"] not in batch.columns
    assert sum(len(batch) for batch in train) == len(bipartite_edges(net.interaction_matrix)[0])
    with pytest.raises(ConfigError, match="train_neg_sample_args"):
        build("BM3", root, name, train_neg_sample_args={"distribution": "uniform", "sample_num": 1})


# -- shared layers ---------------------------------------------------------------------------------------------------
def test_bipartite_adjacency_variants():
    users, items = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2])
    sym = bipartite_adjacency(users, items, 3, 3, "sym").to_dense()
    assert torch.allclose(sym, bipartite_adjacency(users, items, 3, 3).to_dense())
    rw = bipartite_adjacency(users, items, 3, 3, "rw", self_loops=True).to_dense()
    assert torch.allclose(rw.sum(1), torch.ones(6)) and (rw.diagonal() > 0).all()
    assert rw[0, 0] == pytest.approx(1 / 3)  # user 0: two items + itself
