"""Built-in campaignctl plugin: postgres."""
