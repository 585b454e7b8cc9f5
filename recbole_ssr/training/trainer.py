"""Trainer: RecBole's ``Trainer`` with a per-epoch model hook, MMRec's LR decay, strict early stopping, and
checkpoints that load on torch >= 2.6.

Differences from ``recbole.trainer.Trainer.fit`` (everything else - batches, losses, metrics - is RecBole's):

* ``model.pre_epoch_processing(epoch)`` is called before each training epoch when the model defines it
  (FREEDOM's edge pruning, LATTICE's graph rebuild, ...).
* ``lr_decay: [decay, step]`` multiplies the learning rate by ``decay ** (epoch / step)`` (MMRec's scheduler);
  ``~`` keeps it constant.
* ``early_stop_strict: True`` (the MMRec protocol) counts only a strictly better valid score as an improvement;
  training stops after ``stopping_step`` evaluations without one.
* ``callback_fn(epoch, valid_score, valid_result)`` is called after every evaluation (per-epoch Ray Tune reports).
* Checkpoints get a unique file name (RecBole's second-resolution timestamps collide between concurrent runs) and
  are loaded with ``weights_only=False`` - only these files, which this trainer wrote itself.
* Checkpoints are written to a temporary file and renamed into place: a kill during a save leaves the previous
  best checkpoint, never a torn one.
* ``evaluate_groups(eval_data, train_dataset)``: the test metrics per user-degree bucket and for cold-start
  items (:mod:`recbole_ssr.training.evaluation`), scored exactly as ``evaluate`` scores (RecBole's full-sort batches).
* ``evaluate_per_user(eval_data)``: each evaluated user's test metrics, keyed by the user's token
  (:mod:`recbole_ssr.training.per_user`), from the same batches; their mean is ``evaluate``'s result.
* Timing and bookkeeping for the results file: ``best_epoch``, ``epochs_run``, ``seconds_per_epoch``,
  ``valid_history`` (train loss, valid score and the epoch's learning rate at every evaluation).
* A training loss that becomes NaN stops the run with :class:`~recbole_ssr.core.errors.TrainingDiverged` naming the
  model and the settings to lower (``learning_rate``, and the model's loss weights); the best checkpoint so far is
  kept.
* Progress of a slow epoch: without RecBole's progress bar (``show_progress``), a line every
  ``progress_interval`` seconds (batches done, time left in the epoch), so a long silent epoch is not taken for a
  hang.
* Checkpoints record ``data_fingerprint`` (:func:`recbole_ssr.training.checkpoint.training_data_fingerprint`): a
  tool that evaluates a checkpoint can tell that the dataset changed since it was trained.
"""

import os
import time
import uuid

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import dict2str, set_color

from recbole_ssr.core.errors import TrainingDiverged
from recbole_ssr.core.safe_io import save_with
from recbole_ssr.model.registry import get_model, is_plugin_model
from recbole_ssr.training import evaluation, per_user
from recbole_ssr.training.checkpoint import load_own_checkpoint
from recbole_ssr.training.stopping import improves


def loss_weight_keys(model):
    """The model's loss weights that are switched on (keys of its ``config_ranges`` ending in ``_weight``, and
    ``cl_loss``), for the advice of a diverged training."""
    ranges = {}
    for klass in reversed(type(model).__mro__):
        ranges.update(vars(klass).get("config_ranges", {}))
    config = getattr(model, "config", None)
    found = []
    for key in ranges:
        if key.endswith("_weight") or key == "cl_loss":
            value = config[key] if config is not None and key in config else None
            if isinstance(value, (int, float)) and value:
                found.append(f"{key}={value:g}")
    return found


def _duration(seconds):
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 1 else "under 1 s"


