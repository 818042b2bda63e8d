"""medgen.data: datasets and the data layer shared by every pipeline.

Modules (import them directly; nothing heavy is imported here):
- `io`: load_image / load_header / load_bscan with DataError messages that name the file (NIfTI,
  MetaImage / NRRD, PNG / TIFF, and DICOM series through `dicom`).
- `writer`: write_prediction, THE one NIfTI writer (source affine, shape and header kept).
- `datalist`: dataset.json (MSD / nnU-Net style) loading, validation, building from folders.
- `presets`: modality intensity presets (pet, mr, ct, oct, label) with stored inverses, MONAI loading transforms.
- `patches`: aligned input/output patch sampling and a deterministic PatchDataset.
- `check`: check_dataset / `medgen check-data`.
- `make_dataset`: `medgen make-dataset SRC OUT`, with `layouts` (nnU-Net, BIDS, subject folders, patterns,
  DICOM, OCT), `keynames` (T1w -> t1 ...) and `splitting` (seeded, grouped, stratified split).
- `tabular`: expression matrices, feature selection, train-only min-max scaling.
- `phantoms`, `dose`: procedural demo datasets and PET dose simulation.
"""
