"""The harness, by stage: sweeps.py (what to run), measure/ (the gate, the stress battery, timers, the runner,
whole steps), scale/ (many GPUs, Slurm), report/ (pages, charts, --compare), machine/ (--doctor, --static); cli.py
reads the command line and hands each mode to its stage."""
import os

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout bench/ sits in
