import torch

# The models here are tiny: one intra-op thread is much faster than several contending for two shared cores.
torch.set_num_threads(1)
