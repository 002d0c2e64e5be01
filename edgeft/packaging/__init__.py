"""Device packages: what one device profile needs to train and deploy, and nothing else."""
