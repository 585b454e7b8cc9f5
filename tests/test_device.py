"""Right on a GPU, checked on a machine without one.

Every model - ours with every band method and extension of SSR, and RecBole's through our trainer - trains (per-epoch
hooks included), evaluates (group metrics included) and scores under :class:`placement.PretendCuda`: the code is
told its device is ``cuda``, runs on the CPU, and any tensor that would sit on another device than its operands on
a GPU raises :class:`placement.PlacementError`. The detector itself is checked first (it catches the bug class,
stays quiet on what CUDA allows, changes no number). Then the Ray side (a search must not hide GPUs from Ray).
"""

import os

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from torch import nn

from conftest import QUICK
from placement import PlacementError, PretendCuda
from recbole_ssr.quick_start import prepare
from recbole_ssr.utils import get_model, get_trainer

CUDA = torch.device("cuda")
SSR_EXTENSIONS = {"band_method": "chebyshev", "band_refresh_every": 2, "band_scale": [1.0, 1.0, 0.5],
                  "eval_band_scale": [1.0, 0.5, 1.0], "align_weight": 0.1, "mask_fill": "noise",
                  "mask_consistency": "prediction", "cl_max_nodes": 8, "band_col_chunk": 64}
CASES = {  # id: (model, config)
    "VBPR": ("VBPR", {}), "LATTICE": ("LATTICE", {}), "FREEDOM": ("FREEDOM", {}), "BM3": ("BM3", {}),
    "MGCN": ("MGCN", {}), "LGMRec": ("LGMRec", {}), "SMORE": ("SMORE", {}),
    "SSR-eigen": ("SSR", {"band_method": "eigen"}), "SSR-chebyshev": ("SSR", {"band_method": "chebyshev"}),
    "SSR-reference": ("SSR", {"band_method": "reference"}), "SSR-extensions": ("SSR", SSR_EXTENSIONS),
    "SSR-plain": ("SSR", {"mask_rate": 0.0, "cl_weight": 0.0, "out_mode": "mix", "use_gate": False,
                          "use_operator": False}),
    "BPR": ("BPR", {}), "LightGCN": ("LightGCN", {}), "NGCF": ("NGCF", {"node_dropout": 0.1}), "SGL": ("SGL", {}),
}
PLUGIN_CASES = [key for key, (model, _) in CASES.items() if model not in ("BPR", "LightGCN", "NGCF", "SGL")]


def train_and_score(root, name, model, extra, built_on="cuda", mode=None):
    """Two epochs (hooks, evaluation and checkpoint after each), test evaluation of the best checkpoint, group
    metrics and full-sort scores of users
    1-3, with the model built on ``built_on`` ('cuda': the config's device, as RecBole does; 'cpu': built on the
    CPU, then ``model.to('cuda')``). Under ``mode`` (a PretendCuda) when given, else plainly on the CPU.
    Returns the scores (CPU tensor)."""

    def run():
        config, _, (train, valid, test) = prepare(model, name, config_dict=dict(QUICK, data_path=root, epochs=2,
                                                                               **extra))
        if mode is not None and built_on == "cuda":
            config["device"] = CUDA
        net = get_model(model)(config, train.dataset)
        if mode is not None:
            config["device"] = CUDA
        net = net.to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
        trainer.fit(train, valid, saved=True, verbose=False)
        trainer.evaluate(test, load_best_model=True)  # the best-valid checkpoint, loaded onto the device
        if hasattr(trainer, "evaluate_groups"):
            trainer.evaluate_groups(test, train.dataset)
        net.eval()
        with torch.no_grad():
            scores = net.full_sort_predict(Interaction({net.USER_ID: torch.tensor([1, 2, 3])}).to(config["device"]))
        if mode is not None:
            assert scores.device.type == "cuda" and all(p.device.type == "cuda" for p in net.parameters())
        return scores.cpu()

    if mode is None:
        return run()
    with mode:
        return run()


# -- the detector ----------------------------------------------------------------------------------------------------
class Scaled(nn.Module):
    """A parameter times a ones-vector made in forward: ``correct`` passes device=, the bug does not."""

    def __init__(self, correct):
        super().__init__()
        self.weight = nn.Parameter(torch.full((4,), 2.0))
        self.correct = correct

    def forward(self, x):
        ones = torch.ones(4, device=self.weight.device) if self.correct else torch.ones(4)
        return (self.weight * ones * x).sum()


class Masked(nn.Module):
    """A mask made in __init__: a buffer follows ``model.to``, a plain attribute stays behind on the CPU."""

    def __init__(self, as_buffer):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        if as_buffer:
            self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0, 0.0]))
        else:
            self.mask = torch.tensor([1.0, 0.0, 1.0, 0.0])

    def forward(self):
        return (self.weight * self.mask).sum()


@pytest.mark.parametrize("correct", [True, False], ids=["with-device", "without-device"])
def test_detector_catches_a_tensor_made_without_device(correct):
    with PretendCuda() as mode:
        model = Scaled(correct).to("cuda")
        x = torch.arange(4.0, device="cuda")
        if correct:
            out = model(x)
            out.backward()
            assert out.device == torch.device("cuda", 0) and model.weight.grad.device.type == "cuda"
            assert mode.checked > 0
        else:
            with pytest.raises(PlacementError, match="cuda and CPU tensors meet in mul"):
                model(x)
    assert Scaled(correct)(torch.arange(4.0)).item() == 12.0  # on the CPU both are the same model


