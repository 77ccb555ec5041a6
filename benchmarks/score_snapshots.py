"""Score checkpoints as the evaluate stage does: mean over 8 sampling draws of 297 samples, 1 and 2 steps.

    cd <a pipeline folder>    # its params.yaml, data/, prepared/ and the judge (models/classifier/classifier.pt)
    python <repo>/benchmarks/score_snapshots.py models/distill/snapshots/ckpt-1400.pt ...

Prints one line per checkpoint: {steps: [FD mean, FD sd over draws, confident share]}.
"""
import json
import sys

from noctcm.config import load_config
from noctcm.generate import evaluate_checkpoint
from noctcm.pipeline.evaluation import mean_over_draws


def score(checkpoint, cfg, draws: int = 8) -> dict:
    r = mean_over_draws([evaluate_checkpoint(checkpoint, num_samples=int(cfg.evaluation.num_samples), num_steps=[1, 2],
                                             metrics=["fid"], config=cfg, seed=int(cfg.sampling.seed) + d, real=False, device="cpu", progress=False)
                         for d in range(draws)])
    return {k: [round(v["fid"], 2), round(v["fid_sd"], 2), round(v["classifier_confident_frac"], 4)]
            for k, v in r.items() if isinstance(v, dict) and "fid" in v}


if __name__ == "__main__":
    import torch
    torch.set_num_threads(1)
    cfg = load_config("params.yaml")
    for ck in sys.argv[1:]:
        print(ck, json.dumps(score(ck, cfg)), flush=True)
