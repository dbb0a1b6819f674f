"""Active-learning methods that add their own model or step to a round, on top of models and training.

`sraal`: State-Relabeling Adversarial Active Learning (Zhang et al. 2020), a selector network trained
each round (`train_sraal_round`); `bgadl`: Bayesian Generative Active Deep Learning (Tran et al. 2019),
a VAE-ACGAN that writes a labeled twin of each acquired image (`generate_bgadl_round`).
"""

from dal_dist.methods.bgadl import BGADLConfig, BGADLRoundResult, generate_bgadl_round, read_generated
from dal_dist.methods.sraal import SRAALConfig, SRAALModel, train_sraal_round, train_sraal_selector

__all__ = ["BGADLConfig", "BGADLRoundResult", "SRAALConfig", "SRAALModel", "generate_bgadl_round", "read_generated",
           "train_sraal_round", "train_sraal_selector"]
