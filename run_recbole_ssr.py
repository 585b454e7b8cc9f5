#!/usr/bin/env python
"""The one entry point of recbole-ssr.

    python run_recbole_ssr.py                                   # default model on the embedded ml-100k
    python run_recbole_ssr.py --model=SSR --dataset=baby        # one model (data in dataset/baby/)
    python run_recbole_ssr.py --model=SSR,FREEDOM,LightGCN --dataset=tiktok --seeds=3 --results=bench.json
    python run_recbole_ssr.py --model=SSR --dataset=tiktok --tune=properties/search/SSR.yaml --num_samples=16

Any other ``--key=value`` overrides a configuration key (e.g. ``--learning_rate=1e-4 --epochs=5``).
"""

import sys

from recbole_ssr.cli import main

if __name__ == "__main__":
    sys.exit(main())
