"""Built-in campaignctl plugin: spark."""
