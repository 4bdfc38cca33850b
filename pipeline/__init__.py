"""HPC container image factory: matrix.yaml and recipes in, tested images and SIFs out."""
