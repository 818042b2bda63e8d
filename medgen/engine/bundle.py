"""`medgen export RUN --format bundle`: a trained model as a MONAI bundle (https://docs.monai.io/en/latest/
mb_specification.html) that reproduces `medgen infer`:

    <bundle>/configs/metadata.json    the bundle's metadata: versions, task, network_data_format (what the network
                                      is fed and returns), and under "medgen" the run, checkpoints, the medgen
                                      helpers the config names, notes and the verification against medgen infer
    <bundle>/configs/inference.json   loading (MONAI LoadImaged, NIfTI as medgen reads it), medgen's intensity
                                      normalisation, every cascade stage's sliding window (MONAI's
                                      SlidingWindowInferer with medgen's window, overlap, blending and padding),
                                      the inverse intensity transform, SaveImaged
    <bundle>/configs/medgen_config.json  the run's resolved config (to rebuild the eager network: `network_def`)
    <bundle>/configs/logging.conf     Python logging for `python -m monai.bundle run`
    <bundle>/models/model.pt          weights only (a state dict; a cascade: {"stage1": ..., "stage2": ...})
    <bundle>/models/model.ts          TorchScript of the (last stage's) network, with metadata.json inside;
                                      model_stage<k>.ts for a cascade's earlier stages
    <bundle>/docs/README.md           what it does, how to run it, what it writes

Run it with `python -m monai.bundle run --config_file <bundle>/configs/inference.json --bundle_root <bundle>
--dataset_dir <folder of images>` (or `--dataset_json <dataset.json>`: its test split) `--output_dir <out>`.

The bundle holds no pickled code: model.pt is loaded with `torch.load(weights_only=True)`; the network that runs
is the TorchScript file. The steps MONAI has no transform for are medgen's (`medgen.engine.bundle_transforms`),
named by `_target_` and listed in metadata.json; every other step is MONAI's. Two families have a bundle: the 3D
image-to-image pipelines (`ImageToImagePipeline`) and lesion_uda; each export is verified by running the bundle
and `medgen infer` on one case of the run's dataset (cropped to a few windows) and comparing what they write.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medgen.engine.export import Exportable, export_torchscript, exportables, file_metadata, staged_folder
from medgen.errors import MedgenError

__all__ = ["export_bundle", "bundle_plan", "BundlePlan"]

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
HELPERS = "medgen.engine.bundle_transforms"
MODALITY = {"pet": "PT", "mr": "MR", "zscore": "MR", "ct": "CT", "oct": "OCT"}
INT_RANGES = {"int16": (-32768, 32767), "uint8": (0, 255), "int32": (-(2**31), 2**31 - 1), "uint16": (0, 65535)}


@dataclass
class StagePlan:
    """One cascade stage of a bundle: the exported module, what it is fed and how it is slid over a volume."""

    name: str  # the network's name in the pipeline
    item: Exportable
    channels: list[str]  # what the network input's channels are, in order
    inferer: dict  # a MONAI config of the inferer
    in_size: list[int]
    out_size: list[int]


@dataclass
class BundlePlan:
    task: str
    inputs: dict[str, str]  # dataset key -> preset name
    mask_key: str | None
    preprocessing: list[dict]  # MONAI configs after loading, before the network input is concatenated as "image"
    stages: list[StagePlan]
    postprocessing: list[dict]  # MONAI configs between the last stage's "pred" and SaveImaged
    outputs: list[dict]  # {"key", "postfix", "dtype", "units", "reference"} written per case
    output_format: dict  # network_data_format["outputs"]["pred"] fields beyond the shape
    helpers: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


# ----- what each family's bundle does -----------------------------------------------------------------------------
def _preset_of(key) -> tuple[str, dict]:
    """A CaseKey's preset as (name, options) for `medgen.data.presets.NormalizeIntensityd`."""
    preset = key.preset
    if isinstance(preset, str):
        return preset, {}
    return preset.name, {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(preset).items()}


def _normalisation(keys, mask_key: str | None) -> list[dict]:
    steps = []
    for key in keys:
        name, options = _preset_of(key)
        steps.append({"_target_": "medgen.data.presets.NormalizeIntensityd", "keys": [key.name], "preset": name,
                      "mask_key": mask_key, **options})
    return steps


