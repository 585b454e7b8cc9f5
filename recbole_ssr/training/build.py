"""One way to build a run and one way to load a trained one.

Every path that trains or evaluates a model - a run, a search trial, the band-scale step, the profiles, RecBole's
``load_data_and_model`` (:mod:`recbole_ssr`) - goes through these three functions:

:func:`prepare`
    config -> dataset -> train / valid / test loaders (reusable by several models on the same data).
:func:`build`
    :func:`prepare` -> model -> trainer, seeded as RecBole seeds them (``seed + local_rank`` before the model).
:func:`load_trained`
    a checkpoint -> the same, with its own config, the data it was trained on (refused when that data changed) and
    its best-valid weights, ready to evaluate.
"""

from dataclasses import dataclass
from logging import getLogger
from typing import Any

import torch
from recbole.utils import init_logger, init_seed

from recbole_ssr.config.configurator import Config
from recbole_ssr.config.validation import check_output_locations
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.data.dataloader import data_preparation
from recbole_ssr.data.dataset import create_dataset
from recbole_ssr.model.registry import get_model
from recbole_ssr.training.checkpoint import read_checkpoint, training_data_fingerprint
from recbole_ssr.training.trainer import get_trainer


@dataclass
class Built:
    """A run ready to train or evaluate."""

    config: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any
    trainer: Any

    @property
    def loaders(self):
        return self.train_data, self.valid_data, self.test_data


def seed(config, offset=0):
    """Seed as RecBole does (``seed + offset``); with ``reproducibility`` on a CPU run also takes PyTorch's
    deterministic paths: with several threads, the gradient of an indexing with repeated indices (``x[rows]``) is
    otherwise added up in parallel with atomics, in an order (and so a float rounding) that changes from run to run.
    On CUDA RecBole's own setting (cuDNN) is left as it is."""
    init_seed(config["seed"] + offset, config["reproducibility"])
    on_cpu = config["device"] is None or torch.device(config["device"]).type == "cpu"
    torch.use_deterministic_algorithms(bool(config["reproducibility"]) and on_cpu, warn_only=True)


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None):
    """``(config, dataset, (train, valid, test))``: the config, the dataset and its loaders."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    check_output_locations(config)
    seed(config)
    init_logger(config)
    dataset_obj = create_dataset(config)
    getLogger().info(dataset_obj)
    return config, dataset_obj, data_preparation(config, dataset_obj)


def model_class_of(config):
    """The model class of a config: the class it was made with (a class passed in), else the one its name (your own
    model: its ``model_source``, ``file.py:Class``) names."""
    return getattr(config, "model_class", None) or get_model(config["model_source"] or config["model"])


def build(model=None, dataset=None, config_file_list=None, config_dict=None, prepared=None):
    """A :class:`Built` run: ``prepared`` (the output of :func:`prepare`) or a new :func:`prepare`, then the model
    and its trainer; the trainer records the training data's fingerprint in the checkpoints it writes."""
    config, dataset_obj, (train_data, valid_data, test_data) = prepared or prepare(
        model, dataset, config_file_list, config_dict)
    seed(config, offset=config["local_rank"])
    model_class = model_class_of(config)
    model_obj = model_class(config, train_data.dataset).to(config["device"])
    getLogger().info(model_obj)
    trainer = get_trainer(config["MODEL_TYPE"], model_class)(config, model_obj)
    trainer.data_fingerprint = training_data_fingerprint(train_data.dataset)
    return Built(config, dataset_obj, train_data, valid_data, test_data, model_obj, trainer)


def load_trained(checkpoint, device=None):
    """A :class:`Built` run from a checkpoint ``.pth`` of this package (any model: ours, RecBole's, a model file's):
    its config, its dataset split again by that config, the model with the checkpoint's weights (CPU unless
    ``device`` is given or the config asks for CUDA and it is there).

    The data must be the data it was trained on: a changed training split (other interactions, other tokens) or
    weights of another shape are an error naming the checkpoint and the dataset folder."""
    saved = read_checkpoint(checkpoint)
    config = saved["config"]
    if device is not None:
        config["device"] = torch.device(device)
    elif config["device"] is None or (torch.device(config["device"]).type == "cuda" and not torch.cuda.is_available()):
        config["device"] = torch.device("cpu")
    config["show_progress"] = False
    init_logger(config)
    seed(config)
    dataset_obj = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)
    another = (f"{checkpoint}: trained on another version of dataset '{config['dataset']}' than the one now in "
               f"{config['dataset_dir'] or config['data_path']}")
    recorded = saved.get("data_fingerprint")
    if recorded is not None and recorded != training_data_fingerprint(train_data.dataset):
        raise ConfigError(f"{another} (its training interactions differ). Evaluate it on the data it was trained on, "
                          "or train again.")
    built = build(prepared=(config, dataset_obj, (train_data, valid_data, test_data)))
    try:
        built.trainer.load_weights(checkpoint, saved)  # read once, above
    except RuntimeError as exc:  # weights of another shape: other numbers of users or items
        raise ConfigError(f"{another}: its weights do not fit ({str(exc).splitlines()[-1].strip()}). Evaluate it on "
                          "the data it was trained on, or train again.") from None
    built.trainer.saved_model_file = checkpoint
    return built


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` for every model this package trains (ours, RecBole's, a model file's):
    ``(config, model, dataset, train_data, valid_data, test_data)`` from a checkpoint, the model holding its
    best-valid weights in eval mode."""
    built = load_trained(model_file)
    built.model.eval()
    return built.config, built.model, built.dataset, built.train_data, built.valid_data, built.test_data
