"""Built-in campaignctl plugin: outbox."""
