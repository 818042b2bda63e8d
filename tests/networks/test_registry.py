import torch

from medgen.registry import NETWORKS

EXPECTED = {
    "unet", "nie_fcn", "resnet_generator", "dcgan_generator", "dcgan_discriminator", "wgan_resnet_generator",
    "wgan_resnet_critic", "izi_encoder", "mlp_encoder", "mlp_decoder", "tybalt_vae", "adage_autoencoder", "patchgan",
    "nie_discriminator", "deepmedic", "domain_discriminator",
}


def test_every_network_is_registered_and_builds_by_name():
    assert EXPECTED <= set(NETWORKS.names())
    net = NETWORKS.build("unet_generator", spatial_dims=2, in_channels=1, out_channels=1, ngf=2, num_downs=2)
    assert net(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert NETWORKS.get("tybalt_vae").__name__ == "VAE"