def _window_inferer(in_size, out_size, infer, overlap: float, blend: str) -> tuple[dict, bool]:
    """(MONAI config of the sliding window medgen uses for these windows, whether it is medgen's own)."""
    if list(out_size) == list(in_size):
        # medgen.inference.windows.sliding_window: MONAI's, after padding a volume smaller than the window with its
        # edge values (MONAI pads symmetrically as medgen does: padding_mode "replicate" is the same padding)
        return {"_target_": "SlidingWindowInferer", "roi_size": list(in_size), "sw_batch_size": int(infer.window_batch),
                "overlap": float(overlap), "mode": blend, "padding_mode": "replicate", "sw_device": "@device",
                "device": "$torch.device('cpu')"}, False
    return {"_target_": f"{HELPERS}.ValidSlidingWindowInferer", "roi_size": list(in_size),
            "output_size": list(out_size), "sw_batch_size": int(infer.window_batch), "overlap": float(overlap),
            "mode": blend, "sw_device": "@device"}, True


def _output_size(module, channels: int, in_size) -> list[int]:
    with torch.no_grad():
        was = module.training
        module.eval()
        try:
            out = module(torch.zeros(1, channels, *in_size))
        finally:
            module.train(was)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return [int(s) for s in out.shape[2:]]


def _image_to_image_plan(stages) -> BundlePlan:
    from medgen.data.cases import Case
    from medgen.pipelines.base import PREVIOUS_KEY

    first = stages[0]
    cfg = first.config
    keys = first.case_keys()
    sources = first.source_keys()
    inputs = [k for k in keys if k.role == "input"]
    if [k.name for k in inputs] != list(sources):
        raise MedgenError(f"pipeline '{first.name}': its input keys {[k.name for k in inputs]} are not the network's "
                          f"sources {sources}; no bundle")
    mask_key = next((k.name for k in keys if k.role == "mask"), None)
    preprocessing = _normalisation(inputs, mask_key)
    helpers = set()
    notes = []
    names = {k.name: _preset_of(k)[0] for k in inputs}
    sigma = float(getattr(cfg.data, "scale_smoothing_vox", 0.0) or 0.0)
    if sigma > 0 and set(names.values()) == {"pet"}:
        preprocessing.append({"_target_": f"{HELPERS}.NoiseRobustPETScaled", "keys": sources, "sigma": sigma})
        helpers.add("NoiseRobustPETScaled")
    composes = hasattr(first, "compose") and bool(getattr(cfg.model, "mask_output", False))
    pads_background = hasattr(first, "compose")  # mr_synthesis pads a small volume with its background, -1
    in_size = [int(s) for s in (getattr(cfg.infer, "window", None) or cfg.data.patch_size)]
    plans = []
    for stage in stages:
        items = exportables(stage)
        item = items.get(stage.generator)
        if item is None or item.unavailable:
            raise MedgenError(f"pipeline '{stage.name}' does not export its generator '{stage.generator}'")
        channels = list(sources) + ([f"{PREVIOUS_KEY} (stage {stage.stage - 1} estimate)"] if stage.stage > 1 else [])
        out_size = _output_size(item.module, len(channels), in_size)
        inferer, own = _window_inferer(in_size, out_size, cfg.infer, cfg.infer.overlap, cfg.infer.blend)
        if own:
            helpers.add("ValidSlidingWindowInferer")
        plans.append(StagePlan(stage.generator, item, channels, inferer, in_size, out_size))
    if pads_background:
        preprocessing.append({"_target_": "SpatialPadd", "keys": "image", "spatial_size": list(in_size),
                              "method": "end", "mode": "constant", "value": -1.0, "_concat_": True})
    # Where the output's units come from: probe with a case that has only its inputs, as at deployment.
    probe = Case(id="probe", split="test", norm={k: {"preset": p} for k, p in names.items()})
    last = stages[-1]
    params = last.output_params(probe)
    postprocessing = []
    if pads_background:  # back to the volume's own size (the padding was at the end of each axis)
        postprocessing.append({"_target_": "Lambda", "func": f"$lambda d: dict(d, pred=d['pred'][(slice(None),) + "
                                                             f"tuple(slice(0, s) for s in d['{sources[0]}'].shape[1:])])"})
    if composes:
        mk = cfg.data.mask_key
        # mr_synthesis' `compose`: outside the head the estimate is the background -1; the head is the mask when
        # the case has one, else what `derive_mask` gives (any source above its own minimum) or, without a mask
        # key, any source above -1
        src = f"d['{sources[0]}']" if len(sources) == 1 else f"torch.cat([{', '.join(f'd[{k!r}]' for k in sources)}], 0)"
        fg = (f"({src} > {src}.flatten(1).amin(1).view(-1, *([1] * ({src}.dim() - 1)))).any(0, keepdim=True)"
              if mk else f"({src} > -1).any(0, keepdim=True)")
        mask_expr = f"(d['{mk}'] > 0) if '{mk}' in d else {fg}" if mk else fg
        postprocessing.append({"_target_": "Lambda", "func": f"$lambda d: dict(d, pred=torch.where({mask_expr}, "
                                                             "d['pred'], torch.full_like(d['pred'], -1.0)))"})
    if params is None:
        units = "normalised"
        notes.append(f"the estimate stays in the network's normalised units: medgen maps it back with the stored "
                     f"scaling of the target '{last.target_key()}', which a case without its target does not have "
                     "(medgen infer writes such a case the same way)")
    elif any(params is probe.norm[k] for k in names):
        src = next(k for k in names if params is probe.norm[k])
        postprocessing.append({"_target_": f"{HELPERS}.InvertIntensityd", "keys": "pred", "params_key": src})
        helpers.add("InvertIntensityd")
        units = last.output_units(probe)
    elif params.get("preset") == "ct":
        lo, hi = float(params["low"]), float(params["high"])
        postprocessing.append({"_target_": "ScaleIntensityRanged", "keys": "pred", "a_min": -1.0, "a_max": 1.0,
                               "b_min": lo, "b_max": hi, "clip": False})
        units = "HU"
    else:
        postprocessing.append({"_target_": f"{HELPERS}.InvertIntensityd", "keys": "pred", "params": dict(params)})
        helpers.add("InvertIntensityd")
        units = last.output_units(probe)
    dtype = cfg.infer.output_dtype
    if dtype in INT_RANGES:  # medgen's writer rounds to the nearest integer and clips to the type's range
        lo, hi = INT_RANGES[dtype]
        postprocessing.append({"_target_": "Lambdad", "keys": "pred",
                               "func": f"$lambda x: torch.clamp(torch.round(x), {lo}, {hi})"})
    target = last.target_key()
    fmt = {"type": "image", "format": {"HU": "hounsfield"}.get(units, "magnitude"),
           "modality": MODALITY.get(names.get(target) or _target_preset(last), ""), "num_channels": 1,
           "dtype": "float32", "value_range": [-1, 1] if units == "normalised" else [],
           "channel_def": {"0": f"{target} estimate ({units})"}}
    return BundlePlan(first.description, names, mask_key, preprocessing, plans, postprocessing,
                      [{"key": "pred", "postfix": last.output_name, "dtype": dtype, "units": units,
                        "reference": target, "name": last.output_name}], fmt, helpers, notes)


