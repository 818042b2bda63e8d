"""A synthetic gene-expression matrix driven by a few latent programmes, with labels tied to them.

Why: the Tybalt VAE pipeline must show that its latent space recovers known biology; here the biology is
known by construction (the programme activities and the sparse gene loadings are returned), so a test can
check that latent features separate the labels and that high-weight genes are the programme's genes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medgen.errors import MedgenError

GROUP_LEVELS = ("subtype_a", "subtype_b", "subtype_c")
# Mean activities of programmes 0 and 1 per group: three well separated clusters in that plane.
_GROUP_MEANS = np.array([[2.0, 0.0], [-1.0, 1.8], [-1.0, -1.8]])


def _names(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def make_expression(
    seed: int,
    n_samples: int = 500,
    n_genes: int = 1000,
    n_programs: int = 5,
    genes_per_program: int | None = None,
    log: bool = True,
) -> dict[str, pd.DataFrame]:
    """Samples x genes expression with latent programmes.

    Model: program activities A (samples x programmes); programme 0 and 1 place each sample in one of three
    ``group`` clusters, programme 2 is bimodal by ``sex`` (like the sex-chromosome genes), the others are
    continuous N(0, 1) nuisance programmes (e.g. proliferation). Each programme loads on a sparse gene set
    (``genes_per_program``, default 3 % of the genes, at least 5), mostly positively. Log2 expression is
    ``baseline_g + A @ loadings + noise``; counts are Poisson draws at that rate times a per-sample library
    size, returned as log2(1 + counts) (``log=True``) or raw counts.

    Returns DataFrames: ``matrix`` (samples x genes), ``labels`` (``group``, ``sex``: categorical),
    ``programs`` (samples x programmes, the true activities) and ``loadings`` (programmes x genes).
    """
    if int(seed) != seed or seed < 0:
        raise MedgenError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if n_programs < 3:
        raise MedgenError(f"n_programs must be at least 3 (group uses 0-1, sex uses 2), got {n_programs}")
    if n_samples < 2 or n_genes < n_programs:
        raise MedgenError(f"need n_samples >= 2 and n_genes >= n_programs, got {n_samples}, {n_genes}")
    rng = np.random.default_rng([int(seed), 21])
    k = int(genes_per_program or max(5, round(0.03 * n_genes)))
    k = min(k, n_genes)

    group = rng.integers(0, len(GROUP_LEVELS), n_samples)
    sex = rng.integers(0, 2, n_samples)  # 0 female, 1 male
    act = rng.normal(0.0, 1.0, (n_samples, n_programs))
    act[:, :2] = _GROUP_MEANS[group] + rng.normal(0.0, 0.6, (n_samples, 2))
    act[:, 2] = np.where(sex == 1, 2.0, -2.0) + rng.normal(0.0, 0.5, n_samples)

    loadings = np.zeros((n_programs, n_genes))
    for p in range(n_programs):
        genes = rng.choice(n_genes, size=k, replace=False)
        sign = np.where(rng.random(k) < 0.8, 1.0, -1.0)
        loadings[p, genes] = sign * rng.lognormal(np.log(0.6), 0.35, k)

    baseline = rng.normal(5.0, 1.5, n_genes)
    noise_sd = rng.uniform(0.2, 0.6, n_genes)
    log2_rate = baseline + act @ loadings + rng.normal(0.0, 1.0, (n_samples, n_genes)) * noise_sd
    library = rng.lognormal(0.0, 0.2, (n_samples, 1))
    counts = rng.poisson(np.exp2(np.clip(log2_rate, -10.0, 20.0)) * library)
    values = np.log2(1.0 + counts).astype(np.float32) if log else counts

    samples = _names("SAMPLE", n_samples)
    gene_names = _names("GENE", n_genes)
    programs = [f"program{p}" for p in range(n_programs)]
    labels = pd.DataFrame(
        {
            "group": pd.Categorical([GROUP_LEVELS[g] for g in group], categories=list(GROUP_LEVELS)),
            "sex": pd.Categorical(np.where(sex == 1, "male", "female"), categories=["female", "male"]),
        },
        index=pd.Index(samples, name="sample"),
    )
    return {
        "matrix": pd.DataFrame(values, index=pd.Index(samples, name="sample"), columns=gene_names),
        "labels": labels,
        "programs": pd.DataFrame(act.astype(np.float32), index=labels.index, columns=programs),
        "loadings": pd.DataFrame(loadings.astype(np.float32), index=pd.Index(programs, name="program"),
                                 columns=gene_names),
    }
