import pytest
import torch

from medgen.registry import NETWORKS, Registry

EXPECTED = {
    "unet_generator", "nie_fcn", "resnet_generator", "dcgan_generator", "dcgan_discriminator", "wgan_resnet_generator",
    "wgan_resnet_critic", "izi_encoder", "mlp_encoder", "mlp_decoder", "tybalt_vae", "adage_autoencoder",
    "patch_discriminator", "nie_discriminator", "deepmedic", "domain_discriminator",
}


def test_every_network_is_registered_and_builds_by_name():
    assert EXPECTED <= set(NETWORKS.names())
    net = NETWORKS.build("unet_generator", spatial_dims=2, in_channels=1, out_channels=1, ngf=2, num_downs=2)
    assert net(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert NETWORKS.get("tybalt_vae").__name__ == "TybaltVAE"


def test_every_key_names_its_class():
    for name in NETWORKS.names():
        assert name.replace("_", "") == NETWORKS.get(name).__name__.lower(), name
    reg = Registry("thing", "medgen.networks")

    class SomeNet(torch.nn.Module):
        pass

    assert reg.register()(SomeNet) is SomeNet and "some_net" in reg._items
    with pytest.raises(ValueError, match="does not match its class name SomeNet"):
        reg.register("other")(SomeNet)