def _target_preset(pipeline) -> str:
    key = next((k for k in pipeline.case_keys() if k.role == "target"), None)
    return _preset_of(key)[0] if key is not None else ""


def _lesion_plan(stages) -> BundlePlan:
    (stage,) = stages
    cfg, inf = stage.config, stage.config.infer
    keys = stage.case_keys()
    sources = stage.source_keys()
    inputs = [k for k in keys if k.role == "input"]
    mask_key = next((k.name for k in keys if k.role == "mask"), None)
    preprocessing = _normalisation(inputs, mask_key)
    item = exportables(stage)["S"]
    helpers = set()
    if cfg.model.segmenter == "deepmedic":
        out_size = [int(s) for s in inf.output_size]
        in_size = list(stage.networks["S"].input_sizes(tuple(out_size)).context)
        inferer, own = _window_inferer(in_size, out_size, inf, inf.overlap, "constant")
    else:
        in_size = [int(s) for s in cfg.data.patch_size]
        out_size = in_size
        inferer, own = _window_inferer(in_size, out_size, inf, max(inf.overlap, 0.25), inf.blend)
    if own:
        helpers.add("ValidSlidingWindowInferer")
    plan = StagePlan("S", item, list(sources), inferer, in_size, out_size)
    post = []
    if inf.restrict_to_mask and mask_key:
        post.append({"_target_": "Lambda", "func": f"$lambda d: dict(d, pred=d['pred'] * (d['{mask_key}'] > 0)) "
                                                   f"if '{mask_key}' in d else d"})
    post.append({"_target_": "CopyItemsd", "keys": "pred", "names": "lesion"})
    post.append({"_target_": "Lambdad", "keys": "lesion",
                 "func": f"$lambda p: (p > {float(inf.threshold)!r}).to(torch.float32)"})
    outputs = [{"key": "lesion", "postfix": "lesion", "dtype": "uint8", "units": "label", "name": "lesion",
                "reference": cfg.data.lesion_key}]
    if inf.write_probabilities:
        outputs.append({"key": "pred", "postfix": "lesion_prob", "dtype": "float32", "units": "probability",
                        "name": "lesion_prob", "reference": None})
    fmt = {"type": "probabilities", "format": "probabilities", "modality": "MR", "num_channels": 1,
           "dtype": "float32", "value_range": [0, 1], "channel_def": {"0": "lesion probability"}}
    names = {k.name: _preset_of(k)[0] for k in inputs}
    return BundlePlan(stage.description, names, mask_key, preprocessing, [plan], post, outputs, fmt, helpers, [])


