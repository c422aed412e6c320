"""Fetch the weights of the config's models into the local Hugging Face cache: ``make weights``.

Run it on a node with internet (a login node); the workflow's jobs then load the weights offline.
``python scripts/weights.py [--configfile FILE ...] [--config KEY=VALUE ...] [--dry-run]``
(see :mod:`brainalign.models.weights`).
"""

import os
import sys

# Downloads are this command's purpose: huggingface_hub reads HF_HUB_OFFLINE when it is first imported,
# and brainalign.models.features defaults it to 1, so it is forced off before anything imports either.
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["TRANSFORMERS_OFFLINE"] = "0"

from brainalign.models.weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
