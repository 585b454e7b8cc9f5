"""Many training runs, each isolated: in fresh local processes, or as Ray tasks on a (possibly multi-node) cluster.

One run is :func:`recbole_ssr.experiments.run.run` for one (model, dataset, configuration) — a :class:`RunSpec`. The
side-by-side mode, the analyses and the tuned benchmark hand their runs to :func:`run_many` (the tuned benchmark,
which submits runs while its searches go on, to :class:`RayBatch` directly), which

* without Ray runs them one after another, each in a fresh ``spawn`` process (a crash or an out-of-memory kill is
  contained and reported as *failed*; peak memory is per run), or with ``isolated=False`` in this process;
* inside a Ray session (``--address``, or the local Ray of ``--tune``) submits each run as a Ray task with
  ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (fractions allowed) in a fresh worker process
  (``max_calls=1``). A task receives its whole configuration as a mapping (no file of the driver is read on the
  node) and returns its outcome; the driver writes every file, so nodes need no shared filesystem — only the
  dataset at ``data_path`` and, for your own model (``file.py:Class``), its file at the same absolute path: a task
  receives the model's spec, never the class, and resolves it again on its node (docs/tuning.md).

A run that fails is reported as *failed* with its error; one that failed on a bug (any exception but the package's
one-line errors: in your own model's code, for instance) also keeps its traceback, which is printed and stored.

Every finished run is handed to ``on_result`` as soon as it finishes (the callers append it to their progress
file, so an interrupted batch keeps what finished).
"""

import contextlib
import dataclasses
import math
import multiprocessing
import os
import socket
import sys
import time
import traceback

import torch

from recbole_ssr.core.errors import ConfigError, RecboleSSRError
from recbole_ssr.experiments.run import run
from recbole_ssr.model.registry import canonical_model, is_model_spec, model_name


@contextlib.contextmanager
def ray_session(address=None, num_cpus=None):
    """Start a local Ray (usage stats and dashboard off) or join ``address``; shut it down afterwards.

    ``RAY_USAGE_STATS_ENABLED=0`` is set only while the local Ray runs (and only if the user did not set it);
    the started Ray processes inherit it. Ray's own ``ray.init`` sets ``RAY_AUTH_MODE=token`` in this process
    for a new local cluster; both variables are restored afterwards. An already initialised Ray (a notebook, the
    tests) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    try:
        if address:
            if num_cpus is not None:
                raise ConfigError("--num_cpus sizes the local Ray only; with --address the cluster's own CPUs are "
                                  "used.")
            kwargs = {} if str(address).startswith("ray://") else {"log_to_driver": False}
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError, ...
                raise ConfigError(
                    f"cannot connect to the Ray cluster at --address={address} ({exc}). Start one with "
                    "'ray start --head' (docs/tuning.md), or leave --address out for a local Ray. A cluster with "
                    "token authentication (the default of 'ray start') needs RAY_AUTH_MODE=token and its token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN) unless you use --address=auto on the head node."
                ) from None
        else:
            if saved["RAY_USAGE_STATS_ENABLED"] is None:
                os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclasses.dataclass
class RunSpec:
    """One training run: ``config_dict`` is applied over the model/dataset yamls and ``config_files``. ``model``:
    a name or a spec (``/abs/file.py:Class``); tables and results call it :attr:`name`."""

    model: str
    dataset: str
    seed: int
    config_dict: dict
    config_files: list = dataclasses.field(default_factory=list)
    label: str = ""  # what the progress lines call the run besides model and seed (an analysis variant)

    def __post_init__(self):
        self.model = canonical_model(self.model)  # a model file's path absolute: a Ray task runs elsewhere

    @property
    def name(self):
        return model_name(self.model)

    @property
    def key(self):
        return (self.name, int(self.seed))


def run_in_process(model, dataset, config_files, config_dict):
    """Runs in the child process / Ray worker; returns the outcome or the error (never raises)."""
    try:
        outcome = run(model, dataset, config_files, config_dict)
        return {"status": "ok", **outcome}
    except Exception as exc:  # reported in the table; the other runs go on
        failed = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if not isinstance(exc, RecboleSSRError):  # a bug (in a model's own code, say): its traceback is shown
            failed["show_traceback"] = True
        return failed


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while the block runs (in the main thread; elsewhere nothing changes). A process started
    inside inherits the ignored SIGINT through exec, so Ctrl-C reaches only this process, which stops the child
    itself: no half-imported child prints a traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _child(connection, model, dataset, config_files, config_dict):
    connection.send(run_in_process(model, dataset, config_files, config_dict))
    connection.close()


def run_isolated(model, dataset, config_files, config_dict):
    """One run in a fresh local ``spawn`` process. Ctrl-C stops the child (no traceback of it) and is raised here."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, model, dataset, config_files, config_dict), daemon=True)
    with _sigint_ignored():
        process.start()
    send.close()
    try:
        try:
            return receive.recv()
        except EOFError:  # the child died without an answer (e.g. killed for memory)
            process.join()
            code = process.exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            hint = " (out of memory?)" if code == -9 else ""
            return {"status": "failed", "error": f"worker process died: {why}{hint}"}
    except BaseException:
        process.terminate()
        raise
    finally:
        process.join()
        receive.close()


def set_torch_threads(cpus):
    """torch's CPU threads for a run given ``cpus`` CPUs by Ray (fractions round down, at least one)."""
    torch.set_num_threads(max(1, int(math.floor(cpus))))