def bundle_plan(stages) -> BundlePlan:
    """What the bundle of these trained stages does, or a MedgenError saying why this pipeline has none."""
    from medgen.pipelines.image_to_image import ImageToImagePipeline

    first = stages[0]
    if isinstance(first, ImageToImagePipeline):
        return _image_to_image_plan(stages)
    if first.name == "lesion_uda":
        return _lesion_plan(stages)
    what = {0: "works on tables, not images", 2: "scores 2D images patch by patch and aggregates the patches"}.get(
        first.spatial_dims, "has no sliding-window inference over NIfTI volumes")
    raise MedgenError(f"pipeline '{first.name}' has no MONAI bundle: a bundle reproduces sliding-window inference over "
                      f"NIfTI volumes (the 3D image-to-image pipelines and lesion_uda), and {first.name} {what}; "
                      "export its networks with --format torchscript or --format onnx")


# ----- the config files -----------------------------------------------------------------------------------------
def _net_file(k: int, n: int) -> str:
    return "model.ts" if k == n else f"model_stage{k}.ts"


def inference_config(plan: BundlePlan) -> dict:
    """configs/inference.json for a plan."""
    n = len(plan.stages)
    keys = list(plan.inputs)
    first = keys[0]
    datalist = "$monai.data.load_decathlon_datalist(@dataset_json, is_segmentation=False, data_list_key='test')"
    if len(keys) == 1:  # one input: a folder of images will do, as for `medgen infer RUN folder`
        datalist += (f" if @dataset_json else [{{'{first}': f}} for f in sorted(glob.glob(os.path.join(@dataset_dir, "
                     "'*.nii*')))]")
    load = [{"_target_": "LoadImaged", "keys": keys, "reader": "NibabelReader", "image_only": True,
             "ensure_channel_first": True, "dtype": "$numpy.float32"}]
    if plan.mask_key:
        load.append({"_target_": "LoadImaged", "keys": plan.mask_key, "reader": "NibabelReader", "image_only": True,
                     "ensure_channel_first": True, "dtype": "$numpy.float32", "allow_missing_keys": True})
    pre = [dict(s) for s in plan.preprocessing if not s.get("_concat_")]
    after = [{k: v for k, v in s.items() if k != "_concat_"} for s in plan.preprocessing if s.get("_concat_")]
    steps = load + pre + [{"_target_": "ConcatItemsd", "keys": keys, "name": "image", "dim": 0}] + after
    config = {
        "imports": ["$import collections", "$import glob", "$import os", "$import numpy", "$import torch",
                    "$import monai"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "/workspace/data",
        "dataset_json": "",
        "output_dir": "$@bundle_root + '/eval'",
        "data_root_dir": "$os.path.dirname(os.path.abspath(@dataset_json)) if @dataset_json else @dataset_dir",
        "datalist": datalist,
        "preprocessing": {"_target_": "Compose", "transforms": steps},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
    }
    for k, sp in enumerate(plan.stages, start=1):
        suffix = "" if k == n else f"_stage{k}"
        config[f"network_def{suffix}"] = {"_target_": f"{HELPERS}.build_network",
                                          "config_file": "$@bundle_root + '/configs/medgen_config.json'",
                                          "network": sp.name, "stage": k}
        config[f"network{suffix}"] = f"$torch.jit.load(@bundle_root + '/models/{_net_file(k, n)}', map_location=@device).eval()"
        config[f"inferer{suffix}"] = sp.inferer
    for k in range(1, n + 1):
        suffix = "" if k == n else f"_stage{k}"
        source = "d['image']" if k == 1 else f"torch.cat([d['image'], d['pred_stage{k - 1}']], 0)"
        out = "pred" if k == n else f"pred_stage{k}"
        config[f"predict{suffix}"] = (f"$torch.no_grad()(lambda d: dict(d, {out}=@inferer{suffix}({source}.unsqueeze(0)"
                                      f".to(@device), @network{suffix})[0].cpu()))")
    chain = "d"
    for k in range(1, n + 1):
        chain = f"@predict{'' if k == n else f'_stage{k}'}({chain})"
    config["predict_case"] = f"$lambda d: {chain}"
    save = [{"_target_": "SaveImaged", "keys": o["key"], "output_dir": "@output_dir", "output_postfix": o["postfix"],
             "output_ext": ".nii.gz", "output_dtype": f"$numpy.{o['dtype']}", "resample": False,
             "separate_folder": False, "data_root_dir": "@data_root_dir", "print_log": False}
            for o in plan.outputs]
    config["postprocessing"] = {"_target_": "Compose", "transforms": list(plan.postprocessing) + save}
    config["process_case"] = "$lambda d: @postprocessing(@predict_case(d))"
    config["run"] = ["$collections.deque(map(@process_case, @dataset), maxlen=0)"]
    return config


def _versions() -> dict:
    import monai

    import medgen

    try:
        import nibabel

        nib = nibabel.__version__
    except ImportError:  # pragma: no cover - a medgen dependency
        nib = ""
    return {"monai": monai.__version__, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
            "nibabel": nib, "medgen": medgen.__version__}


def metadata(plan: BundlePlan, cls, stages, run_dir, checkpoint: str) -> dict:
    """configs/metadata.json for a plan (the verification is added once it has run)."""
    v = _versions()
    last = plan.stages[-1]
    required = {"nibabel": v["nibabel"]}
    if plan.helpers:
        required["medgen"] = v["medgen"]
    channel_def = {str(i): c for i, c in enumerate(last.channels)}
    presets = sorted(set(plan.inputs.values()))
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medgen {v['medgen']} from run {Path(run_dir).name} ({checkpoint} checkpoint)"},
        "monai_version": v["monai"], "pytorch_version": v["torch"], "numpy_version": v["numpy"],
        "required_packages_version": required,
        "name": f"{cls.name}_{Path(run_dir).name}",
        "task": plan.task,
        "description": f"{cls.description}, trained with medgen (run {Path(run_dir).name}); inference as `medgen infer`",
        "authors": "the medgen user who trained the run",
        "copyright": "the medgen user who trained the run",
        "data_source": str(stages[0].config.data.dataset),
        "data_type": "nifti",
        "image_classes": "; ".join(f"{k}: {p} preset" for k, p in plan.inputs.items()),
        "pred_classes": "; ".join(f"{o['name']} ({o['units']})" for o in plan.outputs),
        "intended_use": "research only; not for clinical use",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude",
                                 "modality": "/".join(MODALITY.get(p, p) for p in presets),
                                 "num_channels": len(last.channels), "spatial_shape": list(last.in_size),
                                 "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": channel_def}},
            "outputs": {"pred": {**plan.output_format, "spatial_shape": list(last.out_size), "is_patch_data": True}},
        },
        "references": [],
        "medgen": {
            "pipeline": cls.name, "run": str(run_dir), "checkpoint": checkpoint,
            "checkpoints": [dict(s.checkpoint or {}, stage=s.stage) for s in stages],
            "inputs": plan.inputs, "mask_key": plan.mask_key,
            "stages": [{"network": s.name, "channels": s.channels, "window": s.in_size, "output_window": s.out_size,
                        "inferer": {k: v for k, v in s.inferer.items() if not str(v).startswith("@")}}
                       for s in plan.stages],
            "outputs": plan.outputs,
            "helpers": sorted(f"{HELPERS}.{h}" for h in plan.helpers) + ["medgen.data.presets.NormalizeIntensityd"],
            "helpers_reason": "steps MONAI has no transform for (foreground-percentile / masked z-score "
                              "normalisation, the case's own inverse, valid-convolution windows): the bundle needs "
                              "`pip install medgen` for them; the network itself is TorchScript (models/model.ts)",
            "notes": plan.notes,
        },
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def readme(plan: BundlePlan, meta: dict) -> str:
    m = meta["medgen"]
    single = len(plan.inputs) == 1
    lines = [f"# {meta['name']}", "", meta["description"] + ".", "",
             "Exported by `medgen export --format bundle`. Research use only.", "", "## Run it", "", "```bash",
             "python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\"]
    if single:
        lines.append("    --dataset_dir /path/to/images --output_dir /path/to/out   # every *.nii / *.nii.gz there")
    lines += ["# or: --dataset_json /path/to/dataset.json   (its \"test\" split; keys "
              + ", ".join(plan.inputs) + (f", optionally {plan.mask_key}" if plan.mask_key else "") + ")", "```", "",
              "`pip install monai nibabel fire` and, because the config names medgen's helpers below, "
              "`pip install medgen`.", "", "## What it does", ""]
    lines += [f"- reads {', '.join(f'`{k}` ({p} preset)' for k, p in plan.inputs.items())} as NIfTI"
              + (f" and, when given, the mask `{plan.mask_key}` (the normalisation's statistics inside it)"
                 if plan.mask_key else "")]
    for k, s in enumerate(plan.stages, start=1):
        lines.append(f"- stage {k}: `{s.name}` on [{', '.join(s.channels)}], windows {s.in_size} -> {s.out_size} "
                     f"({s.inferer['_target_'].rsplit('.', 1)[-1]}, overlap {s.inferer['overlap']}, "
                     f"{s.inferer['mode']} blending)")
    for o in plan.outputs:
        lines.append(f"- writes `<input name>_{o['postfix']}.nii.gz` ({o['units']}, {o['dtype']}) in the input's "
                     "geometry under `output_dir`, mirroring the input's folder")
    for note in plan.notes:
        lines.append(f"- note: {note}")
    lines += ["", "## Files", "", "- `models/model.pt`: weights only (a state dict; a cascade: one per stage, "
              "`stage1`, `stage2`, ...); the module is `network_def` in inference.json (needs medgen)",
              "- `models/model.ts`: TorchScript with its metadata (`monai.data.load_net_with_metadata`); "
              "`model_stage<k>.ts`: a cascade's earlier stages", "- `configs/medgen_config.json`: the run's config",
              "", "## medgen helpers", ""]
    lines += [f"- `{h}`" for h in m["helpers"]]
    lines += ["", m["helpers_reason"] + ".", "", "## Verification", ""]
    ver = m.get("verification") or {}
    if ver.get("outputs"):
        lines.append(f"Compared with `medgen infer` on case `{ver['case']}` ({ver['shape']} voxels):")
        lines += [f"- {name}: max abs difference {r['max_abs_difference']:.3g} (values up to {r['max_abs_value']:.3g})"
                  for name, r in ver["outputs"].items()]
    else:
        lines.append(f"Not verified: {ver.get('skipped', 'unknown')}.")
    return "\n".join(lines) + "\n"


# ----- writing and verifying -----------------------------------------------------------------------------------
def _write_models(plan: BundlePlan, stages, run_dir, models: Path, meta: dict, inference: dict) -> None:
    n = len(plan.stages)
    weights = {}
    for k, (sp, stage) in enumerate(zip(plan.stages, stages), start=1):
        state = {key: v.detach().cpu() for key, v in sp.item.module.state_dict().items()}
        weights[f"stage{k}"] = state
        # as MONAI's `ckpt_export` does: the bundle's metadata as metadata.json, its config beside it
        ts_meta = {**meta, "file": file_metadata(stage, run_dir, sp.name, sp.item, "torchscript")}
        extra = {"inference.json": json.dumps(inference)}
        export_torchscript(sp.item.module, sp.item.example, models / _net_file(k, n), metadata=ts_meta,
                           other_examples=sp.item.other_examples, extra_files=extra)
    torch.save(weights["stage1"] if n == 1 else weights, models / "model.pt")


def _crop_to(path_in, path_out: Path, size) -> tuple[int, ...]:
    """A centre crop of at most `size` voxels per axis of an image, written as NIfTI with its affine moved."""
    import nibabel as nib

    from medgen.data.io import load_image

    img = load_image(path_in)
    arr = np.asarray(img.detach().cpu().numpy())[0]
    affine = np.asarray(img.meta.get("original_affine", img.meta.get("affine")), dtype=np.float64)
    shape = arr.shape[:3]
    start = [max((s - c) // 2, 0) for s, c in zip(shape, size)]
    stop = [st + min(s, c) for st, s, c in zip(start, shape, size)]
    crop = arr[tuple(slice(a, b) for a, b in zip(start, stop))]
    moved = affine.copy()
    moved[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    out = nib.Nifti1Image(np.ascontiguousarray(crop.astype(np.float32)), moved)
    out.set_qform(moved, code=1)
    out.set_sform(moved, code=1)
    path_out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path_out))
    return tuple(crop.shape)


def _sample_entry(stages) -> tuple[str, dict]:
    """The first case of the test split (else validation, training) of the run's dataset: its entry."""
    source = stages[0].data
    for split in ("test", "validation", "training"):
        entries = source.entries(split)
        if entries:
            return split, entries[0]
    raise MedgenError(f"{source.ref.path}: no case to verify the bundle on")


def verify_bundle(bundle: Path, plan: BundlePlan, stages, run_dir, checkpoint: str, work: Path) -> dict:
    """Run the bundle (in this process, with MONAI's ConfigWorkflow) and `medgen infer` on one case of the run's
    dataset, cropped to at most two windows per axis, and compare every file the bundle writes with medgen's."""
    import nibabel as nib
    from monai.bundle import ConfigWorkflow

    from medgen.engine.commands import infer

    try:
        split, entry = _sample_entry(stages)
    except MedgenError:
        raise
    except Exception as exc:  # noqa: BLE001 - the dataset is gone or unreadable
        raise MedgenError(f"cannot verify the bundle: the run's dataset is not readable ({exc}); pass --dataset "
                          "with a dataset holding the pipeline's input keys, or --no-verify") from exc
    cid = str(entry.get("id"))
    window = plan.stages[0].in_size
    size = [2 * w for w in window]
    data = work / "data"
    keys = list(plan.inputs) + ([plan.mask_key] if plan.mask_key and plan.mask_key in entry else [])
    case = {"id": cid}
    shape = None
    for key in keys:
        shape = _crop_to(entry[key], data / cid / f"{key}.nii.gz", size)
        case[key] = f"{cid}/{key}.nii.gz"
    (data / "dataset.json").write_text(json.dumps({"name": "bundle verification", "test": [case],
                                                   "keys": {k: "label" if k == plan.mask_key else "image" for k in keys}}))
    result = infer(run_dir, dataset=str(data), split="test", out=work / "medgen", checkpoint=checkpoint, device="cpu")
    manifest = json.loads(Path(result["manifest"]).read_text())
    got = manifest["cases"].get(cid) or {}
    if got.get("status") != "ok":
        raise MedgenError(f"cannot verify the bundle: medgen infer failed on case '{cid}': {got.get('error')}")
    n = len(stages)
    ref_files = {f["name"]: f["path"] for f in got["files"] if "path" in f and f.get("stage", 1) == n}
    # MONAI logs its whole config summary at INFO: quiet while it runs
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("monai.bundle")]
    loggers.append(logging.getLogger("monai.bundle"))
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # on the CPU, as medgen infer here: the comparison is of the two pipelines, not of two devices
            workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                                      meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                                      workflow_type=None, bundle_root=str(bundle), device="$torch.device('cpu')",
                                      dataset_json=str(data / "dataset.json"), output_dir=str(work / "bundle"))
            workflow.initialize()
            workflow.run()
            workflow.finalize()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    outputs = {}
    for o in plan.outputs:
        found = sorted((work / "bundle").rglob(f"*_{o['postfix']}.nii.gz"))
        if not found:
            raise MedgenError(f"the bundle wrote no '{o['postfix']}' output for case '{cid}'")
        if o["name"] not in ref_files:
            raise MedgenError(f"medgen infer wrote no '{o['name']}' output for case '{cid}' to compare with")
        a = nib.load(str(found[0]))
        b = nib.load(ref_files[o["name"]])
        if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=1e-4):
            raise MedgenError(f"the bundle's '{o['name']}' has shape {a.shape} and affine {a.affine.tolist()}, medgen "
                              f"infer's {b.shape} and {b.affine.tolist()}")
        x, y = np.asarray(a.dataobj, dtype=np.float64), np.asarray(b.dataobj, dtype=np.float64)
        diff = float(np.abs(x - y).max())
        scale = float(np.abs(y).max())
        outputs[o["name"]] = {"max_abs_difference": diff, "max_abs_value": scale,
                              "voxels_differing": int(np.count_nonzero(x != y))}
        if o["units"] == "label":
            if np.count_nonzero(x != y) > 1e-3 * x.size:
                raise MedgenError(f"the bundle's '{o['name']}' differs from medgen infer's in "
                                  f"{np.count_nonzero(x != y)} of {x.size} voxels")
        elif not diff <= 1e-4 * max(1.0, scale) + (1.0 if o["dtype"] in INT_RANGES else 0.0):
            raise MedgenError(f"the bundle's '{o['name']}' differs from medgen infer's: max abs difference "
                              f"{diff:.3g} (values up to {scale:.3g})")
    return {"case": cid, "split": split, "shape": list(shape), "outputs": outputs,
            "how": "the bundle (MONAI ConfigWorkflow) and medgen infer on this case, cropped to at most two windows "
                   "per axis; files compared voxel by voxel"}


