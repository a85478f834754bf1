"""Reports whether the profiler tests ran: a visible skip (with the reason) on a core
install, a failure under LLMSIM_REQUIRE_EXTRAS=1 when PyTorch is missing."""


def test_profiler_extra_installed(torch_required) -> None:
    import torch

    assert torch.zeros(2).sum().item() == 0.0
