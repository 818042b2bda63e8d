"""The shared trainer: the one loop every pipeline runs in.

It owns devices, seeding, mixed precision, distributed gradient averaging, alternating critic / generator
updates, learning-rate schedules, gradient clipping, EMA, non-finite-loss handling, validation with a key
metric, previews, logging and checkpoints (best and last, exact resume).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch

from medgen.config import save_config, to_dict
from medgen.engine import distributed as ddp
from medgen.engine.checkpoint import library_versions, load_checkpoint, save_checkpoint
from medgen.engine.logging import RunLogger
from medgen.engine.previews import save_montage
from medgen.engine.rundir import write_env_json
from medgen.engine.sampling import StepSampler
from medgen.engine.seeding import get_rng_state, seed_everything, set_rng_state
from medgen.errors import MedgenError
from medgen.files import contained_path


class TrainingDiverged(MedgenError):
    """Too many non-finite losses in a row."""


def resolve_device(request: str = "auto", local_rank: int = 0) -> torch.device:
    """The device of this process: `auto` is this rank's GPU when CUDA exists, else the CPU.

    Under torchrun each rank takes GPU `local_rank`; a rank beyond the machine's GPUs is refused here, before
    any work, since NCCL cannot put two ranks on one GPU."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(request)
    except RuntimeError:
        raise MedgenError(f"train.device={request!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MedgenError(f"train.device={request} but no CUDA device is available (use train.device=cpu or auto)")
        count = torch.cuda.device_count()
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise MedgenError(
                f"this process (local rank {local_rank}) needs GPU cuda:{index} but the machine has {count} GPU(s): "
                f"run torchrun with --nproc_per_node={count} or fewer, or set train.device=cpu for CPU processes")
        device = torch.device("cuda", index)
    return device


def amp_dtype(request: str, device: torch.device):
    """bf16 by default on CUDA, off on CPU (bf16 autocast is slower than fp32 on CPUs without bf16 units)."""
    if request == "off" or (request == "auto" and device.type != "cuda"):
        return None
    if request in ("auto", "bf16"):
        return torch.bfloat16
    return torch.float16


def move_batch(batch, device, non_blocking: bool = True):
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_batch(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device, non_blocking) for v in batch)
    return batch