class GroupEvaluationMixin:
    """Group metrics as a capability of the trainer: the same full-sort batches ``evaluate`` scores, cut into
    user-degree buckets and cold-start items (:mod:`recbole_ssr.training.evaluation` holds the maths)."""

    def evaluate_groups(self, eval_data, train_dataset):
        """The ``groups`` entry of a run for ``eval_data`` (a full-sort loader) with the model's current weights;
        None for other loaders (sampled evaluation) or without top-k metrics."""
        from recbole.data.dataloader import FullSortEvalDataLoader

        if not isinstance(eval_data, FullSortEvalDataLoader):
            return None
        metric_objects = evaluation.topk_metric_objects(self.config)
        if not metric_objects:
            return None
        bounds = evaluation.degree_bounds(self.config)
        user_degree, item_degree = evaluation.training_degrees(train_dataset)
        cold_items = item_degree == 0
        cold_items[0] = False
        collected = self._collect_rankings(eval_data, cold_items, self._max_k())
        if collected is None:
            return None
        return evaluation.group_result(metric_objects, bounds, user_degree, cold_items, collected)

    def evaluate_per_user(self, eval_data):
        """``{"users": [tokens], "metrics": {"recall@20": [...], ...}}`` (:mod:`recbole_ssr.training.per_user`): every user
        of ``eval_data`` (a full-sort loader) scored with the model's current weights; None for other loaders
        (sampled evaluation) or without top-k metrics."""
        from recbole.data.dataloader import FullSortEvalDataLoader

        if not isinstance(eval_data, FullSortEvalDataLoader):
            return None
        metric_objects = evaluation.topk_metric_objects(self.config)
        if not metric_objects:
            return None
        dataset = eval_data._dataset
        no_cold_items = np.zeros(dataset.item_num, dtype=bool)
        collected = self._collect_rankings(eval_data, no_cold_items, self._max_k())
        if collected is None:  # a loader without users: every metric, no values
            collected = {"users": np.zeros(0, dtype=np.int64),
                         "rec": torch.zeros(0, self._max_k() + 1, dtype=torch.int)}
        tokens = dataset.id2token(dataset.uid_field, collected["users"])
        return per_user.per_user_entry(tokens, per_user.values_from_rankings(metric_objects, collected["rec"]))

    def _max_k(self):
        topk = self.config["topk"]
        return max(topk) if isinstance(topk, (list, tuple)) else int(topk)

    @torch.no_grad()
    def _collect_rankings(self, eval_data, cold_items, max_k):
        """Score every user of ``eval_data`` like ``evaluate`` does; ``users`` [U], ``rec`` [U, max_k + 1]
        (RecBole's rec.topk rows), ``cold_rec`` and ``cold_rec_among`` (the same with only cold positives, ranked
        among all items / among cold items only) and ``cold_pos`` [U] (#cold positives)."""
        self.model.eval()
        dataset = eval_data._dataset
        if getattr(self, "item_tensor", None) is None:
            self.item_tensor = dataset.get_item_feature().to(self.device)
        self.tot_item_num = dataset.item_num
        cold = torch.as_tensor(cold_items, dtype=torch.bool, device=self.device)
        users, rec, cold_rec, cold_among, cold_pos = [], [], [], [], []
        for batched in eval_data:
            interaction, scores, positive_u, positive_i = self._full_sort_batch_eval(batched)
            rows = evaluation.rankings_rows(scores, positive_u, positive_i, cold, max_k)
            for store, part in zip((rec, cold_rec, cold_among, cold_pos), rows):
                store.append(part)
            users.append(interaction[dataset.uid_field].cpu())
        if not users:
            return None
        return {"users": torch.cat(users).numpy(), "rec": torch.cat(rec), "cold_rec": torch.cat(cold_rec),
                "cold_rec_among": torch.cat(cold_among), "cold_pos": torch.cat(cold_pos).numpy()}


