"""The middle floor: networks, alignment heads, image features, checkpoint loaders, the LEA pipeline.

One network per file (`fmri_autoencoder.py`, `vqgan.py`, `maskgit.py`, `discriminator.py`), each
with its dataclass config. Importing the package registers those configs with `utils.config`, so
training-stage YAML files can be validated.
"""
from models import fmri_autoencoder, maskgit, vqgan  # noqa: F401  (registers the Model schemas)