def _ray_task(model, dataset, config_files, config_dict, cpus):
    """Body of a Ray task: one run in a scratch folder of the node (RecBole's log/ and checkpoints stay there and
    are removed; the outcome travels back to the driver)."""
    import shutil
    import tempfile

    import ray

    set_torch_threads(cpus)
    started = time.time()
    scratch = tempfile.mkdtemp(prefix="recbole_ssr_run_")
    previous = os.getcwd()
    os.chdir(scratch)
    try:
        config_dict = dict(config_dict, checkpoint_dir=os.path.join(scratch, "saved"), show_progress=False)
        gpu_ids = ray.get_gpu_ids()
        # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep Ray's assignment, and no GPU for CPU runs.
        config_dict["gpu_id"] = ",".join(str(g) for g in gpu_ids)
        outcome = run_in_process(model, dataset, config_files, config_dict)
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)
    outcome["run_seconds"] = round(time.time() - started, 1)  # on the node, without the wait for a free CPU
    outcome["node_id"] = ray.get_runtime_context().get_node_id()
    outcome["hostname"] = socket.gethostname()
    if outcome["status"] != "ok":  # e.g. a model file missing on this node: say which node
        outcome["error"] += node_note(outcome["node_id"])
    return outcome


def node_note(node_id):
    """`` [on Ray node HOST, id NODE]``: where a run that failed on a Ray node ran."""
    return f" [on Ray node {socket.gethostname()}, id {(node_id or '?')[:12]}]"


def _stamp(outcome, spec, started, cpus):
    outcome.update(model=spec.name, seed=int(spec.seed), wall_seconds=round(time.time() - started, 1),
                   cpus=cpus)
    outcome.setdefault("dataset", spec.dataset)  # also for a run that failed before its configuration was read
    if is_model_spec(spec.model):
        outcome.setdefault("model_source", spec.model)
    return outcome


def run_many(specs, on_result=None, cpus_per_run=1, gpus_per_run=0, use_ray=False, label="side-by-side",
             isolated=True):
    """Run every spec; returns their outcomes in the order of ``specs`` (see the module docstring).
    ``on_result(index, outcome)`` is called as each run finishes (``index`` into ``specs``)."""
    say = _sayer(label)
    outcomes = [None] * len(specs)

    def finish(index, outcome):
        _announce(say, specs[index], outcome)
        outcomes[index] = outcome
        if on_result is not None:
            on_result(index, outcome)

    if use_ray:
        batch = RayBatch(cpus_per_run, gpus_per_run, label)
        for index, spec in enumerate(specs):
            batch.submit(spec, tag=index)
        for index, outcome in batch.results():
            finish(index, outcome)
        return outcomes
    for index, spec in enumerate(specs):
        started = time.time()
        say(f"{_name(spec)} ...")
        outcome = (run_isolated if isolated else run_in_process)(spec.model, spec.dataset, spec.config_files,
                                                                 spec.config_dict)
        finish(index, _stamp(outcome, spec, started, cpus_per_run))
    return outcomes


def _sayer(label):
    return lambda text: print(f"[{label}] {text}", flush=True)


def _name(spec):
    return f"{spec.name}{' ' + spec.label if spec.label else ''} seed {spec.seed}"


def _announce(say, spec, outcome):
    status = outcome["status"] if outcome["status"] == "ok" else f"FAILED ({outcome['error']})"
    where = f" on {outcome['hostname']}" if outcome.get("hostname") else ""
    say(f"{_name(spec)}{where}: {status}")
    if outcome.get("show_traceback") and outcome.get("traceback"):
        print(outcome["traceback"].rstrip(), file=sys.stderr, flush=True)


class RayBatch:
    """Runs submitted as Ray tasks at any time (e.g. while a search is still running); :meth:`results` yields
    ``(tag, outcome)`` as the runs finish, in finishing order. Needs an initialised Ray."""

    def __init__(self, cpus_per_run=1, gpus_per_run=0, label="runs"):
        import ray

        self.cpus, self.gpus, self.say = cpus_per_run, gpus_per_run, _sayer(label)
        # max_calls=1: every run in a fresh worker process (no state carried from one run to the next)
        self.remote = ray.remote(max_calls=1)(_ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run)
        self.pending = {}  # ObjectRef -> (tag, spec, submitted at)

    def submit(self, spec, tag=None):
        ref = self.remote.remote(spec.model, spec.dataset, list(spec.config_files), dict(spec.config_dict),
                                 self.cpus)
        self.pending[ref] = (spec if tag is None else tag, spec, time.time())
        self.say(f"{spec.name} seed {spec.seed}: submitted ({self.cpus:g} CPU, {self.gpus:g} GPU)")

    def results(self, timeout=None):
        """Finished runs; with ``timeout`` (seconds) only those finishing within it, else until none is left."""
        import ray

        deadline = None if timeout is None else time.time() + timeout
        while self.pending:
            left = None if deadline is None else max(0.0, deadline - time.time())
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=left)
            if not done:
                return
            ref = done[0]
            tag, spec, submitted = self.pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # the worker died (killed for memory, node lost)
                outcome = {"status": "failed", "error": f"Ray task failed: {type(exc).__name__}: "
                                                        f"{str(exc).splitlines()[0] if str(exc) else ''}"}
            # wall time from submission: includes waiting for a free CPU when the cluster is busy
            yield tag, _stamp(outcome, spec, submitted, self.cpus)
