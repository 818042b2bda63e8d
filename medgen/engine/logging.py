"""What a person watching a run sees: log.txt, metrics.csv, progress.png, a progress bar, TensorBoard (the
scalars of metrics.csv and, at each validation, the middle slices of the preview images)."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

from medgen.files import atomic_write


class RunLogger:
    """Rank 0 writes; other ranks get a logger whose methods do nothing."""

    def __init__(self, run_dir, total_steps: int, start_step: int = 0, progress: str = "auto", enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.history: list[dict] = []
        self._columns: list[str] | None = None
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self.log_file = open(self.run_dir / "log.txt", "a", buffering=1)
        self.csv_path = self.run_dir / "metrics.csv"
        if self.csv_path.exists():  # resumed run: keep the history up to the resumed step
            with open(self.csv_path) as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
            self.history = [{k: _num(v) for k, v in r.items() if v != ""} for r in rows]
            self._rewrite_csv()
        mode = progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except Exception as exc:  # noqa: BLE001 - a dependency, but a broken install must not stop training
            self._tb = None
            self.info(f"TensorBoard logging is off: {type(exc).__name__}: {exc}")

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log_file.write(line + "\n")
        if self._bar is not None:
            self._bar.write(line)
        elif self.mode != "off":
            print(line, flush=True)

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        """Record scalars at `step`; `kind` is 'train' or 'val' (val keys are prefixed 'val_')."""
        if not self.enabled:
            return
        prefix = "val_" if kind == "val" else ""
        row = {"step": step, **{prefix + k: float(v) for k, v in values.items()}}
        elapsed = time.perf_counter() - self.t0
        row["time_s"] = round(elapsed, 3)
        self.history.append(row)
        self._append_csv(row)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time_s"):
                    self._tb.add_scalar(k, v, step)
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("step", "time_s"))
        if self._bar is not None:
            if kind == "train":
                self._bar.n = step
                self._bar.set_postfix_str(text[:120])
                self._bar.refresh()
            else:
                self._bar.write(f"step {step}: {text}")
            self.log_file.write(f"step {step}/{self.total} {text}\n")
        else:
            line = f"step {step}/{self.total} {text} ({rate:.2f} step/s, eta {_duration(eta)})"
            self.info(line)

    def images(self, step: int, images: dict, tag: str = "preview") -> None:
        """TensorBoard images `<tag>/<name>` at `step`: the middle slice of each named image (input /
        prediction / target / error), oriented and scaled as in the PNG previews."""
        if not self.enabled or self._tb is None:
            return
        from medgen.engine.previews import middle_slices

        for name, picture in middle_slices(images).items():
            self._tb.add_image(f"{tag}/{name}", picture, step, dataformats="HW")
        self._tb.flush()

    def _append_csv(self, row: dict) -> None:
        new_cols = [k for k in row if not self._columns or k not in self._columns]
        if self._columns is None or new_cols:
            self._columns = list(dict.fromkeys((self._columns or []) + list(row)))
            self._rewrite_csv()
            return
        with open(self.csv_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._columns).writerow(row)

    def _rewrite_csv(self) -> None:
        cols = list(dict.fromkeys(k for r in self.history for k in r))
        if "step" in cols:
            cols.remove("step")
        self._columns = ["step"] + cols
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self._columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.csv_path, buffer.getvalue(), fsync=False)

    def plot(self, key_metric: str | None = None) -> None:
        """progress.png: one panel per loss family (`loss_families`; a log axis where its values span decades)
        and one for the validation metric, against step."""
        if not self.enabled or not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # Losses only: rates and schedule values (steps_per_s, lambda_*, alpha, beta) live in metrics.csv.
        families = loss_families(sorted({k for r in self.history for k in r if k.startswith("loss")}))
        val_keys = sorted({k for r in self.history for k in r if k.startswith("val_")})
        shown = [f"val_{key_metric}"] if key_metric and f"val_{key_metric}" in val_keys else val_keys
        panels = [(f"training: {family}", keys) for family, keys in families.items()] + [("validation", shown)]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False,
                                 layout="constrained")
        for ax, (title, keys) in zip(axes[0], panels):
            values = []
            for key in keys:
                pts = [(r["step"], r[key]) for r in self.history if key in r and math.isfinite(r[key])]
                if pts:
                    ax.plot(*zip(*pts), "o-" if len(pts) < 20 else "-", label=key, lw=1, ms=3)
                    values += [v for _, v in pts]
            if title != "validation" and spans_decades(values):
                ax.set_yscale("log")
                title += " (log scale)"
            ax.set_xlabel("step")
            ax.set_title(title, fontsize=9)
            if keys:
                ax.legend(fontsize=7)
        try:
            atomic_write(self.run_dir / "progress.png", lambda tmp: fig.savefig(tmp, dpi=80, format="png"),
                         fsync=False)
        finally:
            plt.close(fig)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self.log_file.close()


def loss_families(keys) -> dict[str, list[str]]:
    """The logged losses grouped by what they measure, so terms of different sizes get their own axis:
    "discriminator" (loss_d*: a critic's or discriminator's own loss), "generator" (loss_g*, loss_adv*: the
    generator's total and adversarial terms) and "terms" (reconstruction, edge, KL, segmentation ... terms)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        name = key[len("loss_"):] if key.startswith("loss_") else ""
        family = ("discriminator" if name == "d" or name.startswith("d_") else
                  "generator" if name == "g" or name.startswith(("g_", "adv")) else "terms")
        out.setdefault(family, []).append(key)
    return {f: out[f] for f in ("generator", "discriminator", "terms") if f in out}


def spans_decades(values, decades: float = 1.5) -> bool:
    """True when positive `values` span at least `decades` powers of ten (a linear axis would flatten the
    small ones); never for values of both signs (a WGAN critic's loss)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return math.log10(max(finite) / min(finite)) >= decades


def progress_bar(total: int, desc: str, show: bool | None = None, enabled: bool = True):
    """A tqdm bar over `total` items for infer / evaluate, on stderr: shown when `show`, or (None) when stderr is
    a terminal; a disabled bar (same methods, prints nothing) otherwise."""
    from tqdm.auto import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="case", dynamic_ncols=True, disable=not (show and enabled))


def _num(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