class CheckpointMixin:
    """Checkpoints every trainer this package hands out writes and reads: uniquely named, written atomically, read
    on torch >= 2.6 (:mod:`recbole_ssr.training.checkpoint`); and the NaN-loss error. Placed before RecBole's trainer
    class in the bases (:data:`PLUGIN_MIXINS`)."""

    def _unique_checkpoint_name(self):
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.saved_model_file = os.path.join(
            self.checkpoint_dir, f"{self.config['model']}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pth"
        )

    def _save_checkpoint(self, epoch, *args, **kwargs):
        """RecBole's checkpoint, written atomically (RecBole rewrites the best checkpoint in place)."""
        if overridden_save(type(self)) is not vars(Trainer)["_save_checkpoint"]:
            return super()._save_checkpoint(epoch, *args, **kwargs)  # a trainer with its own checkpoint format
        verbose = args[0] if args else kwargs.pop("verbose", True)
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return None
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "data_fingerprint": getattr(self, "data_fingerprint", None),
        }
        save_with(saved_model_file, lambda handle: torch.save(state, handle, pickle_protocol=4))
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
        return None

    def _check_nan(self, loss):
        """RecBole's check of every batch's loss, as an error that names the model and what to lower."""
        if not torch.isnan(loss):
            return
        name = type(self.model).__name__
        epoch = getattr(self, "current_epoch", None)
        rate = float(self.optimizer.param_groups[0]["lr"])
        weights = loss_weight_keys(self.model)
        advice = f"lower learning_rate (now {rate:g})" + (f" or its loss weights ({', '.join(weights)})" if weights
                                                          else "")
        best = getattr(self, "best_epoch", None)
        kept = (f" The best checkpoint so far (epoch {best}) is kept: {self.saved_model_file}."
                if best is not None and os.path.isfile(getattr(self, "saved_model_file", "") or "") else "")
        raise TrainingDiverged(f"{name}: the training loss became NaN{f' in epoch {epoch}' if epoch is not None else ''}"
                               f", so training stopped; {advice}.{kept}")

    def load_weights(self, checkpoint_file, checkpoint=None):
        """The model's weights from a checkpoint this package wrote (``checkpoint``: its content, when already
        read); returns the whole checkpoint."""
        if checkpoint is None:
            checkpoint = load_own_checkpoint(checkpoint_file, self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_weights(model_file or self.saved_model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        checkpoint = self.load_weights(str(resume_file))
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


def overridden_save(trainer_class):
    """The ``_save_checkpoint`` that :class:`CheckpointMixin` overrides in ``trainer_class``: RecBole's plain one
    (then ours writes the checkpoint) or a RecBole trainer's own format (then that one does)."""
    after = trainer_class.__mro__[trainer_class.__mro__.index(CheckpointMixin) + 1:]
    return next(vars(klass)["_save_checkpoint"] for klass in after if "_save_checkpoint" in vars(klass))


#: what this package adds to every RecBole trainer it hands out, first in the bases
PLUGIN_MIXINS = (CheckpointMixin, GroupEvaluationMixin)


def with_plugin_mixins(trainer_class):
    """A RecBole trainer class (with its own training loop) with :data:`PLUGIN_MIXINS`."""
    return type(trainer_class.__name__, (*PLUGIN_MIXINS, trainer_class), {})


class MultimodalTrainer(*PLUGIN_MIXINS, Trainer):
    """The trainer of every plugin model and of RecBole's models that use the plain ``Trainer``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self._unique_checkpoint_name()
        self.early_stop_strict = bool(config["early_stop_strict"])
        decay = config["lr_decay"]
        self.lr_scheduler = None
        if decay:
            factor, step = float(decay[0]), float(decay[1])
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lr_lambda=lambda epoch: factor ** (epoch / step)
            )
        self.best_epoch = None
        self.epochs_run = 0
        self.epoch_seconds = []
        self.valid_history = []  # one {epoch, train_loss, valid_score, lr} per evaluation (the learning curve)

    def _improved(self, score):
        best = None if self.best_valid_result is None else self.best_valid_score
        return improves(score, best, bigger=self.valid_metric_bigger, strict=self.early_stop_strict)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if saved and self.start_epoch >= self.epochs:
            self._save_checkpoint(-1, verbose=verbose)
        hook = getattr(self.model, "pre_epoch_processing", None)
        for epoch_idx in range(self.start_epoch, self.epochs):
            self.current_epoch = epoch_idx
            start = time.time()
            epoch_lr = float(self.optimizer.param_groups[0]["lr"])
            if callable(hook):
                hook(epoch_idx)
            train_loss = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            end = time.time()
            self.epoch_seconds.append(end - start)
            self.epochs_run += 1
            self.train_loss_dict[epoch_idx] = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch_idx, start, end, train_loss))
            self._add_train_loss_to_tensorboard(epoch_idx, train_loss)

            if self.eval_step <= 0 or not valid_data:
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
                    self.best_epoch = epoch_idx
                continue
            if (epoch_idx + 1) % self.eval_step != 0:
                continue
            valid_start = time.time()
            valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.valid_history.append({"epoch": epoch_idx, "train_loss": float(self.train_loss_dict[epoch_idx]),
                                       "valid_score": float(valid_score),
                                       "lr": epoch_lr})
            if self._improved(valid_score):
                self.best_valid_score, self.best_valid_result = valid_score, valid_result
                self.best_epoch, self.cur_step = epoch_idx, 0
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
            else:
                self.cur_step += 1
            if verbose:
                self.logger.info(
                    set_color("epoch %d evaluating", "green") % epoch_idx
                    + " [" + set_color("time", "blue") + f": {time.time() - valid_start:.2f}s, "
                    + set_color("valid_score", "blue") + f": {valid_score:f}]"
                )
                self.logger.info(set_color("valid result", "blue") + ": \n" + dict2str(valid_result))
            self.tensorboard.add_scalar("Vaild_score", valid_score, epoch_idx)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score, valid_result)
            if self.cur_step > self.stopping_step:
                if verbose:
                    self.logger.info(
                        f"Finished training, best eval result in epoch {self.best_epoch} "
                        f"({self.stopping_step} evaluations without {'strict ' if self.early_stop_strict else ''}"
                        "improvement)"
                    )
                break
        return self.best_valid_score, self.best_valid_result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch; without a progress bar, a log line every ``progress_interval`` seconds of it."""
        interval = float(self.config["progress_interval"] or 0) if "progress_interval" in self.config else 0.0
        if show_progress or interval <= 0:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        loss_func = loss_func or self.model.calculate_loss
        total, started = len(train_data), time.time()
        state = {"done": 0, "said": started}

        def counted(interaction):
            now = time.time()
            if now - state["said"] >= interval and state["done"]:
                done, elapsed = state["done"], now - started
                self.logger.info(f"epoch {epoch_idx}: batch {done} of {total} ({100.0 * done / total:.0f}%) after "
                                 f"{_duration(elapsed)}, about {_duration(elapsed / done * (total - done))} left in "
                                 "this epoch")
                state["said"] = now
            state["done"] += 1
            return loss_func(interaction)

        return super()._train_epoch(train_data, epoch_idx, loss_func=counted, show_progress=False)

    @property
    def seconds_per_epoch(self):
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else 0.0


def get_trainer(model_type, model):
    """Our trainer for plugin models and for RecBole models that use the plain ``Trainer``; else RecBole's own
    (with our checkpoint loading), since those trainers carry model-specific training loops. ``model``: a name, a
    spec (``file.py:Class``) or a class (your own models get :class:`MultimodalTrainer`)."""
    model_class = get_model(model)
    if is_plugin_model(model_class):
        return getattr(model_class, "trainer_class", MultimodalTrainer)
    trainer = recbole_get_trainer(model_type, model_class.__name__)
    return MultimodalTrainer if trainer is Trainer else with_plugin_mixins(trainer)
