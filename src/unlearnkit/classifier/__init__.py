"""The classifier track: small image/signal classifiers, where retraining without the forget set is affordable.

Because a retrained model costs seconds, forgetting is measured against the exact gold standard, as distributions
over many retrained and many unlearned models (research/metrics.md §4, issue #18). The modules, each with one job:

``options.py``   typed options (pydantic) and their one-line errors
``data.py``      tasks (digits, mnist1d, the user's .npz arrays, torchvision datasets) with a fixed train / test /
                 held-out split, and forget sets (random k %, one class, one sub-class)
``models.py``    an MLP, a small CNN and a small ResNet in plain torch.nn, each with ``features`` (penultimate) and
                 ``head``
``ensemble.py``  N members trained as one batched model (torch.func ``stack_module_state`` + ``functional_call`` +
                 ``vmap``): per-member seed, initialisation and data order; cached per member in safetensors
``steps.py``     the SGD engine (optionally under a hard mask) and the plans of fine-tune, GA, random labels, NegGrad+
``unlearn.py``   ``unlearn(original, task, forget, method)``: every method on every member at once (retrain, the above,
                 ``sparse.py``: l1-sparse and prune-then-unlearn, ``salun.py``: SalUn, ``scrub.py``: SCRUB,
                 ``boundary.py``: boundary shrink)
"""
