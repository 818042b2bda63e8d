"""Train, infer and evaluate `pet_lowdose` (3D cGAN low-dose -> full-dose PET, Wang et al. 2018).

    python pipelines/pet_lowdose.py --config configs/pet_lowdose.yaml data.dataset=/data/my_pet
    python pipelines/pet_lowdose.py --config configs/pet_lowdose_smoke.yaml          # tiny phantom run
    python pipelines/pet_lowdose.py --simulate /data/subj01/pet.nii.gz --simulate-out /data/sim25 \
        --fraction 0.25                                  # full-dose only: build a simulated paired dataset

No logic here: medgen.engine.api trains every stage, infers the test split and evaluates it.
"""

from __future__ import annotations

import argparse
import sys

from medgen.cli import parse_with_overrides


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/pet_lowdose.yaml")
    ap.add_argument("overrides", nargs="*", help="a.b=value config overrides")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--simulate", nargs="*", default=None, metavar="FULL_DOSE_NIFTI",
                    help="only build a simulated low/full-dose dataset from these full-dose images, then stop")
    ap.add_argument("--simulate-out", default="pet_lowdose_simulated")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = parse_with_overrides(ap, argv)
    if args.simulate is not None:
        from medgen.pipelines.pet_lowdose_data import simulate_paired_dataset

        print(simulate_paired_dataset(args.simulate, args.simulate_out, fraction=args.fraction, seed=args.seed))
        return 0
    from medgen.engine import api

    summary = api.train("pet_lowdose", args.config, args.overrides, resume=args.resume)
    result = api.infer(summary["run_dir"], split="test")
    print(result)
    _, _, stages, _ = api.load_trained(summary["run_dir"])
    report = api.evaluate(result["out"], stages[0].dataset_path(), overwrite=args.resume)
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
