"""Graph utilities (adjacency, chunked kNN, cache) and the trainer (hook, LR decay, strict early stopping)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import QUICK
from recbole_ssr.core.cache import GraphCache
from recbole_ssr.training.build import prepare
from recbole_ssr.model.graph import (bipartite_adjacency, csr_transpose, knn_adjacency, knn_neighbours, propagate,
                                     rw_normalized)
from recbole_ssr.model.registry import get_model
from recbole_ssr.training.trainer import MultimodalTrainer


def test_normalized_adjacency_matches_dense_formula():
    rng = np.random.default_rng(0)
    matrix = (rng.random((6, 5)) < 0.4).astype(np.float32)
    matrix[0] = 0  # isolated user keeps a zero row
    users, items = np.nonzero(matrix)
    adjacency = bipartite_adjacency(users, items, 6, 5).to_dense().numpy()
    full = np.zeros((11, 11), dtype=np.float32)
    full[:6, 6:], full[6:, :6] = matrix, matrix.T
    degree = full.sum(1)
    inv = np.where(degree > 0, degree ** -0.5, 0)
    assert np.allclose(adjacency, inv[:, None] * full * inv[None, :], atol=1e-6)
    assert np.allclose(adjacency, adjacency.T)


@pytest.mark.parametrize("combine", ["last", "mean", "sum"])
@pytest.mark.parametrize("form", ["coo", "csr", "csr_with_transpose", "edge_list"])
def test_propagate_equals_dense_powers(combine, form):
    """propagate(A, X, L) against explicit dense powers A^l X on a tiny directed graph, and so are its gradients."""
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(7, 7, generator=gen) * (torch.rand(7, 7, generator=gen) < 0.4)  # not symmetric
    x = torch.randn(7, 3, generator=gen, dtype=torch.float32)
    powers = [x.double()]
    for _ in range(3):
        powers.append(dense.double() @ powers[-1])
    expected = {"last": powers[-1], "mean": torch.stack(powers).mean(0), "sum": torch.stack(powers).sum(0)}[combine]
    coo = dense.to_sparse().coalesce()
    adjacency, transpose = {"coo": (coo, None), "csr": (coo.to_sparse_csr(), None),
                            "csr_with_transpose": (coo.to_sparse_csr(), csr_transpose(coo)),
                            "edge_list": ((coo.indices()[0], coo.indices()[1], coo.values()), None)}[form]
    x = x.clone().requires_grad_(True)
    out = propagate(adjacency, x, 3, combine=combine, transpose=transpose)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    probe = torch.randn(7, 3, generator=gen)
    (grad,) = torch.autograd.grad((out * probe).sum(), x)
    weights = {"last": [0, 0, 0, 1], "mean": [0.25] * 4, "sum": [1] * 4}[combine]  # d/dX Σ_l w_l <P, A^l X>
    expected_grad = sum(w * torch.linalg.matrix_power(dense.double().T, l) @ probe.double()
                        for l, w in enumerate(weights))
    torch.testing.assert_close(grad.double(), expected_grad, atol=1e-5, rtol=1e-5)
    assert torch.equal(propagate(adjacency, x, 0, combine=combine), x)


def test_rw_normalized_rows_sum_to_one():
    rows, cols = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([1, 2, 0, 0, 1, 2])
    values = torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0, 2.0])
    graph = rw_normalized(rows, cols, 4, values).to_dense()
    dense = torch.zeros(4, 4).index_put_((rows, cols), values)
    degree = dense.sum(1, keepdim=True)
    torch.testing.assert_close(graph, torch.where(degree > 0, dense / degree.clamp(min=1e-12), torch.zeros_like(dense)))


def test_chunked_knn_equals_brute_force():
    rng = np.random.default_rng(1)
    features = torch.tensor(rng.normal(size=(37, 9)), dtype=torch.float32)
    indices, sims = knn_neighbours(features, k=4, chunk_rows=5)
    normalized = torch.nn.functional.normalize(features, dim=1)
    brute = normalized @ normalized.T
    expected_vals, expected_idx = torch.topk(brute, 4, dim=1)
    assert torch.allclose(sims, expected_vals, atol=1e-5)
    assert torch.equal(indices[:, 0], torch.arange(37))  # itself first
    graph = knn_adjacency(indices, 37).to_dense()
    binary = torch.zeros(37, 37).scatter_(1, expected_idx, 1.0)
    degree = binary.sum(1)
    assert torch.allclose(graph, binary / degree.sqrt()[:, None] / degree.sqrt()[None, :], atol=1e-6)


def test_the_padding_item_is_no_ones_knn_neighbour():
    """RecBole's item 0 has a zero feature row: its cosine 0 beats the negative cosines of real neighbours of
    centred features, so it is left out of every list (its own list: itself), in both kNN builders."""
    from recbole_ssr.model.graph import knn_edges

    rng = np.random.default_rng(2)
    features = torch.tensor(rng.normal(size=(30, 3)), dtype=torch.float32)
    features[0] = 0.0
    plain, _ = knn_neighbours(features, k=12)
    assert (plain[1:] == 0).any()  # without skip the padding row displaces real neighbours
    indices, sims = knn_neighbours(features, k=12, chunk_rows=7, skip=[0])
    assert not (indices[1:] == 0).any() and torch.equal(indices[0], torch.zeros(12, dtype=torch.int64))
    normalized = torch.nn.functional.normalize(features[1:], dim=1)
    expected_vals, expected_idx = torch.topk(normalized @ normalized.T, 12, dim=1)
    assert torch.equal(indices[1:], expected_idx + 1) and torch.allclose(sims[1:], expected_vals, atol=1e-6)
    rows, cols, _ = knn_edges(features, 12, skip=[0])
    assert torch.equal(cols[rows != 0], indices[1:].reshape(-1)) and torch.equal(cols[rows == 0], indices[0])


def test_graph_cache_keys_on_every_parameter(make_mmrec):
    root, name, _ = make_mmrec()
    config, dataset, _ = prepare("VBPR", name, config_dict=dict(QUICK, data_path=root))
    cache = GraphCache(config, dataset)
    calls = []

    def build(tag):
        calls.append(tag)
        return torch.tensor([len(calls)])

    first = cache.get_or_build("knn", {"modality": "image", "k": 10}, lambda: build("a"))
    again = cache.get_or_build("knn", {"modality": "image", "k": 10}, lambda: build("b"))
    other = cache.get_or_build("knn", {"modality": "image", "k": 5}, lambda: build("c"))
    assert calls == ["a", "c"] and torch.equal(first, again) and not torch.equal(first, other)



def test_trainer_hook_lr_decay_and_strict_early_stopping(make_mmrec):
    root, name, _ = make_mmrec()
    config, _, (train, valid, test) = prepare(
        "VBPR", name, config_dict=dict(QUICK, data_path=root, epochs=30, stopping_step=2, lr_decay=[0.5, 1],
                                       learning_rate=0.0))  # lr 0: the valid score never changes
    model = get_model("VBPR")(config, train.dataset)
    seen = []
    model.pre_epoch_processing = seen.append
    trainer = MultimodalTrainer(config, model)
    scores = []
    trainer.fit(train, valid, callback_fn=lambda epoch, score, result: scores.append(score))
    # epoch 0 sets the best; with strict improvement, equal scores never count: stop after 1 + 3 evaluations
    assert seen == [0, 1, 2, 3] and trainer.epochs_run == 4 and trainer.best_epoch == 0
    assert len(set(scores)) == 1
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 0.0
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0 and trainer.lr_scheduler.last_epoch == 4
    assert trainer.lr_scheduler.lr_lambdas[0](2) == pytest.approx(0.25)
    # the best checkpoint loads on torch >= 2.6 (weights_only=False for our own files) and evaluates
    result = trainer.evaluate(test, load_best_model=True)
    assert set(result) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}


def test_non_strict_early_stopping_counts_ties(make_mmrec):
    root, name, _ = make_mmrec()
    config, _, (train, valid, _) = prepare(
        "VBPR", name, config_dict=dict(QUICK, data_path=root, epochs=6, stopping_step=1, learning_rate=0.0,
                                       early_stop_strict=False))
    trainer = MultimodalTrainer(config, get_model("VBPR")(config, train.dataset))
    trainer.fit(train, valid, saved=False)
    assert trainer.epochs_run == 6 and trainer.best_epoch == 5  # ties keep resetting the patience


def test_eval_cache_is_computed_once_per_evaluation(make_mmrec):
    root, name, _ = make_mmrec()
    config, _, (train, valid, _) = prepare("VBPR", name, config_dict=dict(QUICK, data_path=root,
                                                                          eval_batch_size=31 * 3))
    model = get_model("VBPR")(config, train.dataset)
    calls = []
    original = model.forward
    model.forward = lambda: calls.append(1) or original()
    trainer = MultimodalTrainer(config, model)
    trainer.evaluate(valid, load_best_model=False)
    assert len(valid) > 1 and len(calls) == 1  # several user batches, one whole-graph forward
    trainer.evaluate(valid, load_best_model=False)
    assert len(calls) == 2  # a new evaluation recomputes (weights may have changed)


def test_full_sort_predict_agrees_with_predict(make_mmrec):
    root, name, _ = make_mmrec()
    config, _, (train, _, _) = prepare("VBPR", name, config_dict=dict(QUICK, data_path=root))
    model = get_model("VBPR")(config, train.dataset).eval()
    from recbole.data.interaction import Interaction

    users = torch.tensor([1, 2, 3])
    full = model.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    items = torch.tensor([4, 5, 6])
    pointwise = model.predict(Interaction({"user_id": users, "item_id": items}))
    assert torch.allclose(full[torch.arange(3), items], pointwise, atol=1e-5)


def test_interaction_csr_is_binary_train_matrix(make_mmrec):
    root, name, frame = make_mmrec()
    _, _, (train, _, _) = prepare("VBPR", name, config_dict=dict(QUICK, data_path=root))
    csr = train.dataset.interaction_csr()
    assert isinstance(csr, sp.csr_matrix) and csr.nnz == (frame.x_label == 0).sum()
    assert set(np.unique(csr.data)) == {1.0}


@pytest.mark.parametrize("reproducibility", [True, False])
def test_a_reproducible_cpu_run_adds_repeated_index_gradients_in_one_order(make_mmrec, reproducibility):
    """With two threads PyTorch adds the gradient of ``x[rows]`` (repeated rows) with atomics in a changing order;
    a run seeded for ``reproducibility`` on the CPU takes the deterministic path, so one seed gives one result."""
    root, name, _ = make_mmrec()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        prepare("BPR", name, config_dict=dict(QUICK, data_path=root, reproducibility=reproducibility))
        assert torch.are_deterministic_algorithms_enabled() == reproducibility
        if reproducibility:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(50, 64, generator=g, requires_grad=True)
            rows, w = torch.randint(0, 50, (4000,), generator=g), torch.randn(4000, 64, generator=g)
            grads = []
            for _ in range(10):
                x.grad = None
                (x[rows] * w).sum().backward()
                grads.append(x.grad.clone())
            assert all(torch.equal(grads[0], grad) for grad in grads)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
