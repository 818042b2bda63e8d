"""The image history CycleGAN's discriminators learn from (Zhu et al. 2017, sec. 4, after Shrivastava et al.,
"Learning from simulated and unsupervised images through adversarial training", CVPR 2017): a buffer of the
last `size` generated images; each new image is, with probability 1/2 once the buffer is full, swapped for a
random stored one, so a discriminator also sees what the generator made earlier and the two oscillate less.

Why its own generator: the draws must survive `--resume` exactly without shifting anyone else's random
stream; its state and the stored images go into the checkpoint (`state_dict`), the images on the CPU, the
generator always on the CPU (`torch.Generator` states are CPU byte tensors).
"""

from __future__ import annotations

import torch


class HistoryPool:
    def __init__(self, size: int = 50, seed: int = 0):
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, batch: torch.Tensor) -> torch.Tensor:
        """The images to show the discriminator for this generated `batch` (B, C, *spatial), detached."""
        if self.size <= 0:
            return batch.detach()
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:  # filling up: store it and show it
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) < 0.5:  # show an older one, keep the new one
                j = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[j].clone())
                self.images[j] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": [im.detach().cpu() for im in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.images = [torch.as_tensor(im).to(device) if device is not None else torch.as_tensor(im)
                       for im in state.get("images", [])]
        if state.get("generator") is not None:
            self.generator.set_state(torch.as_tensor(state["generator"]).detach().to("cpu", torch.uint8))