def export_bundle(cls, cfg, stages, run_dir, out=None, overwrite: bool = False, checkpoint: str = "best",
                  verify: bool = True) -> dict:
    """Write the MONAI bundle of a trained run into `out` (default `<run>/export/bundle`), verified against
    `medgen infer` unless `verify` is False; all or nothing. An existing bundle is replaced only with `overwrite`
    (and only when it is a medgen bundle). Returns {"bundle": path, "verification": record}."""
    from medgen.config import to_dict

    try:
        plan = bundle_plan(stages)
    except MedgenError as exc:
        raise MedgenError(f"{run_dir}: {exc}") from None
    out = Path(out) if out else Path(run_dir) / "export" / "bundle"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise MedgenError(f"{out} already exists; pass --overwrite to replace it, or --out to export elsewhere")
        if not _is_medgen_bundle(out):
            raise MedgenError(f"{out} is not a bundle medgen exported (no configs/metadata.json with a 'medgen' "
                              "record); refusing to replace it: choose another --out")
    inference = inference_config(plan)
    meta = metadata(plan, cls, stages, run_dir, checkpoint)
    work = Path(tempfile.mkdtemp(prefix="medgen-bundle-check-"))
    try:
        with staged_folder(out.parent / f".{out.name}.new") as tmp:
            (tmp / "configs").mkdir()
            (tmp / "models").mkdir()
            (tmp / "docs").mkdir()
            (tmp / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
            (tmp / "configs" / "medgen_config.json").write_text(json.dumps(to_dict(cfg), indent=1, default=str))
            (tmp / "configs" / "logging.conf").write_text(LOGGING_CONF)
            (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
            _write_models(plan, stages, run_dir, tmp / "models", meta, inference)
            if verify:
                meta["medgen"]["verification"] = verify_bundle(tmp, plan, stages, run_dir, checkpoint, work)
            else:
                meta["medgen"]["verification"] = {"skipped": "exported with --no-verify"}
            (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
            (tmp / "docs" / "README.md").write_text(readme(plan, meta))
        staged = out.parent / f".{out.name}.new"
        try:
            if out.exists():
                shutil.rmtree(out)
            staged.rename(out)
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise MedgenError(f"cannot move the bundle into {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"bundle": out, "verification": meta["medgen"]["verification"], "notes": plan.notes}


def _is_medgen_bundle(path: Path) -> bool:
    try:
        return "medgen" in json.loads((path / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
