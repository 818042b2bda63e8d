"""Baselines the methods are compared against: simple predictors fitted on the training (or validation)
cases, scored by each pipeline's own metrics.

- `denoise`: Gaussian smoothing and non-local means (low-dose PET);
- `intensity`: histogram matching and polynomial intensity regression (MR contrast synthesis);
- `ct`: intensity-to-HU regression and bulk density (MR to CT);
- `expression`: PCA and the training mean (expression latent spaces and reconstruction).
"""