class Trainer:
    def __init__(self, pipeline, run_dir, resume: bool = False, dist_info: ddp.DistInfo | None = None):
        self.pipeline = pipeline
        self.cfg = pipeline.config
        self.tcfg = self.cfg.train
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.dist = dist_info or ddp.DistInfo()
        self.device = pipeline.device
        self.amp = amp_dtype(self.tcfg.amp, self.device)
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.ema = None
        self.best_metric: float | None = None
        self.best_step = -1
        self.bad_steps: dict[str, int] = {}  # per optimizer: skipped (non-finite) updates in a row
        self.skipped_steps = 0
        self._stop_signal: int | None = None
        self._d_low_streak: dict[str, int] = {}  # logged steps in a row with a near-zero discriminator loss
        pipeline._engine = self

    # ----- set-up -----------------------------------------------------------------------------
    def setup(self) -> None:
        p = self.pipeline
        if self.tcfg.threads > 0:
            torch.set_num_threads(self.tcfg.threads)
        seed_everything(self.tcfg.seed, self.dist.rank, self.tcfg.deterministic)
        p.networks = {k: v.to(self.device) for k, v in p.build_networks().items()}
        for net in p.networks.values():
            ddp.broadcast_module(net)
        p.optimizers = p.build_optimizers(p.networks)
        self.dataset = p.train_dataset()
        self.steps_per_epoch = self._steps_per_epoch()
        p.steps_per_epoch = self.steps_per_epoch
        self.total_steps = (
            max(1, int(round(self.tcfg.epochs * self.steps_per_epoch))) if self.tcfg.epochs > 0 else self.tcfg.iterations
        )
        self.schedulers = p.build_schedulers(p.optimizers, self.total_steps)
        if self.amp == torch.float16:
            self.scalers = {name: torch.amp.GradScaler("cuda") for name in p.optimizers}
        if self.tcfg.ema_decay > 0 and p.ema_network:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                p.networks[p.ema_network], multi_avg_fn=get_ema_multi_avg_fn(self.tcfg.ema_decay), use_buffers=True
            )
        if self.tcfg.compile:
            for name, net in p.networks.items():
                p.networks[name] = torch.compile(net)
        self.val_every = self.tcfg.val_every or max(1, self.total_steps // 10)
        self.ckpt_every = self.tcfg.checkpoint_every or self.val_every
        self.start_step = 0
        if self.resume:
            self._restore(self.run_dir / "checkpoints" / "last.pt")
            if self.dist.is_main:  # the config it continues with, overrides given at resume included
                save_config(self.cfg, self.run_dir / "config.yaml")
        elif self.dist.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            write_env_json(
                self.run_dir,
                self.tcfg.seed,
                self.device,
                self.dist.world_size,
                {"amp": str(self.amp), "pipeline": p.name, "total_steps": self.total_steps,
                 "dataset": p.dataset_ref},
            )
        ddp.barrier()

    def _steps_per_epoch(self) -> int:
        """Samples in an epoch / global batch: `train.samples_per_epoch`, else an endless dataset's
        declared `epoch_size`, else the length of a finite one."""
        global_batch = self.tcfg.batch_size * self.dist.world_size
        samples = self.tcfg.samples_per_epoch or getattr(self.dataset, "epoch_size", None) or len(self.dataset)
        return max(1, math.ceil(samples / global_batch))

    def _loader(self, start_step: int):
        per_step = self.pipeline.critic_steps + 1
        sampler = StepSampler(
            self.dataset,
            self.tcfg.batch_size,
            seed=self.tcfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_batch=start_step * per_step,
        )
        workers = self.cfg.data.num_workers
        return iter(
            torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.tcfg.batch_size,
                sampler=sampler,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                # Its own generator: the loader must not draw from the global RNG, or resume would shift it.
                generator=torch.Generator().manual_seed(self.tcfg.seed),
            )
        )

    # ----- the update service used by pipelines -------------------------------------------------
    def update(self, opt_name: str, loss: torch.Tensor, loss_name: str) -> bool:
        p = self.pipeline
        opt = p.optimizers[opt_name]
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss.detach()).all():
            self._bad_step(loss_name, opt_name)
            return False
        scaler = self.scalers.get(opt_name)
        (scaler.scale(loss) if scaler else loss).backward()
        params = [q for group in opt.param_groups for q in group["params"]]
        ddp.average_gradients(params, self.dist.world_size)
        if scaler:
            scaler.unscale_(opt)
        grads = [q.grad for q in params if q.grad is not None]
        if self.tcfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.tcfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([g.detach().float().norm() for g in grads])) if grads else None
        if scaler:
            scaler.step(opt)  # the scaler itself skips inf/nan steps in fp16
            scaler.update()
        else:
            if norm is not None and not torch.isfinite(norm):
                opt.zero_grad(set_to_none=True)
                self._bad_step(f"{loss_name} (gradient)", opt_name)
                return False
            opt.step()
        self.bad_steps[opt_name] = 0  # only this optimizer's streak: another's good step says nothing about it
        return True

    def _bad_step(self, loss_name: str, opt_name: str) -> None:
        streak = self.bad_steps[opt_name] = self.bad_steps.get(opt_name, 0) + 1
        self.skipped_steps += 1
        self.logger.info(f"step {self.pipeline.step}: non-finite {loss_name} for optimizer '{opt_name}', step skipped")
        if streak >= self.tcfg.max_bad_steps:
            raise TrainingDiverged(
                f"{streak} non-finite updates in a row for optimizer '{opt_name}' ({loss_name}); "
                f"stopped at step {self.pipeline.step}. {self._last_good_note()}"
            )

    def _last_good_note(self) -> str:
        last = self.run_dir / "checkpoints" / "last.pt"
        if not last.exists():
            return "No checkpoint was written before that."
        return f"The last good checkpoint is {last}; lower the learning rate or the loss weights and start a new run."

    def check_weights(self) -> None:
        """Refuse to call weights good when any is non-finite or beyond `train.max_abs_weight`: a run whose
        losses are still finite can hold weights that have already exploded (a learning rate far too high)."""
        limit = self.tcfg.max_abs_weight
        for name, net in self.pipeline.networks.items():
            for pname, param in _unwrap(net).named_parameters():
                value = param.detach()
                if not bool(torch.isfinite(value).all()):
                    raise TrainingDiverged(f"network '{name}' has non-finite weights ({pname}) at step "
                                           f"{self.pipeline.step}; not saved. {self._last_good_note()}")
                peak = float(value.abs().max()) if value.numel() else 0.0
                if limit > 0 and peak > limit:
                    raise TrainingDiverged(
                        f"network '{name}' has a weight of magnitude {peak:.3g} ({pname}) at step {self.pipeline.step}, "
                        f"beyond train.max_abs_weight={limit:g}: training has diverged; not saved. {self._last_good_note()}")

    # ----- the loop -------------------------------------------------------------------------------
    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def fit(self) -> dict:
        self.setup()
        p = self.pipeline
        self.logger = RunLogger(
            self.run_dir, self.total_steps, self.start_step, self.tcfg.progress, enabled=self.dist.is_main
        )
        if self.start_step >= self.total_steps:
            self.logger.info(f"nothing to do: the run already reached step {self.start_step}/{self.total_steps}")
            self.logger.close()
            return self.summary()
        length = (f"train.epochs={self.tcfg.epochs:g} x {self.steps_per_epoch} steps/epoch" if self.tcfg.epochs > 0
                  else f"train.iterations={self.tcfg.iterations}, {self.steps_per_epoch} steps/epoch")
        self.logger.info(
            f"{p.name}: {'resuming at' if self.start_step else 'starting'} step {self.start_step}/{self.total_steps} "
            f"({length}) on {self.device} (amp={self.amp}, world={self.dist.world_size})"
        )
        if self.dist.is_main:
            from medgen.engine.estimate import estimate_message

            said = estimate_message(p, self.tcfg.batch_size, self.total_steps - self.start_step)
            if said:
                self.logger.info(said)
        batches = self._loader(self.start_step)
        previous_handlers = self._install_signal_handlers()
        for net in p.networks.values():
            net.train()
        step = self.start_step
        t_last = time.perf_counter()
        try:
            while step < self.total_steps:
                p.step = step
                t_step = time.perf_counter()
                logs = self.run_step(batches)
                if step == self.start_step:
                    self._announce_duration(time.perf_counter() - t_step)
                if self.dist.world_size > 1:
                    # Once per step, when no graph is alive: batch norm saves its running statistics for
                    # backward, so averaging them in place between two updates of one step breaks autograd.
                    for net in p.networks.values():
                        ddp.average_buffers(net, self.dist.world_size)
                for sched in self.schedulers.values():
                    sched.step()
                if self.ema is not None:
                    self.ema.update_parameters(p.networks[p.ema_network])
                step += 1
                p.step = step
                if step % self.tcfg.log_every == 0 or step == self.total_steps:
                    values = {k: float(v) for k, v in logs.items()}  # the only host sync, every log_every steps
                    now = time.perf_counter()
                    values["steps_per_s"] = self.tcfg.log_every / max(now - t_last, 1e-9)
                    t_last = now
                    self.logger.log(step, values)
                    self._watch_discriminators(step, values)
                if self._stop_signal is not None:  # before validation: a stop acts within the step it arrives in
                    self.save(step)
                    self.logger.info(f"stopped by signal {self._stop_signal} at step {step}; resume with --resume")
                    raise KeyboardInterrupt
                if step % self.val_every == 0 or step == self.total_steps:
                    self.validate(step)
                if step % self.ckpt_every == 0 or step == self.total_steps:
                    self.save(step)
                    self.logger.plot(p.key_metric)
        finally:
            self._restore_signal_handlers(previous_handlers)
            self.logger.close()
        return self.summary()

    def _announce_duration(self, seconds: float) -> None:
        """After the first step: what the whole run will take at this speed, when that is long enough to matter
        (a paper-sized config started on a CPU takes minutes per step)."""
        left = self.total_steps - self.start_step
        if seconds * left < 600:
            return
        self.logger.info(f"the first step took {seconds:.1f} s on {self.device}: the {left} steps of this run would "
                         f"take about {_hours(seconds * left)}. A paper-sized config is meant for a GPU; for a quick "
                         "try use the pipeline's smoke config (configs/<pipeline>_smoke.yaml)")

    def run_step(self, batches) -> dict:
        """One training step: `critic_steps` critic updates and one train step, each on the next batch of
        `batches`, under the run's autocast. Returns the step's logged tensors (no host sync)."""
        p = self.pipeline
        logs = {}
        with self.autocast():
            for _ in range(p.critic_steps):
                logs.update(p.critic_step(move_batch(next(batches), self.device)))
            logs.update(p.train_step(move_batch(next(batches), self.device)))
        return logs

    def _watch_discriminators(self, step: int, values: dict) -> None:
        """Report a discriminator whose loss stays near zero: it wins outright and the generator learns little."""
        for key, value in values.items():
            if not key.startswith("loss_d"):
                continue
            streak = self._d_low_streak.get(key, 0) + 1 if abs(value) < self.tcfg.d_win_threshold else 0
            self._d_low_streak[key] = streak
            if streak == self.tcfg.d_win_patience:
                self.logger.info(
                    f"warning: {key} has stayed below {self.tcfg.d_win_threshold:g} for {streak} logged steps "
                    f"(up to step {step}): the discriminator wins outright and gives the generator little signal"
                )

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "steps": self.total_steps,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "key_metric": self.pipeline.key_metric,
            "skipped_steps": self.skipped_steps,
        }

    # ----- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, step: int) -> dict:
        p = self.pipeline
        cases = p.validation_cases()
        if self.tcfg.max_val_cases:
            cases = cases[: self.tcfg.max_val_cases]
        if not cases:
            return {}
        for net in p.networks.values():
            net.eval()
        sums: dict[str, float] = {}
        mine = cases[self.dist.rank :: self.dist.world_size]
        for i, case in enumerate(mine):
            with self.autocast():
                prediction = p.predict_case(case)
            metrics = p.evaluate_case(p.output_values(case, prediction), case)  # as `medgen evaluate` scores them
            for k, v in metrics.items():
                if math.isfinite(v):
                    sums[k] = sums.get(k, 0.0) + float(v)
                    sums[f"n::{k}"] = sums.get(f"n::{k}", 0.0) + 1
            if i == 0 and self.dist.is_main:
                images = p.preview(case, prediction)
                if images:
                    case_id = getattr(case, "id", None) or "case"
                    path = contained_path(self.run_dir / "previews", f"step{step:07d}_{case_id}.png")
                    save_montage(images, path, title=f"{case_id} at step {step}")
        sums = ddp.reduce_sums(sums, self.device)
        means = {k: sums[k] / sums[f"n::{k}"] for k in sums if not k.startswith("n::") and sums[f"n::{k}"] > 0}
        for net in p.networks.values():
            net.train()
        if means:
            self.logger.log(step, means, kind="val")
            value = means.get(p.key_metric)
            if value is not None and self._is_better(value):
                self.best_metric, self.best_step = value, step
                self.save(step, name="best.pt")
        return means

    def _is_better(self, value: float) -> bool:
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.pipeline.key_metric_mode == "max" else value < self.best_metric

    # ----- checkpoints -------------------------------------------------------------------------------
    def state(self, step: int) -> dict:
        p = self.pipeline
        return {
            "pipeline": p.name,
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "skipped_steps": self.skipped_steps,
            "networks": {k: _unwrap(v).state_dict() for k, v in p.networks.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {k: v.state_dict() for k, v in p.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
            "rng": ddp.gather_objects(get_rng_state()),
            "pipeline_state": p.state_dict(),
            "config": to_dict(self.cfg),
            "versions": library_versions(),
        }

    def save(self, step: int, name: str = "last.pt") -> None:
        self.check_weights()  # identical replicas: every rank reaches the same verdict
        state = self.state(step)  # every rank joins the RNG gather
        if self.dist.is_main:
            save_checkpoint(state, self.run_dir / "checkpoints" / name)
        ddp.barrier()

    def _restore(self, path: Path) -> None:
        p = self.pipeline
        state = load_checkpoint(path)  # on the CPU: load_state_dict copies onto each network's device
        if state.get("pipeline") != p.name:
            raise MedgenError(f"{path}: a checkpoint of pipeline '{state.get('pipeline')}', not '{p.name}'")
        for k, net in p.networks.items():
            try:
                _unwrap(net).load_state_dict(state["networks"][k])
            except (RuntimeError, KeyError) as exc:
                first = str(exc).strip().splitlines()
                raise MedgenError(f"{path}: network '{k}' of the checkpoint does not fit the network this config "
                                  f"builds ({first[1].strip() if len(first) > 1 else first[0][:200]}); resume with "
                                  "the run's own config.yaml (do not change model.* at resume)") from None
        for k, opt in p.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        for k, scaler in self.scalers.items():
            if k in state["scalers"]:
                scaler.load_state_dict(state["scalers"][k])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        p.load_state_dict(state.get("pipeline_state") or {})
        rng = state["rng"]
        set_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.start_step = int(state["step"])
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step", -1)
        self.skipped_steps = state.get("skipped_steps", 0)
        p.step = self.start_step

    # ----- signals: SIGTERM / Ctrl-C finish the step, write a checkpoint and exit -------------------------
    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signal_handlers(self, previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "_orig_mod", net)  # torch.compile wrapper
