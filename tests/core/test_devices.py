"""The one device catalogue: training clusters and serving GPUs read the same figures."""
import pytest
from hydra.utils import instantiate

from llmos_sim.hardware import CATALOGUE, device_spec, part
from llmos_sim.run import compose
from llmos_sim.serving.specs import GpuSpec, gpu_spec
from llmos_sim.types import GiB, DeviceSpec


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_training_and_serving_see_the_same_part(name):
    d, g = device_spec(name), gpu_spec(name)
    assert (d.name, d.flops, d.mem_bytes, d.mem_bw_bytes_s) == (g.name, g.flops, g.mem_bytes, g.mem_bw_bytes_s)
    assert g.device() == d and GpuSpec.of_device(d) == g  # a granted device is the same GPU


def test_memory_is_the_nominal_binary_capacity():
    assert part("H100").mem_bytes == part("A100").mem_bytes == 80 * GiB
    assert part("H200").mem_bytes == 141 * GiB and part("RTX4090").mem_bytes == 24 * GiB


def test_old_serving_names_are_aliases_and_unknown_names_are_named():
    assert gpu_spec("H100-SXM") == gpu_spec("H100") and device_spec("RTX-4090").name == "RTX4090"
    with pytest.raises(ValueError, match=r"gpu.name: unknown device 'B300'.*H100"):
        gpu_spec("B300")


def test_every_gpu_preset_names_a_catalogue_part_and_may_override_a_figure():
    for name in ("a100_80gb", "h100", "h200", "l40s", "rtx4090", "rtx_pro_6000"):
        g = instantiate(compose([f"gpu={name}"]).gpu)
        assert g == gpu_spec(g.name)
    assert instantiate(compose(["gpu=h100", "gpu.mem_bytes=81559"]).gpu).mem_bytes == 81559


def test_a_device_outside_the_catalogue_keeps_its_figures_and_has_no_links():
    g = GpuSpec.of_device(DeviceSpec("custom", 1e14, 10 * GiB, 1e12))
    assert (g.name, g.flops, g.mem_bytes, g.mem_bw_bytes_s, g.link_bw_bytes_s) == ("custom", 1e14, 10 * GiB, 1e12, 0.0)
