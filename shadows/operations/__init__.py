"""Operating a shadow: strikes, snapshots, the registry, dead letters, metrics and health."""
