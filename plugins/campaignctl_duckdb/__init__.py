"""Built-in campaignctl plugin: duckdb."""
