"""Deployer: rollouts (canary, blue-green, shadow) and the serving gateway."""
