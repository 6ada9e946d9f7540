"""Optimizers by name: the run config's ``train.optimizer: {name: ..., <params>}``.

One module per optimizer; its class subclasses :class:`torch.optim.Optimizer`, carries ``@register``, a ``name``, a
one-line ``summary`` (its update rule), a ``citation`` and a typed ``Params`` (:class:`~unlearnkit.optim.base.
OptimizerParams`). The registry imports every module of this package, so adding an optimizer is one new file.

Every optimizer takes the ``train:`` section's ``learning_rate`` (scheduled as usual) and ``weight_decay``; each
class docstring says in which form it applies the weight decay. The state lives in ``state_dict()``, which the
training loop checkpoints, so a resumed run equals an uninterrupted one.
"""