@pytest.mark.parametrize("as_buffer", [True, False], ids=["buffer", "attribute"])
def test_detector_catches_a_tensor_that_model_to_leaves_behind(as_buffer):
    with PretendCuda():
        model = Masked(as_buffer).to("cuda")
        if as_buffer:
            assert model().item() == 2.0 and model.mask.is_cuda
        else:
            with pytest.raises(PlacementError):
                model()


def test_detector_covers_sparse_graphs_and_custom_backward():
    class Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * torch.full((grad.shape[0], 1), 2.0, device=grad.device)  # correct: grad's device

    class DoubledWrongly(Doubled):
        @staticmethod
        def backward(ctx, grad):
            return grad * torch.full((grad.shape[0], 1), 2.0)  # the bug: a CPU tensor in backward

    with PretendCuda():
        rows = torch.tensor([0, 1, 1, 2], device="cuda")
        cols = torch.tensor([1, 0, 2, 1], device="cuda")
        graph = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(4, device="cuda"), (3, 3)).coalesce()
        assert graph.is_cuda and graph.to_sparse_csr().is_cuda
        x = torch.ones(3, 2, device="cuda", requires_grad=True)
        assert torch.sparse.mm(graph, x).is_cuda and torch.sparse.mm(graph.to_sparse_csr(), x).is_cuda
        with pytest.raises(PlacementError, match="_sparse_mm"):
            torch.sparse.mm(graph, torch.ones(3, 2))
        cpu_graph = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.ones(2), (3, 3))
        with pytest.raises(PlacementError):
            torch.sparse.mm(cpu_graph, x)
        Doubled.apply(x).sum().backward()
        assert x.grad.is_cuda and torch.equal(x.grad, torch.full((3, 2), 2.0, device="cuda"))
        with pytest.raises(PlacementError):
            DoubledWrongly.apply(x).sum().backward()


def test_detector_allows_what_cuda_allows():
    with PretendCuda():
        scores = torch.zeros(3, 5, device="cuda")
        loss = torch.zeros(1).to("cuda")  # RecBole's EmbLoss: made on the CPU, then moved
        assert (scores.sum() + loss).is_cuda
        scores = scores * torch.tensor(2.0)  # a CPU scalar tensor
        history = (torch.tensor([0, 1]), torch.tensor([2, 3]))  # CPU index tensors (RecBole's history_index)
        scores[history] = -np.inf
        picked = scores[torch.tensor([0, 2])]
        masked = scores[:, torch.tensor([True, False, True, False, True])]
        assert picked.is_cuda and masked.is_cuda and scores[0, 2].item() == -np.inf
        host = scores.cpu()
        assert not host.is_cuda and host.numpy().shape == (3, 5)
        host[0:2] = scores[0:2]  # a copy crosses devices
        assert torch.as_tensor(np.ones(3), device="cuda").is_cuda


def test_detector_catches_numpy_of_a_cuda_tensor_and_a_cpu_generator_for_a_cuda_draw():
    with PretendCuda():
        x = torch.ones(3, device="cuda")
        with pytest.raises(PlacementError, match="numpy"):
            x.numpy()
        with pytest.raises(PlacementError, match="generator"):
            torch.rand(3, device=x.device, generator=torch.Generator().manual_seed(0))
        with pytest.raises(PlacementError, match="index"):
            torch.arange(5)[torch.tensor([1, 2], device="cuda")]


@pytest.mark.parametrize("model, extra", [("FREEDOM", {}), ("SSR", {"band_method": "chebyshev"})],
                         ids=["FREEDOM", "SSR-chebyshev"])
def test_detector_changes_no_number(make_mmrec, model, extra):
    """The same seed gives the same scores plainly on the CPU and under PretendCuda (random draws included:
    FREEDOM's edge sampling, SSR's masks), so what the detector runs is the model as it is."""
    root, name, _ = make_mmrec()
    plain = train_and_score(root, name, model, extra)
    pretend = train_and_score(root, name, model, extra, mode=PretendCuda())
    assert torch.equal(plain, pretend)


# -- every model -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_every_model_keeps_its_tensors_on_the_device(make_mmrec, case):
    model, extra = CASES[case]
    root, name, _ = make_mmrec()
    mode = PretendCuda()
    scores = train_and_score(root, name, model, extra, mode=mode)
    assert mode.checked > 100 and torch.isfinite(scores).all()


@pytest.mark.parametrize("case", PLUGIN_CASES)
def test_plugin_models_can_be_built_on_the_cpu_and_moved(make_mmrec, case):
    """``model.to('cuda')`` after building on the CPU moves everything the model uses (graphs are buffers)."""
    model, extra = CASES[case]
    root, name, _ = make_mmrec()
    mode = PretendCuda()
    scores = train_and_score(root, name, model, extra, built_on="cpu", mode=mode)
    assert mode.checked > 100 and torch.isfinite(scores).all()


# -- Ray -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", [None, "1,2"], ids=["unset", "set"])
def test_a_search_leaves_every_gpu_visible_to_ray(make_mmrec, monkeypatch, visible):
    """The driver resolves the configuration before it starts Ray; RecBole's Config writes gpu_id into
    CUDA_VISIBLE_DEVICES, and Ray counts only visible GPUs - so the driver must leave the variable as it was."""
    from recbole_ssr.config import Config
    from recbole_ssr.tune import driver

    root, name, _ = make_mmrec()
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    driver._prepare_driver("VBPR", name, [], {"data_path": root, "state": "ERROR"}, [])
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible
    Config(model="VBPR", dataset=name, config_dict={"data_path": root, "state": "ERROR"})
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "0"  # what a plain Config does (a run choosing its GPU)
