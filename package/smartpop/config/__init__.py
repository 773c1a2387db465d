"""Configuration: schema (pure validation), store (config.json I/O), migrations, wizard."""
