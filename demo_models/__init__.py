"""The bundled demo models, shipped as package data so that an installed rmt-tui (a wheel, pipx,
uv tool) opens them as a checkout does: five MNIST MLPs, the MNIST test split and the tiny Llama
folder. See README.md beside this file; the training scripts here are not imported by rmt-tui."""
