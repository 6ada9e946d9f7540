"""The check every batched classifier method passes: member i of the unlearned ensemble equals the method run on
member i alone (a plain nn.Module and loop), every member moved, and the original ensemble left untouched."""

import torch


def assert_each_member_is_its_own_run(original, unlearn_all, alone, label: str) -> None:
    """``unlearn_all()`` runs the batched method on ``original``; ``alone(model, seed)`` the same method on one member."""
    before = {k: v.clone() for k, v in original.params.items()}
    result = unlearn_all()
    for i, seed in enumerate(original.seeds):
        expected = alone(original.member(i), seed).state_dict()
        got = result.member(i).state_dict()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=2e-5, msg=f"{label} {name}")
        assert not torch.allclose(got["head.weight"], original.member(i).state_dict()["head.weight"])
    for k, v in original.params.items():
        assert torch.equal(v, before[k])  # the original is left as it is
